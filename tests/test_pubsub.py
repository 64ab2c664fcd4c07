"""An unchanged streaming Pub/Sub pipeline (ReadFromPubSub -> FixedWindows -> CombinePerKey(sum) ->
WriteToPubSub, and WriteToBigQuery beside it), submitted by Beam's DataflowRunner, runs on Beamport against
`serve --emulators pubsub,bigquery`: staging puts Python transforms in place of Beam's native Pub/Sub read and
write (docs/google-services.md)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest
from conftest import Api, Server, required_path
from test_bigquery import bigquery_client
from test_console import browser  # noqa: F401  (the Chromium that test_console drives)
from test_emulators import need_emulator, read_env
from test_running_jobs import dataflow_flags, run, wait_state
from test_streaming import (
    DRAIN_S,
    PIPELINES,
    START_S,
    cancel_flink_jobs_of_server,
    checkpointed_since,
    flink_args,
    flink_endpoints,
    flink_jobs,
    sdk_workers_of,
    wait_for,
)
from test_streaming_observed import read_lag, source_backlog

from beamport import emulators

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("flink")]  # one Flink job at a time, as test_streaming
PROJECT = "pubsub-demo"
VARIABLES = ("PUBSUB_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST")


@pytest.fixture(scope="module", params=["prism", "flink"])
def pubsub_server(tmp_path_factory, request):
    """A server with one streaming engine and the Pub/Sub and BigQuery emulators; this process's
    PUBSUB_EMULATOR_HOST and BIGQUERY_EMULATOR_HOST name them (as a client's would)."""
    if request.param == "prism":
        engine_args: tuple[str, ...] = ("--prism", str(required_path("BEAMPORT_TEST_PRISM", "builds Prism")))
    else:
        flink = flink_endpoints()
        engine_args = flink_args(flink)
    need_emulator(emulators.PUBSUB)
    need_emulator(emulators.BIGQUERY)
    monkeypatch = pytest.MonkeyPatch()
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    root = tmp_path_factory.mktemp(f"pubsub-{request.param}")
    srv = Server(
        root / "data",
        extra_args=("--allow-path", str(root), "--workers", "2", *engine_args, "--emulators", "pubsub,bigquery"),
    ).start()
    srv.root = root
    srv.engine = request.param
    for variable in VARIABLES:
        monkeypatch.setenv(variable, read_env(srv.data_dir)[variable])
    yield srv
    srv.stop()
    monkeypatch.undo()
    if request.param == "flink":  # Flink jobs outlive the server: stop what the tests left running
        cancel_flink_jobs_of_server(flink, srv)


class Topics:
    """An input topic with the pipeline's subscription, and an output topic with the test's."""

    def __init__(self, name: str):
        from google.cloud import pubsub_v1

        self.publisher, self.subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        self.input = self.publisher.create_topic(name=f"projects/{PROJECT}/topics/{name}-in").name
        self.input_subscription = self.subscriber.create_subscription(
            name=f"projects/{PROJECT}/subscriptions/{name}-in", topic=self.input
        ).name
        self.output = self.publisher.create_topic(name=f"projects/{PROJECT}/topics/{name}-out").name
        self.output_subscription = self.subscriber.create_subscription(
            name=f"projects/{PROJECT}/subscriptions/{name}-out", topic=self.output
        ).name
        self.received: list[str] = []

    def publish(self, key: str, number: int, event_time_s: int, message_id: str) -> None:
        self.publisher.publish(
            self.input, f"{key},{number}".encode(), ts=str(event_time_s * 1000), id=message_id
        ).result(timeout=30)

    def pull_output(self) -> list[str]:
        """Everything published to the output topic so far (each output acknowledged once read)."""
        response = self.subscriber.pull(subscription=self.output_subscription, max_messages=100, timeout=30)
        if response.received_messages:
            self.received += [m.message.data.decode() for m in response.received_messages]
            self.subscriber.acknowledge(
                subscription=self.output_subscription, ack_ids=[m.ack_id for m in response.received_messages]
            )
        return sorted(self.received)

    def backlog(self) -> int:
        """Messages left on the input subscription (none once the job has acknowledged them all)."""
        response = self.subscriber.pull(subscription=self.input_subscription, max_messages=100, timeout=30)
        return len(response.received_messages)


class Publishing:
    """While in its `with`, a thread publishes `key,1` at `event_time_s` to the topics' input, every 50 ms."""

    def __init__(self, topics: Topics, key: str, event_time_s: int):
        self.topics, self.key, self.event_time_s = topics, key, event_time_s
        self.sent = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._publish, daemon=True)

    def _publish(self) -> None:
        while not self.stopping.wait(0.05):
            self.topics.publish(self.key, 1, self.event_time_s, f"{self.key}{self.sent}")
            self.sent += 1

    def __enter__(self) -> Publishing:
        self.started = time.time()
        self.thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)


