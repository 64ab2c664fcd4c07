"""Updates that carry a running streaming job's state over (jobs.create with replaceJobId), as a long-running
operation: the job service over a real store (SQLite, PostgreSQL), with test_snapshots's `Savepoints` as the
engine's state control and a stand-in for the Beam sidecar. The same on Flink, end to end: tests/test_streaming.py.

Also: a refused create leaves no kept pipeline behind (pipelines/<id>.pb).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest
from test_snapshots import REGION, Clock, Savepoints, move_job, store  # noqa: F401 (store: a fixture)

from beamport.errors import ApiError
from beamport.files import FilePolicy
from beamport.service.documents import commit
from beamport.service.jobs import JobService
from beamport.service.snapshots import SnapshotService
from beamport.store.base import Write
from beamport.store.work_items import WORK_CANCELLED, WORK_LEASED, WORK_PENDING, WorkItemChange


class Beam:
    """What the job service asks of the Beam sidecar here: a pipeline's graph (none), an update's
    incompatibilities (`problems`)."""

    def __init__(self, problems: list[str] | None = None):
        self.problems = problems or []

    def call(self, name: str, *args):
        return {"describe_pipeline": {}, "update_incompatibilities": self.problems}[name]


class HeldSavepoints(Savepoints):
    """Savepoints that wait for `release` (the engine saving), and record the jobs stopped."""

    def __init__(self, fail_with: str | None = None):
        super().__init__(fail_with)
        self.release = threading.Event()
        self.stopped: list[str] = []
        self.stopped_with_savepoint: list[str] = []

    def savepoint(self, job_id: str, directory: Path, stop: bool = False):
        assert self.release.wait(60)
        saved = super().savepoint(job_id, directory)
        if stop:
            self.stopped_with_savepoint.append(job_id)
        return saved

    def stop(self, job_id: str) -> None:
        self.stopped.append(job_id)


def job_service(store, tmp_path: Path, control, beam: Beam | None = None) -> JobService:  # noqa: F811
    clock = Clock()
    snapshots = SnapshotService(store, tmp_path / "data", control, clock=clock)
    return JobService(
        store,
        FilePolicy([tmp_path]),
        clock=clock,
        streaming_engine="flink",  # an engine that keeps state (the control stands in for it)
        saved_state=snapshots,
        pipelines_dir=tmp_path / "pipelines",
        beam=beam or Beam(),
    )


def body(tmp_path: Path, name: str = "stream", **fields) -> dict:
    pipeline = tmp_path / "pipeline.pb"
    pipeline.write_bytes(b"a pipeline")
    options = {"pipelineUrl": str(pipeline)}
    return {
        "name": name,
        "type": "JOB_TYPE_STREAMING",
        "environment": {"sdkPipelineOptions": {"options": options}},
        **fields,
    }


def running_job(jobs: JobService, tmp_path: Path) -> str:
    job = jobs.create_job("p", REGION, body(tmp_path))
    move_job(jobs.store, job["id"], "JOB_STATE_RUNNING")
    return job["id"]


def state(jobs: JobService, job_id: str) -> dict:
    return jobs.get_job("p", REGION, job_id)


def texts(jobs: JobService, job_id: str) -> list[str]:
    return [m["messageText"] for m in jobs.list_messages("p", REGION, job_id).get("jobMessages", [])]


def wait_until(what: str, predicate, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_update_answers_at_once_and_the_new_job_takes_over_once_the_state_is_saved(store, tmp_path):  # noqa: F811
    control = HeldSavepoints()
    jobs = job_service(store, tmp_path, control)
    old_id = running_job(jobs, tmp_path)
    old_work = store.work_items.list(old_id)

    started = time.monotonic()
    new = jobs.create_job("p", REGION, body(tmp_path, replaceJobId=old_id))
    assert time.monotonic() - started < 10  # the engine has not saved anything yet: the create did not wait
    new_id = new["id"]
    assert new["currentState"] == "JOB_STATE_PENDING" and new["replaceJobId"] == old_id
    # Meanwhile the old job runs on and keeps its name; the new one has no work to lease yet.
    old = state(jobs, old_id)
    assert old["currentState"] == "JOB_STATE_RUNNING" and "replacedByJobId" not in old
    assert store.work_items.list(new_id) == []
    assert jobs.active_job_id("p", REGION, "stream") == old_id
    assert jobs.create_job("p", REGION, body(tmp_path))["id"] == old_id  # a plain create of the name: the old job
    with pytest.raises(ApiError) as refused:  # one update at a time
        jobs.create_job("p", REGION, body(tmp_path, replaceJobId=old_id))
    assert refused.value.status == "FAILED_PRECONDITION" and f"already being updated: job {new_id}" in str(
        refused.value.message
    )
    assert any(f"Job {new_id} is to replace this job" in t for t in texts(jobs, old_id))
    assert any("state is being saved" in t for t in texts(jobs, new_id))

    control.release.set()
    wait_until("the new job to take over", lambda: state(jobs, old_id)["currentState"] == "JOB_STATE_UPDATED")
    # The old job's run stopped with its state: nothing it read after the savepoint is read again, or lost.
    assert control.stopped_with_savepoint == [old_id]
    old, new = state(jobs, old_id), state(jobs, new_id)
    assert old["replacedByJobId"] == new_id
    assert new["currentState"] == "JOB_STATE_PENDING" and new["createdFromSnapshotId"]
    assert [item.state for item in store.work_items.list(new_id)] == [WORK_PENDING]
    assert [item.state for item in store.work_items.list(old_id)] == [WORK_CANCELLED] * len(old_work)
    assert jobs.active_job_id("p", REGION, "stream") == new_id
    wait_until("the old job's run stopped", lambda: control.stopped == [old_id])
    snapshot = new["createdFromSnapshotId"]
    assert jobs.saved_state.restore_location("p", REGION, snapshot)  # where the new job's worker starts from
    assert any(f"takes over the state of job {old_id}, saved in snapshot {snapshot}" in t for t in texts(jobs, new_id))
    assert any(f"replaced by job {new_id}" in t for t in texts(jobs, old_id))


def test_a_failed_savepoint_leaves_the_old_job_running_and_fails_the_new_one(store, tmp_path):  # noqa: F811
    control = HeldSavepoints(fail_with="Job is not running on Flink (CANCELED): there is no state to save.")
    jobs = job_service(store, tmp_path, control)
    old_id = running_job(jobs, tmp_path)
    new_id = jobs.create_job("p", REGION, body(tmp_path, replaceJobId=old_id))["id"]
    control.release.set()
    wait_until("the new job to fail", lambda: state(jobs, new_id)["currentState"] == "JOB_STATE_FAILED")
    old = state(jobs, old_id)
    assert old["currentState"] == "JOB_STATE_RUNNING" and "replacedByJobId" not in old
    assert [item.state for item in store.work_items.list(old_id)] == [WORK_PENDING]  # untouched
    assert store.work_items.list(new_id) == [] and control.stopped == []
    assert jobs.active_job_id("p", REGION, "stream") == old_id
    assert any(
        f"The update of job {old_id} failed" in t and "not running on Flink" in t and "runs on, unchanged" in t
        for t in texts(jobs, new_id)
    )
    assert any(
        f"The update by job {new_id} failed" in t and "not running on Flink" in t and "runs on, unchanged" in t
        for t in texts(jobs, old_id)
    )
    # The old job can be updated again.
    control.fail_with = None
    again = jobs.create_job("p", REGION, body(tmp_path, replaceJobId=old_id))
    wait_until("the second update", lambda: state(jobs, old_id)["currentState"] == "JOB_STATE_UPDATED")
    assert state(jobs, old_id)["replacedByJobId"] == again["id"]


def test_the_old_job_ending_or_the_new_one_cancelled_meanwhile_ends_the_update(store, tmp_path):  # noqa: F811
    control = HeldSavepoints()
    jobs = job_service(store, tmp_path, control)
    # The new job cancelled while the state is being saved: the old job runs on. Its run stopped with the
    # savepoint; its work goes to another attempt at once (not a failure), which the engine starts from there.
    old_id = running_job(jobs, tmp_path)
    (item,) = store.work_items.list(old_id)
    expected, item.state, item.worker_id, item.lease_expire_us = item.version, WORK_LEASED, "w-1", 2**62
    commit(store, Write(changed_work_items=[WorkItemChange(item, expected)]))
    new_id = jobs.create_job("p", REGION, body(tmp_path, replaceJobId=old_id))["id"]
    jobs.update_job("p", REGION, new_id, {"requestedState": "JOB_STATE_CANCELLED"})
    assert state(jobs, new_id)["currentState"] == "JOB_STATE_CANCELLED"
    control.release.set()
    wait_until("the update abandoned", lambda: any("was abandoned" in t for t in texts(jobs, old_id)))
    assert state(jobs, old_id)["currentState"] == "JOB_STATE_RUNNING" and control.stopped == []
    assert control.stopped_with_savepoint == [old_id]
    (item,) = store.work_items.list(old_id)
    assert (item.state, item.attempt, item.worker_id) == (WORK_PENDING, 2, None)
    assert any("for the update by job" in t and "goes on from that snapshot" in t for t in texts(jobs, old_id))
    # It was not counted as a failure: that attempt was stopped, not failed.
    assert [f["counted"] for f in orjson.loads(item.failures)] == [False]

    # The old job cancelled while its state is being saved: the new job fails.
    control.release.clear()
    new_id = jobs.create_job("p", REGION, body(tmp_path, replaceJobId=old_id))["id"]
    wait_until("the savepoint asked for", lambda: jobs.saved_state.list_snapshots("p", REGION, old_id))
    jobs.update_job("p", REGION, old_id, {"requestedState": "JOB_STATE_CANCELLED"})
    control.release.set()
    wait_until("the new job to fail", lambda: state(jobs, new_id)["currentState"] == "JOB_STATE_FAILED")
    assert any("no longer running" in t for t in texts(jobs, new_id)) and control.stopped == []


def test_an_update_a_stopped_server_left_underway_is_resumed(store, tmp_path):  # noqa: F811
    stopped = HeldSavepoints()  # the server that stops: its engine never answers
    first = job_service(store, tmp_path, stopped)
    old_id = running_job(first, tmp_path)
    new_id = first.create_job("p", REGION, body(tmp_path, replaceJobId=old_id))["id"]
    assert first.start_waiting_jobs() == 0  # the new job is not one waiting for an engine: its work comes later

    control = HeldSavepoints()
    control.release.set()
    second = job_service(store, tmp_path, control)
    assert second.resume_updates() == 1
    wait_until("the new job to take over", lambda: state(second, old_id)["currentState"] == "JOB_STATE_UPDATED")
    assert state(second, old_id)["replacedByJobId"] == new_id
    assert any("The server restarted while the state" in t for t in texts(second, new_id))
    assert second.resume_updates() == 0
    taken_over = state(second, new_id)
    stopped.release.set()  # the first server's swap finds it done: nothing changes
    wait_until("the first swap's end", lambda: not any(t.name == f"update-{new_id}" for t in threading.enumerate()))
    assert state(second, new_id) == taken_over and len(store.work_items.list(new_id)) == 1


def test_a_refused_create_leaves_no_kept_pipeline(store, tmp_path):  # noqa: F811
    control = HeldSavepoints()
    jobs = job_service(store, tmp_path, control, Beam(problems=["transform 'Count' is missing"]))
    kept = tmp_path / "pipelines"
    old_id = running_job(jobs, tmp_path)
    assert [p.name for p in kept.iterdir()] == [f"{old_id}.pb"]
    # A second create of an active name answers the active job: the pipeline it sent is not kept.
    assert jobs.create_job("p", REGION, body(tmp_path))["id"] == old_id
    assert [p.name for p in kept.iterdir()] == [f"{old_id}.pb"]
    # An update refused as incompatible.
    with pytest.raises(ApiError) as refused:
        jobs.create_job("p", REGION, body(tmp_path, replaceJobId=old_id))
    assert refused.value.status == "FAILED_PRECONDITION" and "not compatible" in refused.value.message
    assert [p.name for p in kept.iterdir()] == [f"{old_id}.pb"]
    assert state(jobs, old_id)["currentState"] == "JOB_STATE_RUNNING"


def test_a_savepoint_copied_for_a_resumed_update_keeps_its_links_as_links(tmp_path):
    """An update's stop resumed after a restart copies the savepoint its run was stopped with into the new
    snapshot (FlinkControl._stopped_with_savepoint), in this server, outside the sandbox. The cluster that wrote
    the savepoint runs what jobs send it (sandboxed: scripts/flink-cluster), so a link in it may name any file of
    the host: copied as a link, never as the file it names (which the cluster could then read in the snapshot)."""
    from beamport.config import FlinkConfig
    from beamport.engine.flink import FlinkControl

    secret = tmp_path / "secret"
    secret.write_text("the host's")
    savepoint = tmp_path / "cluster" / "savepoints" / "savepoint-1"
    savepoint.mkdir(parents=True)
    (savepoint / "_metadata").write_bytes(b"state")
    (savepoint / "planted").symlink_to(secret)
    control = FlinkControl(FlinkConfig(master="localhost:1", job_server="-", sdk_pool="-"))
    control.rest.handed_over = lambda job_id: savepoint.as_uri()  # type: ignore[method-assign]
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    saved = control._stopped_with_savepoint("a-job", snapshots)
    assert saved is not None and saved.size_bytes == len(b"state")
    copy = snapshots / "savepoint-1"
    assert (copy / "_metadata").read_bytes() == b"state"
    assert (copy / "planted").is_symlink() and (copy / "planted").readlink() == secret
