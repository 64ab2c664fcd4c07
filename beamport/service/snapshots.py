"""Dataflow's snapshots: a running streaming job's state, saved by its engine, kept for a time to live.

A snapshot is a record here and data the engine wrote (a savepoint, under <data_dir>/snapshots/<id>/). The
record goes PENDING (asked for), RUNNING (the engine is saving), then READY (with its size and where the data
is) or FAILED (the engine's error is kept, and logged, and told to the source job). Dataflow's Snapshot has
no error field, so the error shows in the job's messages.

The engine is a StreamingControl (beamport/engine/base.py); a server without one refuses snapshots, naming
what would work. Snapshots are deleted by snapshots.delete, or by `expire` once their time to live has passed
(the server's sweeper calls it).
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import orjson
from google.cloud import dataflow_v1beta3 as dataflow

from beamport import wire
from beamport.engine.base import EngineError, StreamingControl, savepoint_path
from beamport.errors import failed_precondition, invalid_argument, not_found
from beamport.service import engines, model
from beamport.service.documents import commit, job_message, load_job, timestamp
from beamport.store.base import Store, Write
from beamport.store.snapshots import SNAPSHOT_FAILED, SNAPSHOT_PENDING, SNAPSHOT_READY, SNAPSHOT_RUNNING, SnapshotRecord

log = logging.getLogger(__name__)

SnapshotPb = dataflow.Snapshot.pb()
SnapshotState = SnapshotPb.DESCRIPTOR.fields_by_name["state"].enum_type
SnapshotJobRequestPb = dataflow.SnapshotJobRequest.pb()

_DAY_US = 24 * 3600 * 1_000_000
DEFAULT_TTL_US = 7 * _DAY_US  # Dataflow's (gcloud's --snapshot-ttl default: 7d)
MAX_TTL_US = 30 * _DAY_US  # Dataflow's maximum
WAIT_S = 30.0  # how long jobs.snapshot waits for the savepoint before answering the snapshot as it is
# A snapshot PENDING or RUNNING this long, and not being taken by this process, was being taken by a server
# that stopped: it is FAILED. (Flink's default checkpoint timeout, which savepoints obey, is 10 minutes.)
INTERRUPTED_AFTER_US = 15 * 60 * 1_000_000
IN_FLIGHT = (SNAPSHOT_PENDING, SNAPSHOT_RUNNING)
SWEEP_PAGE = 100  # snapshots read at a time by the sweep (which goes through all of them)
# Jobs that will restore from their snapshot but have not started yet: its data must stay.
NOT_YET_RESTORED = frozenset({model.PENDING, model.QUEUED})

DEFAULT_LOCATION = "us-central1"  # what the location-less twins mean
_LOCATION_RE = re.compile(r"[a-z][-a-z0-9]{0,62}\Z")

UPDATE_WAIT_S = 120.0  # how long an update waits for the running job's state to be saved (in the background)
NO_CONTROL = (
    "This Beamport server has no streaming engine that saves state, so it cannot snapshot job {job_id}. "
    "Snapshots need a Flink cluster: start the server with `beamport serve --flink-master HOST:PORT ...` "
    "(scripts/flink-cluster starts one; see docs/engines.md)."
)


def _duration_text(us: int) -> str:
    return str(timedelta(microseconds=us))


class SnapshotService:
    def __init__(
        self,
        store: Store,
        data_dir: Path,
        control: StreamingControl | None = None,
        clock=wire.now_us,
        wait_s: float = WAIT_S,
    ):
        self.store = store
        self.root = Path(data_dir).resolve() / "snapshots"  # <data_dir>/snapshots/<snapshot id>/
        self.control = control
        self.clock = clock
        self.wait_s = wait_s
        self._taking: set[str] = set()  # ids of the snapshots this process is taking
        self._lock = threading.Lock()

    # -- jobs.snapshot --------------------------------------------------------

    def snapshot_job(
        self, project_id: str, location: str | None, job_id: str, body: dict, stopping: bool = False
    ) -> dict:
        """Snapshot a running streaming job. `location` None (the location-less twin): the body's location,
        else us-central1. Waits up to `wait_s` for the engine, then answers the snapshot as it is. `stopping`
        (an update's): the job's run stops with the snapshot, having read and written nothing after it."""
        request = wire.parse_message(body, SnapshotJobRequestPb, "snapshot request")
        if location is None:
            location = request.location or DEFAULT_LOCATION
            if not _LOCATION_RE.match(location):
                raise invalid_argument(f"Invalid location {location!r}")
        ttl_us = DEFAULT_TTL_US
        if request.HasField("ttl"):
            ttl_us = request.ttl.seconds * 1_000_000 + request.ttl.nanos // 1000
            if ttl_us <= 0:
                raise invalid_argument(f"Invalid ttl {request.ttl.ToJsonString()}: a snapshot's ttl must be positive.")
            if ttl_us > MAX_TTL_US:
                raise invalid_argument(
                    f"Invalid ttl {request.ttl.ToJsonString()}: a snapshot's ttl is at most 30 days (2592000s)."
                )

        job = load_job(self.store, project_id, location, job_id, with_detail=False)
        doc = orjson.loads(job.summary)
        if doc.get("type") != model.STREAMING:
            raise failed_precondition(
                f"Job {job_id} is a batch job: only streaming jobs can be snapshotted (a batch job keeps no state "
                "between its stages that a new job could start from). Run the pipeline as a streaming job "
                "(--streaming) on the Flink engine to take snapshots of it."
            )
        if self.control is None:
            raise failed_precondition(NO_CONTROL.format(job_id=job_id))
        engine = engines.engine_of(doc, self.control.name)
        if engine != self.control.name:
            raise failed_precondition(
                f"Job {job_id} runs on the {engine} engine, which keeps no state a new job could start from. "
                f"Snapshots are taken of jobs on the {self.control.name} engine (the default for streaming jobs "
                f"on this server; label {engines.ENGINE_LABEL}={self.control.name})."
            )
        state = doc.get("currentState")
        if state != model.RUNNING:
            raise failed_precondition(
                f"Job {job_id} is in state {state}: only a job in JOB_STATE_RUNNING can be snapshotted."
            )

        now = self.clock()
        snapshot = SnapshotRecord(
            id=str(uuid.uuid4()),
            project_id=project_id,
            location=location,
            source_job_id=job_id,
            state=SNAPSHOT_PENDING,
            create_us=now,
            ttl_us=ttl_us,
            expire_us=now + ttl_us,
            description=request.description,
            snapshot_sources=request.snapshot_sources,
        )
        self.store.snapshots.add(snapshot)
        if request.snapshot_sources:
            self._tell_job(
                job_id,
                "JOB_MESSAGE_WARNING",
                f"Snapshot {snapshot.id}: snapshotSources was asked for, but Beamport does not snapshot "
                "sources (Pub/Sub subscriptions); the snapshot holds the job's state only.",
            )
        finished = threading.Event()
        with self._lock:
            self._taking.add(snapshot.id)
        threading.Thread(
            target=self._take,
            args=(self.control, snapshot, finished, stopping),
            name=f"snapshot-{snapshot.id}",
            daemon=True,
        ).start()
        finished.wait(self.wait_s)
        current = self.store.snapshots.get(project_id, snapshot.id)
        return render_snapshot(current or snapshot)

    def save_for_update(self, project_id: str, location: str, job_id: str, new_job_id: str) -> str:
        """For an update: snapshot the running job and stop its run with it, waiting for the engine. Returns the
        snapshot's id; FAILED_PRECONDITION, saying why, when its state cannot be saved (the job runs on)."""
        body = {"description": f"The state of job {job_id}, carried into job {new_job_id}, which updates it."}
        # The old job's run stops with its state: what it read after a savepoint it ran on past would be read
        # again by the new job (and written twice), or, acknowledged to its source, lost with the old job's state.
        snapshot = self.snapshot_job(project_id, location, job_id, body, stopping=True)
        deadline = time.monotonic() + UPDATE_WAIT_S
        while snapshot["state"] in ("PENDING", "RUNNING") and time.monotonic() < deadline:
            time.sleep(0.1)
            snapshot = self.get_snapshot(project_id, location, snapshot["id"])
        if snapshot["state"] != "READY":
            record = self.store.snapshots.get(project_id, snapshot["id"])
            why = (record.error if record else "") or f"snapshot {snapshot['id']} is {snapshot['state']}"
            raise failed_precondition(f"The state of job {job_id} could not be saved ({why}).")
        return snapshot["id"]

    def stop_run(self, job_id: str) -> None:
        """Stop the engine's run of a job that ended without its worker: replaced by an update (its worker
        stops it too, when it learns the job was replaced), or cancelled between attempts. Best effort."""
        if self.control is None:  # no engine keeps state here: nothing of its runs to stop
            return
        try:
            self.control.stop(job_id)
        except Exception as exc:  # noqa: BLE001 (the cluster away, say: the job has ended all the same)
            log.warning("stopping the engine's run of job %s: %s", job_id, exc)

    def _take(
        self, control: StreamingControl, snapshot: SnapshotRecord, finished: threading.Event, stopping: bool
    ) -> None:
        """In a thread of its own: ask the engine for the savepoint, record what came of it."""
        try:
            snapshot.state = SNAPSHOT_RUNNING
            if not self.store.snapshots.update(snapshot):
                return  # deleted before it started
            try:
                saved = control.savepoint(snapshot.source_job_id, self.root / snapshot.id, stop=stopping)
            except EngineError as exc:
                self._failed(snapshot, str(exc) or type(exc).__name__)
                return
            except Exception as exc:  # noqa: BLE001 (an engine's bug must not leave the snapshot RUNNING)
                log.exception("snapshot %s of job %s: the engine failed", snapshot.id, snapshot.source_job_id)
                self._failed(snapshot, f"internal error of the streaming engine: {type(exc).__name__}: {exc}")
                return
            snapshot.state = SNAPSHOT_READY
            snapshot.disk_size_bytes = saved.size_bytes
            snapshot.data_location = saved.location
            if not self.store.snapshots.update(snapshot):
                # Deleted (or expired) while the engine was saving: its data is nobody's.
                self._discard(snapshot)
                return
            log.info(
                "snapshot %s of job %s is ready: %s (%d bytes)",
                snapshot.id,
                snapshot.source_job_id,
                saved.location,
                saved.size_bytes,
            )
            self._tell_job(
                snapshot.source_job_id,
                "JOB_MESSAGE_BASIC",
                f"Snapshot {snapshot.id} created: {saved.size_bytes} bytes of state, kept until "
                f"{timestamp(snapshot.expire_us)} (ttl {_duration_text(snapshot.ttl_us)})."
                + (" The job's run stopped with it, for the update." if stopping else ""),
            )
        except Exception:  # noqa: BLE001 (a store hiccup: logged; the sweeper fails the snapshot later)
            log.exception("snapshot %s of job %s", snapshot.id, snapshot.source_job_id)
        finally:
            with self._lock:
                self._taking.discard(snapshot.id)
            finished.set()

    def _failed(self, snapshot: SnapshotRecord, error: str) -> None:
        log.warning("snapshot %s of job %s failed: %s", snapshot.id, snapshot.source_job_id, error)
        snapshot.state = SNAPSHOT_FAILED
        snapshot.error = error
        if self.store.snapshots.update(snapshot):
            self._tell_job(snapshot.source_job_id, "JOB_MESSAGE_WARNING", f"Snapshot {snapshot.id} failed: {error}")
        shutil.rmtree(self.root / snapshot.id, ignore_errors=True)  # whatever the engine left

    def _tell_job(self, job_id: str, importance: str, text: str) -> None:
        commit(self.store, Write(messages=[job_message(job_id, self.clock(), importance, text)]))

    # -- snapshots.get / list / delete --------------------------------------------

    def get_snapshot(self, project_id: str, location: str, snapshot_id: str) -> dict:
        return render_snapshot(self._load(project_id, location, snapshot_id))

    def list_snapshots(self, project_id: str, location: str, job_id: str | None = None) -> dict:
        """ListSnapshotsResponse: the location's snapshots (of one source job), newest first; no paging, as
        on Dataflow."""
        records = self.store.snapshots.list(project_id, location, job_id or None)
        return {"snapshots": [render_snapshot(r) for r in records]} if records else {}

    def delete_snapshot(self, project_id: str, location: str, snapshot_id: str | None) -> dict:
        """DeleteSnapshotResponse ({}). Refused while a job created from the snapshot has not started yet."""
        if not snapshot_id:
            raise invalid_argument("The snapshot to delete is required: set 'snapshotId'.")
        snapshot = self._load(project_id, location, snapshot_id)
        waiting = self._jobs_waiting_for(snapshot)
        if waiting:
            raise failed_precondition(
                f"Snapshot {snapshot_id} cannot be deleted: job {waiting[0]} was created from it and has not "
                "started yet (it restores its state from the snapshot when it starts). Delete the snapshot once "
                "the job is running, or cancel the job."
            )
        if not self.store.snapshots.delete(snapshot.id):
            raise self._not_found(location, snapshot_id)  # deleted meanwhile
        self._discard_unless_taking(snapshot)
        return {}

    def _load(self, project_id: str, location: str, snapshot_id: str) -> SnapshotRecord:
        snapshot = self.store.snapshots.get(project_id, snapshot_id)
        if snapshot is None or snapshot.location != location:
            raise self._not_found(location, snapshot_id)
        return snapshot

    @staticmethod
    def _not_found(location: str, snapshot_id: str):
        return not_found(
            f"Snapshot {snapshot_id} in location {location} could not be found in our system. "
            "Please double check that the id is correct."
        )

    def _jobs_waiting_for(self, snapshot: SnapshotRecord) -> list[str]:
        """Ids of the jobs created from this snapshot that have not started (restored) yet."""
        waiting = []
        for job in self.store.jobs.list_active_from_snapshot(snapshot.project_id, snapshot.id):
            doc = orjson.loads(job.summary)
            if doc.get("createdFromSnapshotId") == snapshot.id and doc.get("currentState") in NOT_YET_RESTORED:
                waiting.append(job.id)
        return waiting

    def _discard_unless_taking(self, snapshot: SnapshotRecord) -> None:
        """Delete a deleted snapshot's data, unless the engine is still saving it: then the thread that waits
        for the engine does, once it finds the record gone."""
        with self._lock:
            if snapshot.id in self._taking:
                return
        self._discard(snapshot)

    def _discard(self, snapshot: SnapshotRecord) -> None:
        """Delete a snapshot's data: through the engine, and the directory it was given."""
        directory = self.root / snapshot.id
        try:
            if snapshot.data_location and self.control is not None:
                self.control.discard(snapshot.data_location)
            elif snapshot.data_location and not _inside(savepoint_path(snapshot.data_location), directory):
                log.warning(
                    "snapshot %s: its data at %s is left in place (no streaming engine to discard it)",
                    snapshot.id,
                    snapshot.data_location,
                )
        except Exception:  # noqa: BLE001 (the record is gone: log, and leave the rest to the operator)
            log.exception("snapshot %s: discarding its data at %s failed", snapshot.id, snapshot.data_location)
        shutil.rmtree(directory, ignore_errors=True)

    # -- for the job service ----------------------------------------------------------

    def restore_location(self, project_id: str, location: str, snapshot_id: str) -> str:
        """Where a READY snapshot's data is, for a job created with createdFromSnapshotId: NOT_FOUND when
        there is no such snapshot (in this project and location), FAILED_PRECONDITION unless it is READY."""
        snapshot = self._load(project_id, location, snapshot_id)
        if snapshot.state != SNAPSHOT_READY:
            detail = f": {snapshot.error}" if snapshot.error else ""
            raise failed_precondition(
                f"Snapshot {snapshot_id} is {snapshot.state}{detail}; a job can start only from a READY snapshot."
            )
        return snapshot.data_location

    # -- the sweeper -------------------------------------------------------------------

    def expire(self, now_us: int | None = None) -> int:
        """Delete the snapshots whose time to live has passed (but not while a job created from one has yet
        to start from it), and fail those a stopped server left PENDING or RUNNING. Returns how many were
        deleted."""
        now = self.clock() if now_us is None else now_us
        deleted = 0
        for snapshot in _pages(lambda after: self.store.snapshots.list_expired(now, SWEEP_PAGE, after)):
            if self._jobs_waiting_for(snapshot):
                continue  # kept until its job has started; deleted at a later sweep
            if self.store.snapshots.delete(snapshot.id):
                deleted += 1
                log.info(
                    "snapshot %s of job %s expired (ttl %s): deleted",
                    snapshot.id,
                    snapshot.source_job_id,
                    _duration_text(snapshot.ttl_us),
                )
                self._discard_unless_taking(snapshot)
        with self._lock:
            taking = set(self._taking)
        interrupted = _pages(
            lambda after: self.store.snapshots.list_in_states(IN_FLIGHT, now - INTERRUPTED_AFTER_US, SWEEP_PAGE, after)
        )
        for snapshot in interrupted:
            if snapshot.id not in taking:
                self._failed(snapshot, "interrupted: the server stopped while the snapshot was being taken.")
        return deleted


def _pages(fetch) -> Iterator[SnapshotRecord]:
    """Every snapshot of the pages `fetch(after)` answers, after the last of the page before, until a short page."""
    after = None
    while True:
        page = fetch(after)
        yield from page
        if len(page) < SWEEP_PAGE:
            return
        after = page[-1]


def _inside(path: Path, directory: Path) -> bool:
    try:
        return path.resolve().is_relative_to(directory.resolve())
    except OSError:
        return False


def render_snapshot(snapshot: SnapshotRecord) -> dict:
    """The Snapshot in Google's JSON mapping (diskSizeBytes, an int64, as a string; only once READY)."""
    message = SnapshotPb(
        id=snapshot.id,
        project_id=snapshot.project_id,
        source_job_id=snapshot.source_job_id,
        state=SnapshotState.values_by_name[snapshot.state].number,
        description=snapshot.description,
        region=snapshot.location,
    )
    message.creation_time.FromMicroseconds(snapshot.create_us)
    message.ttl.FromMicroseconds(snapshot.ttl_us)
    if snapshot.state == SNAPSHOT_READY and snapshot.disk_size_bytes is not None:
        message.disk_size_bytes = snapshot.disk_size_bytes
    return wire.to_dict(message)