def submit(server: Server, topics: Topics, name: str, *extra: str, check: bool = True):
    workdir = server.root / name
    workdir.mkdir()
    return run(
        [
            str(PIPELINES / "pubsub_sums.py"),
            f"--input_subscription={topics.input_subscription}",
            f"--output_topic={topics.output}",
            *dataflow_flags(server, PROJECT, workdir, name),
            "--streaming",
            *extra,
        ],
        check=check,
    )


def publish_sums_input(topics: Topics, id_prefix: str) -> tuple[int, int]:
    """Two closed windows' messages (a minute each, an hour ago), one of them published twice (a publisher's
    retry: counted once), and one for a window an hour ahead, open until the drain; answers both minutes."""
    minute = int(time.time()) // 60 * 60 - 3600  # an hour ago: its windows close as soon as all is read
    later = minute + 7200  # an hour ahead: its window stays open until the drain
    topics.publish("a", 1, minute + 1, f"{id_prefix}1")
    topics.publish("a", 2, minute + 2, f"{id_prefix}2")
    topics.publish("b", 5, minute + 3, f"{id_prefix}3")
    topics.publish("a", 2, minute + 2, f"{id_prefix}2")  # published twice (a publisher's retry): counted once
    topics.publish("a", 10, minute + 61, f"{id_prefix}4")
    topics.publish("c", 7, later, f"{id_prefix}5")
    return minute, later


def test_windowed_sums_from_pubsub_to_pubsub_with_a_duplicate_then_drained(pubsub_server, browser):  # noqa: F811
    topics = Topics(f"sums-{pubsub_server.root.name}")
    minute, later = publish_sums_input(topics, "m")

    done = submit(pubsub_server, topics, "sums")  # streaming: on the server's streaming engine
    job_id = done.stdout.split("JOB_ID ", 1)[1].split()[0]
    api = Api(pubsub_server.url, PROJECT)
    closed = sorted([f"a,3,{minute}", f"a,10,{minute + 60}", f"b,5,{minute}"])
    wait_for("the closed windows' sums", lambda: len(topics.pull_output()) >= len(closed), START_S, job=(api, job_id))
    assert topics.pull_output() == closed
    assert topics.backlog() == 0, "every message read was acknowledged"
    # The read's backlog, as the emulator counts its subscription (test_emulators.py checks the counting): none
    # left once all is read and acknowledged, a figure of the native read's step.
    no_backlog = {("Read/Read", "BacklogBytes"): 0, ("Read/Read", "BacklogElements"): 0}
    wait_for_quietly(lambda: source_backlog(api, job_id) == no_backlog, 60)
    assert source_backlog(api, job_id) == no_backlog
    # (Its output can come before the Flink engine has seen every task running, which RUNNING waits for.)
    wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=START_S)

    # The read's stage's system lag: how long the subscription's oldest unacknowledged message has waited, as
    # Dataflow's for a Pub/Sub read. Above 0 while messages keep coming (each waits until the engine has committed
    # the bundle that read it); 0 once they stop and all are acknowledged. The console charts it.
    page = browser.new_page()
    try:
        with Publishing(topics, "d", later + 5) as publishing:
            stage, lag = wait_for(
                "the read's lag above 0", lambda: (found := read_lag(api, job_id)) and found[1] > 0 and found, 90
            )
            assert lag <= time.time() - publishing.started
            page.goto(f"{pubsub_server.url}/#/jobs/{PROJECT}/us-central1/{job_id}")
            chart = page.locator(f'#signals-table tr[data-stage="{stage}"] td.SystemLag')
            chart.locator("svg path").wait_for(timeout=60_000)
        wait_for("the read's lag back at 0", lambda: read_lag(api, job_id) == (stage, 0), 90, job=(api, job_id))
        wait_for("the chart at 0", lambda: chart.inner_text().strip() == "0.0s", 60)
    finally:
        page.close()
    assert topics.backlog() == 0

    assert api.update(job_id, {"requestedState": "JOB_STATE_DRAINING"}).status_code == 200  # as Beam asks
    wait_state(api, job_id, {"JOB_STATE_DRAINED"}, timeout=START_S)
    # The drain fired the window still open; nothing was counted twice.
    wait_for("the open window's sum", lambda: len(topics.pull_output()) > len(closed), 60, job=(api, job_id))
    assert topics.pull_output() == sorted([*closed, f"c,7,{later}", f"d,{publishing.sent},{later}"])
    errors = [m["messageText"] for m in api.messages(job_id).json().get("jobMessages", [])
              if m["messageImportance"] == "JOB_MESSAGE_ERROR"]  # fmt: skip
    assert not errors, "a drained job's messages hold no error"


