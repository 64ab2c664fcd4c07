"""Beam Go pipelines on Flink, submitted by Beam Go's own Dataflow runner: the Flink cluster's SDK worker pool
starts the job's Go worker binary, fetched from the job server (docs/engines.md, "Go on Flink"). The wordcount,
labelled for Flink, ends DONE with Go's direct runner's output, its counter and its worker's log lines; a
streaming pubsubio pipeline runs there by default (Flink is the server's streaming engine) and drains. The Flink
cluster is scripts/test's (BEAMPORT_TEST_FLINK_ENV), the Go programs tests/go's."""

from __future__ import annotations

import psutil
import pytest
from conftest import Api
from test_go import (
    PROJECT,
    Go,
    PeriodicCounts,
    PubsubSums,
    go_server,
    messages,
    ran_as_the_direct_runner,
    write_counts_to_bigquery,
)
from test_java_flink import pool_workers
from test_running_jobs import wait_state
from test_streaming import START_S, cancel_live_flink_jobs_of, flink_args, flink_endpoints, flink_state, wait_for

# One Flink job at a time, as test_streaming's.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("flink")]

ON_FLINK = '--labels={"beamport_engine": "flink"}'


@pytest.fixture(scope="module")
def go_on_flink(tmp_path_factory) -> Go:
    """A server with the Flink cluster (its streaming engine) and Prism, with the GCS, metadata and Pub/Sub
    endpoints Go's runner needs; the wordcount program."""
    flink = flink_endpoints()
    go = go_server(tmp_path_factory.mktemp("go-flink"), *flink_args(flink))
    go.flink = flink  # type: ignore[attr-defined]
    yield go
    go.server.stop()


GO_WORKER = "--worker=true"  # in a Go worker's command line


def test_go_wordcount_runs_on_flink_with_the_direct_runners_output(go_on_flink):
    """Labelled for Flink (a batch Go job that names no engine runs on Prism): the pool starts the worker binary
    it fetched from the job server; the output is Go's direct runner's, the counter is in getMetrics, and the Go
    worker's own log lines are the job's messages."""
    go = go_on_flink
    direct, out = go.base / "direct.txt", go.base / "flink.txt"
    go.direct(direct)
    done, job_id = go.dataflow(out, ON_FLINK, "--async")
    assert done.returncode == 0, done.stderr[-5000:]
    api = Api(go.server.url, PROJECT)
    wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=600)
    ran_as_the_direct_runner(api, job_id, out, direct, "Flink")


def test_beam_gos_bigquery_io_writes_the_bigquery_emulator_from_flink(go_on_flink):
    """The cluster's SDK worker pool does not inherit the server's environment: the Go worker gets the Google API
    gateway from the job's options (beamport_emulator_endpoints) and writes its counts to the emulator through it
    with Beam Go's bigqueryio (test_go.py's test on the embedded engine and Prism)."""
    write_counts_to_bigquery(go_on_flink, "Flink", ON_FLINK)


def test_go_pubsub_sums_run_on_flink_by_default_then_drain(go_on_flink, monkeypatch):
    """A streaming Go job that names no engine runs on the server's streaming engine, Flink: Beam Go's pubsubio,
    replaced by Beamport's Python transforms beside the Go environment, reads and writes through the Pub/Sub
    emulator; each closed window's sums come out once (a duplicate id counted once); a drain fires the open
    window and ends DRAINED, with no Go worker left."""
    go = go_on_flink
    sums = PubsubSums(go, "go-flink-sums", monkeypatch)
    assert any(text.startswith("The job is running on Flink") for text in messages(sums.api, sums.job_id))
    workers = pool_workers(go.flink, GO_WORKER)  # type: ignore[attr-defined]
    assert workers, "the job's Go worker runs in the cluster's SDK worker pool"
    sums.drained()
    gone, alive = psutil.wait_procs(workers, timeout=120)
    assert not alive, alive


def test_a_go_job_reading_a_source_of_gos_own_drains_on_flink(go_on_flink):
    """tests/go/periodic_counts on Flink: its periodic.Sequence (Go's own unbounded splittable DoFn) is truncated on
    drain by the pool's Go launcher's control relay, as on Prism (test_go.py); DRAINED, each number once, no Go
    worker left."""
    go = go_on_flink
    counts = PeriodicCounts(go, "go-flink-periodic")
    try:
        on_flink = lambda: any(m.startswith("The job is running on Flink") for m in messages(counts.api, counts.job_id))  # noqa: E731
        wait_for("the job's message that it runs on Flink", on_flink, 60)
        workers = pool_workers(go.flink, GO_WORKER)  # type: ignore[attr-defined]
        assert workers, "the job's Go worker runs in the cluster's SDK worker pool"
        counts.drained()
        gone, alive = psutil.wait_procs(workers, timeout=120)
        assert not alive, alive
    finally:
        cancel_live_flink_jobs_of(go.flink, counts.job_id)  # type: ignore[attr-defined]


def test_a_go_job_on_flink_is_updated_with_its_state(go_on_flink, monkeypatch):
    """pubsub_sums on Flink replaced by Beam Go's runner with --update (the same job name): the old job's run stops
    with its savepoint, and the new job goes on from it. The window still open holds the old job's 7 and the ids it
    read, so after the drain its sum is 7 plus what the new job read (3): not 3 (a fresh start), nor 110 (the
    repeat of an id the old job read, counted again); and no closed window's sum comes again."""
    go = go_on_flink
    sums = PubsubSums(go, "go-flink-update", monkeypatch)
    name = sums.api.get(sums.job_id).json()["name"]
    done, new_id = sums.submit("", "--update", name=name)
    assert done.returncode == 0, done.stderr[-5000:]
    assert new_id != sums.job_id
    old = wait_state(sums.api, sums.job_id, {"JOB_STATE_UPDATED"}, timeout=START_S)
    assert old["replacedByJobId"] == new_id
    wait_state(sums.api, new_id, {"JOB_STATE_RUNNING"}, timeout=START_S)
    assert flink_state(go.flink, sums.job_id) == "FINISHED"  # type: ignore[attr-defined]
    sums.topics.publish("c", 3, sums.later + 1, "g6")
    # An id the old job read, again (with other data, to tell): its ids are state, so this is dropped.
    sums.topics.publish("c", 100, sums.later, "g5")
    sums.job_id = new_id
    sums.drained(open_sum=10)
