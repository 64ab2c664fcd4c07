"""beamport.io.ReadFromLocalLog's reader called as an SDK worker calls it (Beam's own restriction tracker, watermark
estimator and metrics container): how much one call reads, where the next goes on, and the backlog it reports
(Beam's standard source gauges, which the service shows as the source's backlog: issue 19). The engines run it
end to end in tests/test_streaming.py and tests/test_streaming_observed.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics.execution import MetricsContainer
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from apache_beam.runners.worker import statesampler
from apache_beam.utils import counters
from apache_beam.utils.timestamp import MIN_TIMESTAMP

from beamport.io import local_log

LINES = [f"line-{i}" for i in range(5)]  # 7 bytes each with its newline


def read_once(path: Path, start: int) -> tuple[list[str], dict[str, int], int | None]:
    """One call of the reader from byte `start`: the lines it read, its backlog gauges, and the byte the
    rest of its restriction (which it deferred) starts at (None: nothing deferred)."""
    tracker = ThreadsafeRestrictionTracker(OffsetRestrictionTracker(OffsetRange(start, local_log._END)))
    container = MetricsContainer("Read")
    sampler = statesampler.StateSampler("", counters.CounterFactory())
    statesampler.set_current_tracker(sampler)
    try:
        with sampler.scoped_state("Read", "process", metrics_container=container):
            read = [
                value.value
                for value in local_log._ReadLines(None).process(
                    (str(path), start),
                    tracker=RestrictionTrackerView(tracker),
                    watermark=ManualWatermarkEstimator(MIN_TIMESTAMP),
                )
            ]
    finally:
        statesampler.set_current_tracker(None)
    gauges = {
        key.metric.name: data.value
        for key, data in container.get_cumulative().gauges.items()
        if key.metric.namespace == local_log.SOURCE_NAMESPACE
    }
    deferred = tracker.deferred_status()
    return read, gauges, deferred[0].start if deferred else None


def test_a_long_read_checkpoints_and_says_what_is_left(tmp_path, monkeypatch):
    log = tmp_path / "in.log"
    log.write_text("".join(line + "\n" for line in LINES) + "part")  # a line still being written
    monkeypatch.setattr(local_log, "MAX_READ_BYTES", 14)

    read, backlog, resume_at = read_once(log, 0)
    assert read == LINES[:2]  # 14 bytes: the call stops there, and goes on from there
    assert resume_at == 14
    assert backlog == {"backlog_bytes": log.stat().st_size - 14, "backlog_elements": 3}

    monkeypatch.setattr(local_log, "MAX_READ_BYTES", 1 << 20)
    read, backlog, resume_at = read_once(log, 14)
    assert read == LINES[2:]
    assert resume_at == 35  # it polls again for what is appended after the last whole line
    assert backlog == {"backlog_bytes": len("part"), "backlog_elements": 0}


def test_a_file_not_written_yet_has_no_backlog(tmp_path):
    read, backlog, resume_at = read_once(tmp_path / "not-yet.log", 0)
    assert (read, backlog, resume_at) == ([], {"backlog_bytes": 0, "backlog_elements": 0}, 0)


@pytest.mark.parametrize("counted_in", [1000, 300])
def test_the_lines_of_a_long_backlog_are_counted_in_its_start_and_extrapolated(tmp_path, monkeypatch, counted_in):
    log = tmp_path / "in.log"
    log.write_text("123456789\n" * 100)
    monkeypatch.setattr(local_log, "COUNT_LINES_IN", counted_in)
    assert local_log.backlog(str(log), 0) == (1000, 100)
    assert local_log.backlog(str(log), 500) == (500, 50)
    assert local_log.backlog(str(log), 2000) == (0, 0)