def test_a_reshuffle_of_windowed_values_between_the_read_and_the_sum(pubsub_server):
    """beam.Reshuffle and ReshufflePerKey after FixedWindows (WriteToBigQuery's CommitInsertIds has one): Beam
    (2.64 on) carries each element's window in its value with a Python-only window coder, which Prism fails to
    decode and Flink casts wrong; staging makes those values opaque to the engine (docs/engines.md). Each window's
    sum comes out once, in its own window."""
    topics = Topics(f"reshuffled-{pubsub_server.root.name}")
    minute = int(time.time()) // 60 * 60 - 3600  # an hour ago: its windows close as soon as all is read
    topics.publish("a", 1, minute + 1, "r1")
    topics.publish("a", 2, minute + 2, "r2")
    topics.publish("b", 5, minute + 3, "r3")
    topics.publish("a", 10, minute + 61, "r4")
    topics.publish("b", 4, minute + 119, "r5")

    done = submit(pubsub_server, topics, "reshuffled", "--reshuffle")
    job_id = done.stdout.split("JOB_ID ", 1)[1].split()[0]
    api = Api(pubsub_server.url, PROJECT)
    closed = sorted([f"a,3,{minute}", f"a,10,{minute + 60}", f"b,5,{minute}", f"b,4,{minute + 60}"])

    def summed_or_ended() -> bool:
        if len(topics.pull_output()) >= len(closed):
            return True
        return api.get(job_id).json().get("currentState") in {"JOB_STATE_FAILED", "JOB_STATE_DONE"}

    wait_for("the closed windows' sums", summed_or_ended, START_S)
    # Still running (a failed job's messages say why), every sum once.
    # (Its output can come before the Flink engine has seen every task running, which RUNNING waits for.)
    wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=START_S)
    assert topics.pull_output() == closed
    assert api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    wait_state(api, job_id, {"JOB_STATE_CANCELLED"}, timeout=START_S)


def test_a_pubsub_read_is_refused_on_the_embedded_engine(pubsub_server):
    """FnApiRunner would end DONE having read nothing: the job fails, saying where it can run."""
    topics = Topics(f"embedded-{pubsub_server.root.name}")
    done = submit(pubsub_server, topics, "embedded", "--labels=beamport_engine=embedded")
    job_id = done.stdout.split("JOB_ID ", 1)[1].split()[0]
    api = Api(pubsub_server.url, PROJECT)
    wait_state(api, job_id, {"JOB_STATE_FAILED"}, timeout=120)
    texts = [m["messageText"] for m in api.messages(job_id).json().get("jobMessages", [])]
    assert any("a Pub/Sub read never ends" in t and "Prism" in t for t in texts), texts


