"""Pub/Sub reads and writes as ordinary Python transforms: what staging puts in place of Beam's native
`beam:transform:pubsub_read:v1` and `beam:transform:pubsub_write:v1` (engine/pubsub_staging.py), which
Dataflow executes itself and none of Beamport's engines can.

The read is Impulse | a splittable DoFn that pulls | a stateful DoFn that drops duplicates:
- each call of the pulling DoFn makes one synchronous Pull, emits what came and defers the rest of its
  (endless) restriction; the messages are acknowledged once the engine has committed the bundle (the bundle
  finalizer; on Flink, after the next checkpoint), and until then a thread of the DoFn's extends their ack
  deadlines, so Pub/Sub does not hand them out again meanwhile;
- a message's event time is its `timestamp_attribute` (milliseconds since the epoch, or RFC 3339), else its
  publish time; the watermark is the oldest event time of the messages just pulled (not past the wall
  clock), or the wall clock when a pull brings nothing: what was pulled but not acknowledged holds it back.
  Pub/Sub tells nothing of messages not yet pulled, so one older than the watermark by then is late data;
- duplicates (Pub/Sub delivers at least once; publishers retry) are dropped on `id_attribute`'s value, or the
  message id, remembered for DEDUP_S (Dataflow keeps ids for ten minutes too) in keyed state: the state lives
  in the engine, so it survives a restart from a checkpoint;
- a topic read pulls through a temporary subscription of its own, made when the DoFn starts (messages
  published before that are not seen) and deleted in its teardown (best effort: Beam may skip teardown, e.g.
  when a job is cancelled);
- the read's backlog (the subscription's unacknowledged messages and their bytes) is Beam's source backlog
  gauges, as ReadFromLocalLog's, asked of the emulator every BACKLOG_EVERY_S (`GET .../subscriptions/S:backlog`,
  Beamport's build of pstest): Google's Pub/Sub tells it only to Cloud Monitoring, so a read from it has none;
  with it the age of the subscription's oldest unacknowledged message, the source's lag gauge
  (protocol.SOURCE_LAG_GAUGE): a message is acknowledged once the engine has committed the bundle that read it;
- when the job is drained (Beamport's drain file, as for ReadFromLocalLog) the DoFn stops pulling, moves its
  watermark to the end of time, so every window fires, and ends.
The read emits what Beam's native source does: a message's data, or with `with_attributes` the serialized
google.pubsub.v1.PubsubMessage (Beam's own ParDos after it make a PubsubMessage of it).

The write publishes each element (a serialized PubsubMessage, as Beam's WriteToPubSub hands it over) in
batches per bundle, adding `id_attribute` (a unique id) and `timestamp_attribute` (the element's event time
in milliseconds) as Dataflow does.

`emulator_host`: the Pub/Sub endpoint (host:port, plain gRPC) the job was staged with, i.e. the server's
PUBSUB_EMULATOR_HOST: SDK harnesses that do not inherit serve's environment (Flink's) reach it all the same.
None: the harness's own PUBSUB_EMULATOR_HOST, else Google's Pub/Sub with default credentials.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
import urllib.request
import uuid
import zlib

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Duration, Timestamp

from beamport.io.local_log import BACKLOG_BYTES, BACKLOG_ELEMENTS, SOURCE_NAMESPACE, ManualWatermark, drain_requested
from beamport.protocol import SOURCE_LAG_GAUGE

log = logging.getLogger("beamport.io.pubsub")

MAX_MESSAGES = 1000  # per Pull
PULL_TIMEOUT_S = 10.0  # Pub/Sub may hold a Pull open while nothing is there; this long at most
POLL_S = 0.5  # how long to wait before pulling again after an empty Pull
ACK_DEADLINE_S = 60  # what the extending thread asks for, every EXTEND_EVERY_S, until the engine has committed
EXTEND_EVERY_S = 20.0
DEDUP_S = 600  # how long a message id is remembered
DEDUP_SHARDS = 16  # the keys of the dedup state: ids are spread over this many maps
PRUNE_EVERY = 1000  # ids added to a map between prunings of its old ids
PUBLISH_BATCH = 100
BACKLOG_EVERY_S = 1.0  # how often a read asks the emulator for its subscription's backlog
_END = 2**62  # the restriction's end: one position a Pull, never reached


def _emulator(emulator_host: str | None) -> str | None:
    """The Pub/Sub emulator's host:port: the job's, else the harness's; None for Google's Pub/Sub."""
    return emulator_host or os.environ.get("PUBSUB_EMULATOR_HOST") or None


def _clients(emulator_host: str | None):
    """Pub/Sub's GAPIC clients (synchronous Pull, Acknowledge, Publish), on the emulator when there is one."""
    import grpc
    from google.pubsub_v1 import PublisherClient, SubscriberClient
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    host = _emulator(emulator_host)
    if not host:
        return PublisherClient(), SubscriberClient()
    channel = grpc.insecure_channel(host)
    return (
        PublisherClient(transport=PublisherGrpcTransport(channel=channel)),
        SubscriberClient(transport=SubscriberGrpcTransport(channel=channel)),
    )


