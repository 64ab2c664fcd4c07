"""ReadFromLocalLog: an unbounded, replayable source over a local append-only text file.

Each line (ending in a newline) is one element, read as it is appended, for as long as the job runs: a
local stand-in for Pub/Sub or Kafka. The position read up to is the source's state (the restriction of a
splittable DoFn), so an engine that checkpoints (Flink) keeps it in its snapshots: a job started from a
snapshot goes on reading where the snapshotted job was, nothing read twice or skipped.

Event time is the time of reading, or what `timestamp_fn(line)` says (seconds since the epoch); the
watermark follows the newest event time read. When the job is drained the source reads what the file holds
at that moment, says its watermark is at the end of time (so every window fires) and ends.

Its backlog (what the file holds past the position read: bytes, and complete lines) is the gauges Beam names
for a source's backlog (Java's `SourceMetrics`: namespace `source`, `backlog_bytes` and `backlog_elements`), set
each time the reader stops; Beamport's service shows them as the source's backlog (translate/metrics.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.options.value_provider import RuntimeValueProvider
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Duration, Timestamp

from beamport.protocol import DRAIN_FILE_OPTION

_END = 2**62  # an unbounded restriction's end: further than any file will grow
POLL_S = 0.5  # how long to wait for new lines once the file is read to its end
# What one call reads at most before it checkpoints and goes on at once: a long replay then reaches the
# runner in bundles (its output committed, its position checkpointed, its backlog reported) as it goes.
MAX_READ_BYTES = 8 << 20
# Beam's standard source metrics (Java's org.apache.beam.sdk.metrics.SourceMetrics): the backlog gauges.
SOURCE_NAMESPACE = "source"
BACKLOG_BYTES = "backlog_bytes"
BACKLOG_ELEMENTS = "backlog_elements"
# The lines of a backlog are counted in this much of it at most; a longer one's are extrapolated from those.
COUNT_LINES_IN = 64 << 20


def drain_requested() -> bool:
    """Whether this job is being drained (the engine created its drain file)."""
    path = RuntimeValueProvider.get_value(DRAIN_FILE_OPTION, str, "")
    return bool(path) and os.path.exists(path)


class _Positions(RestrictionProvider):
    """The element is (path, start offset); the restriction is the byte range still to read."""

    def initial_restriction(self, element):
        return OffsetRange(element[1], _END)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        try:
            return max(os.path.getsize(element[0]) - restriction.start, 0)
        except OSError:
            return 0

    def split(self, element, restriction):
        yield restriction  # one reader per file: lines must be read in order to know where each begins

    def truncate(self, element, restriction):
        return None  # a drained job reads nothing more


class ManualWatermark(WatermarkEstimatorProvider):
    """A watermark that starts at the beginning of time and that the reader sets (Beamport's readers share it)."""

    def initial_estimator_state(self, element, restriction):
        return MIN_TIMESTAMP

    def create_watermark_estimator(self, state):
        return ManualWatermarkEstimator(state)


_Watermark = ManualWatermark  # its old name, which pipelines pickled before the rename refer to


def backlog(path: str, position: int) -> tuple[int, int]:
    """What the file holds past `position`: its bytes, and its complete lines (counted in its first
    COUNT_LINES_IN bytes, extrapolated past them). A file not there yet holds none."""
    try:
        with open(path, "rb") as source:
            remaining = max(os.fstat(source.fileno()).st_size - position, 0)
            source.seek(position)
            lines = counted = 0
            while counted < min(remaining, COUNT_LINES_IN):
                chunk = source.read(min(1 << 20, remaining - counted))
                if not chunk:
                    break
                lines += chunk.count(b"\n")
                counted += len(chunk)
    except OSError:
        return 0, 0
    if counted < remaining and counted:
        lines = round(lines * remaining / counted)
    return remaining, lines


class _ReadLines(beam.DoFn):
    def __init__(self, timestamp_fn: Callable[[str], float] | None):
        self.timestamp_fn = timestamp_fn

    @staticmethod
    def _report_backlog(path: str, position: int) -> None:
        remaining, lines = backlog(path, position)
        Metrics.gauge(SOURCE_NAMESPACE, BACKLOG_BYTES).set(remaining)
        Metrics.gauge(SOURCE_NAMESPACE, BACKLOG_ELEMENTS).set(lines)

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: tuple[str, int],
        tracker=beam.DoFn.RestrictionParam(_Positions()),
        watermark=beam.DoFn.WatermarkEstimatorParam(ManualWatermark()),
    ):
        draining = drain_requested()  # then read what the file holds now, and end
        path, position = element[0], tracker.current_restriction().start
        start, more = position, False
        try:
            source = open(path, "rb")
        except FileNotFoundError:
            source = None  # not written yet: wait for it
        if source is not None:
            with source:
                source.seek(position)
                for line in source:
                    if not line.endswith(b"\n"):
                        break  # a line still being written: read it whole next time
                    # Claim the line's last byte: a checkpoint then resumes right after this line.
                    if not tracker.try_claim(position + len(line) - 1):
                        self._report_backlog(path, position)  # the runner split here: the rest is a residual's
                        return
                    position += len(line)
                    text = line[:-1].decode("utf-8")
                    at = Timestamp.of(self.timestamp_fn(text)) if self.timestamp_fn else Timestamp.now()
                    if at > watermark.current_watermark():
                        watermark.set_watermark(at)
                    yield TimestampedValue(text, at)
                    if position - start >= MAX_READ_BYTES and not draining:
                        more = True
                        break
        if draining:
            watermark.set_watermark(MAX_TIMESTAMP)  # every window downstream can fire
            tracker.try_claim(tracker.current_restriction().stop)  # claims the rest: the restriction is done
            self._report_backlog(path, _END)  # read to its end: none left
            return
        self._report_backlog(path, position)
        if more:  # go on at once, in a call of its own
            tracker.defer_remainder()
            return
        if not self.timestamp_fn:  # event time is reading time: time passes while nothing comes
            now = Timestamp.of(time.time())
            if now > watermark.current_watermark():
                watermark.set_watermark(now)
        tracker.defer_remainder(Duration(seconds=POLL_S))


class ReadFromLocalLog(beam.PTransform):
    """Read the lines of a local file as they are appended, until the job is cancelled or drained.

    `path`: the file (it may not exist yet). `start_offset`: the byte offset to start at (0: replay the
    whole file). `timestamp_fn`: a line's event time, in seconds since the epoch (default: when it is read).
    """

    def __init__(self, path: str, start_offset: int = 0, timestamp_fn: Callable[[str], float] | None = None):
        super().__init__()
        self.path = os.path.abspath(path)
        self.start_offset = start_offset
        self.timestamp_fn = timestamp_fn

    def expand(self, pbegin):
        return (
            pbegin
            | "Path" >> beam.Create([(self.path, self.start_offset)])
            | "Read" >> beam.ParDo(_ReadLines(self.timestamp_fn))
        )