def test_a_topic_read_with_attributes_through_a_subscription_of_its_own(pubsub_server):
    """ReadFromPubSub(topic=..., with_attributes=True): the reader makes a temporary subscription when it starts
    (messages published before are not read) and hands on whole PubsubMessages."""
    topics = Topics(f"echo-{pubsub_server.root.name}")
    workdir = pubsub_server.root / "echo"
    workdir.mkdir()
    done = run(
        [
            str(PIPELINES / "pubsub_sums.py"),
            f"--input_topic={topics.input}",
            f"--output_topic={topics.output}",
            *dataflow_flags(pubsub_server, PROJECT, workdir, "echo"),
            "--streaming",
        ]
    )
    job_id = done.stdout.split("JOB_ID ", 1)[1].split()[0]
    api = Api(pubsub_server.url, PROJECT)

    def temporary_subscriptions() -> list[str]:
        names = topics.publisher.list_topic_subscriptions(topic=topics.input)
        return [name for name in names if name != topics.input_subscription]

    wait_for("the reader's own subscription", temporary_subscriptions, START_S, job=(api, job_id))
    topics.publisher.publish(topics.input, b"hello", k="1").result(timeout=30)
    topics.publisher.publish(topics.input, b"world", k="2").result(timeout=30)
    received = []

    def echoed() -> bool:
        response = topics.subscriber.pull(subscription=topics.output_subscription, max_messages=10, timeout=30)
        received.extend((m.message.data, dict(m.message.attributes)) for m in response.received_messages)
        return len(received) >= 2

    wait_for("the echoes", echoed, START_S, job=(api, job_id))
    assert sorted(received) == [(b"HELLO", {"k": "1", "echo": "yes"}), (b"WORLD", {"k": "2", "echo": "yes"})]
    assert api.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
    wait_state(api, job_id, {"JOB_STATE_CANCELLED"}, timeout=START_S)


def rows_of(project: str, dataset: str) -> list[str]:
    """The sums in the pipeline's BigQuery table, as the output topic has them: `key,sum,window start` (none
    before WriteToBigQuery has created the table)."""
    from google.api_core.exceptions import NotFound

    try:
        rows = list(bigquery_client(project).list_rows(f"{project}.{dataset.replace('-', '_')}.sums"))
    except NotFound:
        return []
    return sorted(f"{r['key']},{r['sum']},{r['window_start']}" for r in rows)


def submit_to_bigquery(server: Server, topics: Topics, name: str) -> str:
    """The sums job with `--bigquery`, into a dataset of its own (the table is WriteToBigQuery's to create)."""
    bigquery_client(PROJECT).create_dataset(name.replace("-", "_"))
    done = submit(server, topics, name, f"--bigquery={PROJECT}:{name.replace('-', '_')}.sums")
    return done.stdout.split("JOB_ID ", 1)[1].split()[0]


def test_windowed_sums_to_pubsub_and_bigquery_with_a_duplicate_then_drained(pubsub_server):
    """WriteToBigQuery's streaming inserts beside WriteToPubSub: each window's sums reach both, once, and a drain
    flushes the open window into both (on Flink, WriteToBigQuery's insert comes stages after the window fires,
    through a reshuffle: the drain must wait for it, not only for the watermarks)."""
    name = f"tobq-{pubsub_server.engine}"
    topics = Topics(name)
    minute, later = publish_sums_input(topics, "q")

    job_id = submit_to_bigquery(pubsub_server, topics, name)
    api = Api(pubsub_server.url, PROJECT)
    closed = sorted([f"a,3,{minute}", f"a,10,{minute + 60}", f"b,5,{minute}"])
    wait_for(
        "the closed windows' sums in the topic",
        lambda: len(topics.pull_output()) >= len(closed),
        START_S,
        job=(api, job_id),
    )
    wait_for(
        "the closed windows' sums in BigQuery",
        lambda: len(rows_of(PROJECT, name)) >= len(closed),
        START_S,
        job=(api, job_id),
    )
    assert topics.pull_output() == closed
    assert rows_of(PROJECT, name) == closed
    wait_state(api, job_id, {"JOB_STATE_RUNNING"}, timeout=START_S)  # (output can come first: see above)

    assert api.update(job_id, {"requestedState": "JOB_STATE_DRAINING"}).status_code == 200
    wait_state(api, job_id, {"JOB_STATE_DRAINED"}, timeout=DRAIN_S)
    # Drained: the open window fired into both sinks before the job ended.
    everything = sorted([*closed, f"c,7,{later}"])
    wait_for(
        "the open window's sum in the topic", lambda: len(topics.pull_output()) > len(closed), 60, job=(api, job_id)
    )
    assert topics.pull_output() == everything
    assert rows_of(PROJECT, name) == everything


def wait_for_quietly(predicate, timeout: float) -> None:
    """Wait until the predicate holds or the time is up: the assertion after it says what came instead."""
    try:
        wait_for("", predicate, timeout)
    except AssertionError:
        pass