def event_time(message, timestamp_attribute: str) -> Timestamp:
    """The message's event time: its timestamp attribute (milliseconds since the epoch, or RFC 3339), else its
    publish time (as Beam's DirectRunner and Dataflow read it)."""
    value = message.attributes.get(timestamp_attribute) if timestamp_attribute else None
    if value:
        try:
            return Timestamp(micros=int(value) * 1000)
        except ValueError:
            return Timestamp.from_rfc3339(value)
    published = message.publish_time  # a datetime (proto-plus)
    return Timestamp(micros=int(published.timestamp() * 1_000_000))


class _PullTracker(OffsetRestrictionTracker):
    """Checkpoints (the rest of the restriction deferred), but no splits: a second reader of the same
    subscription would only pull the same messages twice as often."""

    def try_split(self, fraction_of_remainder):
        return super().try_split(fraction_of_remainder) if fraction_of_remainder == 0 else None


class _Pulls(RestrictionProvider):
    """The restriction counts Pulls: endless, one reader per subscription."""

    def initial_restriction(self, element):
        return OffsetRange(0, _END)

    def create_tracker(self, restriction):
        return _PullTracker(restriction)

    def restriction_size(self, element, restriction):
        return 1

    def split(self, element, restriction):
        yield restriction

    def truncate(self, element, restriction):
        return None  # a drained job pulls nothing more


class PullMessages(beam.DoFn):
    """Impulse -> (dedup shard, (id, message data or serialized PubsubMessage)), timestamped: see the module's doc."""

    def __init__(
        self,
        topic: str,
        subscription: str,
        timestamp_attribute: str,
        id_attribute: str,
        with_attributes: bool,
        emulator_host: str | None,
    ):
        self.topic, self.subscription = topic, subscription
        self.timestamp_attribute, self.id_attribute = timestamp_attribute, id_attribute
        self.with_attributes, self.emulator_host = with_attributes, emulator_host

    def setup(self):
        _, self._subscriber = _clients(self.emulator_host)
        self._temporary = None
        if not self.subscription:  # a topic read: a subscription of its own
            project = self.topic.split("/")[1]
            self._temporary = f"projects/{project}/subscriptions/beamport_{uuid.uuid4().hex}"
            self._subscriber.create_subscription(name=self._temporary, topic=self.topic)
        self._pulled_from = self.subscription or self._temporary
        host = _emulator(self.emulator_host)  # Google's Pub/Sub has no backlog call: None
        self._backlog_url = f"http://{host}/v1/{self._pulled_from}:backlog" if host else None
        self._backlog_asked = 0.0
        # No proxy: the emulator is this host's (an SDK worker's environment may name a proxy for the internet).
        self._backlog_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._unacked = set()  # the ack ids pulled and not yet acknowledged
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._extender = threading.Thread(target=self._extend_deadlines, name="pubsub-ack-deadlines", daemon=True)
        self._extender.start()

    def teardown(self):
        self._stopping.set()
        if self._temporary:
            try:
                self._subscriber.delete_subscription(subscription=self._temporary)
            except Exception as exc:  # the job ends either way; say what is left behind
                log.warning("Could not delete the temporary subscription %s: %s", self._temporary, exc)

    def _extend_deadlines(self):
        while not self._stopping.wait(EXTEND_EVERY_S):
            with self._lock:
                unacked = list(self._unacked)
            if unacked:
                try:
                    self._subscriber.modify_ack_deadline(
                        subscription=self._pulled_from, ack_ids=unacked, ack_deadline_seconds=ACK_DEADLINE_S
                    )
                except Exception as exc:  # Pub/Sub then delivers them again: dedup drops the copies
                    log.warning("Could not extend the ack deadlines of %d messages: %s", len(unacked), exc)

    def _acknowledge(self, ack_ids: list[str]) -> None:
        """The bundle that emitted these messages is committed: they are the engine's now."""
        if not ack_ids:
            return
        self._subscriber.acknowledge(subscription=self._pulled_from, ack_ids=ack_ids)
        with self._lock:
            self._unacked.difference_update(ack_ids)

    def _report_backlog(self) -> None:
        """The subscription's backlog as the source's backlog gauges (see the module's doc), at most every
        BACKLOG_EVERY_S. Messages pulled and not yet acknowledged are in it, as in Cloud Monitoring's."""
        if self._backlog_url is None or time.monotonic() - self._backlog_asked < BACKLOG_EVERY_S:
            return
        self._backlog_asked = time.monotonic()
        try:
            with self._backlog_opener.open(self._backlog_url, timeout=2) as answer:
                backlog = json.load(answer)
        except (OSError, ValueError) as exc:  # another emulator than Beamport's has no such route: no figure
            log.debug("No backlog for %s: %s", self._pulled_from, exc)
            return
        Metrics.gauge(SOURCE_NAMESPACE, BACKLOG_BYTES).set(int(backlog.get("backlogBytes", 0)))
        Metrics.gauge(SOURCE_NAMESPACE, BACKLOG_ELEMENTS).set(int(backlog.get("numUndeliveredMessages", 0)))
        Metrics.gauge(SOURCE_NAMESPACE, SOURCE_LAG_GAUGE).set(int(backlog.get("oldestUnackedMessageAgeMs", 0)))

    def _pull(self):
        from google.api_core import exceptions

        try:
            return self._subscriber.pull(
                subscription=self._pulled_from, max_messages=MAX_MESSAGES, timeout=PULL_TIMEOUT_S
            ).received_messages
        except exceptions.DeadlineExceeded:
            return []

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element,
        # Before the restriction's parameters: Beam passes it by position, them by name.
        finalizer=beam.DoFn.BundleFinalizerParam,
        tracker=beam.DoFn.RestrictionParam(_Pulls()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermark()),
    ):
        if drain_requested():
            watermark.set_watermark(MAX_TIMESTAMP)  # every window downstream can fire
            tracker.try_claim(tracker.current_restriction().stop)  # claims the rest: the restriction is done
            return
        if not tracker.try_claim(tracker.current_restriction().start):
            return
        received = self._pull()
        self._report_backlog()
        now = Timestamp.now()
        oldest = now
        for item in received:
            message = item.message
            at = event_time(message, self.timestamp_attribute)
            oldest = min(oldest, at)
            key = (message.attributes.get(self.id_attribute) if self.id_attribute else None) or message.message_id
            payload = type(message).serialize(message) if self.with_attributes else message.data
            yield TimestampedValue((zlib.crc32(key.encode()) % DEDUP_SHARDS, (key, payload)), at)
        ack_ids = [item.ack_id for item in received]
        with self._lock:
            self._unacked.update(ack_ids)
        # Registered even with nothing to acknowledge: Prism asks every bundle of this DoFn's to finalize, and
        # one that registered nothing is no longer there to answer (an error in the SDK harness's log).
        finalizer.register(functools.partial(self._acknowledge, ack_ids))
        if oldest > watermark.current_watermark():
            watermark.set_watermark(oldest)
        tracker.defer_remainder(Duration(seconds=0 if received else POLL_S))