def flink_exceptions(flink: dict, jid: str) -> list[dict]:
    """The failures of a Flink job's tasks so far (each restart of Flink's follows one)."""
    url = f"http://{flink['BEAMPORT_FLINK_MASTER']}/jobs/{jid}/exceptions"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer).get("exceptionHistory", {}).get("entries", [])


@pytest.mark.parametrize("pubsub_server", ["flink"], indirect=True)  # Prism keeps no state to restart from
def test_a_killed_sdk_worker_loses_and_doubles_nothing_on_flink(pubsub_server):
    """kill -9 of the job's SDK worker: Flink restarts the job's tasks from its last checkpoint; what Pub/Sub
    delivered after it is delivered again (acknowledgements wait for checkpoints) and the restored dedup state
    drops ids seen before. A window inserted into BigQuery before that checkpoint is not inserted again (one
    inserted after it would fire again, and the emulator would drop its repeated insert ids, as BigQuery does:
    docs/google-services.md)."""
    flink = flink_endpoints()
    name = "killed-worker"
    topics = Topics(name)
    minute = int(time.time()) // 60 * 60 - 3600  # an hour ago: its windows close as soon as all is read
    later = minute + 7200  # an hour ahead: its window stays open until the drain
    topics.publish("a", 1, minute + 1, "k1")
    topics.publish("a", 2, minute + 2, "k2")
    topics.publish("b", 5, minute + 3, "k3")
    topics.publish("c", 7, later, "k4")  # read before the kill: its id is in the checkpoint's dedup state

    job_id = submit_to_bigquery(pubsub_server, topics, name)
    api = Api(pubsub_server.url, PROJECT)
    closed = sorted([f"a,3,{minute}", f"b,5,{minute}"])
    wait_for(
        "the closed window's sums in the topic",
        lambda: len(topics.pull_output()) >= len(closed),
        START_S,
        job=(api, job_id),
    )
    wait_for(
        "the closed window's sums in BigQuery",
        lambda: len(rows_of(PROJECT, name)) >= len(closed),
        START_S,
        job=(api, job_id),
    )
    written_ms = time.time() * 1000
    running = lambda: [j["jid"] for j in flink_jobs(flink) if j["name"] == job_id and j["state"] == "RUNNING"]  # noqa: E731
    (jid,) = wait_for("the Flink job running", running)
    wait_for("a checkpoint after the window's output", lambda: checkpointed_since(flink, jid, written_ms))
    failures_before = len(flink_exceptions(flink, jid))

    workers = wait_for("the job's SDK worker", lambda: sdk_workers_of(flink, job_id))
    workers[0].kill()  # SIGKILL, of one worker: not the pool, not another job's
    wait_for("Flink's restart of the job's tasks", lambda: len(flink_exceptions(flink, jid)) > failures_before, 120)
    # The next window's messages, stamped now (a little ahead of the watermark, which follows the wall clock):
    # their sums come out once the wall clock passes the window's end, which shows the restored job reads on.
    now = int(time.time()) + 2
    current = now // 60 * 60
    topics.publish("c", 7, later, "k4")  # again, after the restore: the restored dedup state drops it
    topics.publish("d", 4, now, "k5")
    topics.publish("d", 4, now, "k5")  # a duplicate, after the restore
    topics.publish("e", 6, now, "k6")
    expected_now = sorted([*closed, f"d,4,{current}", f"e,6,{current}"])
    wait_for_quietly(lambda: len(topics.pull_output()) >= len(expected_now), START_S)
    assert topics.pull_output() == expected_now, "the next window's sums, once"
    assert api.get(job_id).json()["currentState"] == "JOB_STATE_RUNNING"

    assert api.update(job_id, {"requestedState": "JOB_STATE_DRAINING"}).status_code == 200
    wait_state(api, job_id, {"JOB_STATE_DRAINED"}, timeout=DRAIN_S)
    everything = sorted([*expected_now, f"c,7,{later}"])
    wait_for_quietly(lambda: len(topics.pull_output()) >= len(everything), 60)
    assert topics.pull_output() == everything, "nothing lost or doubled in the topic"
    wait_for_quietly(lambda: len(rows_of(PROJECT, name)) >= len(everything), 60)
    assert rows_of(PROJECT, name) == everything, "nothing lost or doubled in BigQuery"