class DropDuplicates(beam.DoFn):
    """(shard, (id, payload)) -> payload, once per id within DEDUP_S.

    The ids seen are keyed state, a map per shard of ids to when they were seen, pruned as it goes: no timers,
    which would hold the watermark back (a processing-time timer holds it at its element's event time)."""

    SEEN = ReadModifyWriteStateSpec("seen", PickleCoder())

    def process(self, element, seen=beam.DoFn.StateParam(SEEN)):
        _, (message_id, payload) = element
        now = time.time()
        ids = seen.read() or {}
        if message_id in ids and now - ids[message_id] < DEDUP_S:
            return
        if len(ids) % PRUNE_EVERY == 0:
            ids = {i: at for i, at in ids.items() if now - at < DEDUP_S}
        ids[message_id] = now
        seen.write(ids)
        yield payload


class PullAndDropDuplicates(beam.PTransform):
    """Impulse, a PullMessages DoFn, and the dedup of what it pulled: a Pub/Sub read, however its DoFn finds
    its topic or subscription."""

    def __init__(self, pull: PullMessages):
        super().__init__()
        self.pull = pull

    def expand(self, pbegin):
        return (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "Pull" >> beam.ParDo(self.pull).with_output_types(tuple[int, tuple[str, bytes]])
            | "DropDuplicates" >> beam.ParDo(DropDuplicates()).with_output_types(bytes)
        )


class ReadPubSub(PullAndDropDuplicates):
    """Beam's native Pub/Sub read (PubSubReadPayload's fields), executable: see the module's doc."""

    def __init__(
        self,
        topic: str = "",
        subscription: str = "",
        timestamp_attribute: str = "",
        id_attribute: str = "",
        with_attributes: bool = False,
        emulator_host: str | None = None,
    ):
        if not (topic or subscription):
            raise ValueError("a Pub/Sub read names a topic or a subscription")
        super().__init__(
            PullMessages(topic, subscription, timestamp_attribute, id_attribute, with_attributes, emulator_host)
        )


class PublishMessages(beam.DoFn):
    """Serialized PubsubMessages -> published to `topic`, a batch at a time, all by the end of each bundle."""

    def __init__(self, topic: str, timestamp_attribute: str, id_attribute: str, emulator_host: str | None):
        self.topic, self.timestamp_attribute, self.id_attribute = topic, timestamp_attribute, id_attribute
        self.emulator_host = emulator_host

    def setup(self):
        self._publisher, _ = _clients(self.emulator_host)

    def start_bundle(self):
        self._batch = []

    def process(self, element: bytes, timestamp=beam.DoFn.TimestampParam):
        from google.pubsub_v1 import PubsubMessage

        message = PubsubMessage.deserialize(element)
        if self.id_attribute and self.id_attribute not in message.attributes:
            message.attributes[self.id_attribute] = uuid.uuid4().hex
        if self.timestamp_attribute and self.timestamp_attribute not in message.attributes:
            message.attributes[self.timestamp_attribute] = str(timestamp.micros // 1000)
        self._batch.append(message)
        if len(self._batch) >= PUBLISH_BATCH:
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        if self._batch:
            self._publisher.publish(topic=self.topic, messages=self._batch)
            self._batch = []


class WritePubSub(beam.PTransform):
    """Beam's native Pub/Sub write (PubSubWritePayload's fields), executable."""

    def __init__(
        self, topic: str, timestamp_attribute: str = "", id_attribute: str = "", emulator_host: str | None = None
    ):
        super().__init__()
        self.publish = PublishMessages(topic, timestamp_attribute, id_attribute, emulator_host)

    def expand(self, pcoll):
        return pcoll | "Publish" >> beam.ParDo(self.publish)
