"""Running jobs: the work-item protocol workers speak, and what the local worker pool asks of the service.

Workers use only the public API: `workItems:lease` claims a job's work (the job becomes RUNNING),
`workItems:reportStatus` extends the lease and carries metrics, completion and errors (the job becomes
DONE or FAILED), and `WorkerMessages` carries the pipeline's log records and stage states as
`workerMessageCode` entries (docs/worker-protocol.md). The service answers a report for a cancelled job
with `completeWorkStatus` CANCELLED, which tells a worker to stop.
"""

from __future__ import annotations

import json
import logging

import orjson

from beamport import schema, wire
from beamport.errors import RPC_CODE, ApiError, failed_precondition, invalid_argument, not_found, unimplemented
from beamport.protocol import (
    CODE_ENGINE_RUNNING,
    CODE_HARNESS_STARTED,
    CODE_LOG,
    CODE_STAGE,
    CODE_WORKERS_CHANGED,
    HARNESS_DRAIN,
    HARNESS_SEND_STACKS,
    WORK_ITEM_TYPE,
)
from beamport.service import autoscaling, engines, model
from beamport.service.documents import (
    commit,
    document,
    job_message,
    load_job,
    move_to_state,
    record_from_document,
    timestamp,
)
from beamport.service.notify import WorkNotifier
from beamport.store.base import Store, Write
from beamport.store.errors import VersionConflict
from beamport.store.jobs import JobChange, JobRecord
from beamport.store.metrics import MetricRecord, StageRecord
from beamport.store.work_items import (
    WORK_CANCELLED,
    WORK_DONE,
    WORK_FAILED,
    WORK_LEASED,
    WORK_PENDING,
    WorkItemChange,
    WorkItemRecord,
)
from beamport.store.workers import (
    WORKER_BROKEN,
    WORKER_IDLE,
    WORKER_LIVE_STATES,
    WORKER_LOST,
    WORKER_REPORTING_STATES,
    WORKER_RUNNING,
    WORKER_SHUTDOWN,
    WorkerRecord,
)

log = logging.getLogger(__name__)

_RETRIES = 50
DEFAULT_LEASE_US = 60_000_000
MAX_LEASE_US = 600_000_000
# After a start, how long workers (whose reports failed while the server was down) have to report again
# before their leases or health deadlines are judged.
RESTART_GRACE_US = 15_000_000
# A worker waiting for work is heard from at its lease polls: a Beamport worker polls at least every 2.5 s (a
# lease of any job's work waits up to 2 s at the service, http/execution.py). A poll is noted at most once per
# idle interval (the worker's health interval, if longer), and an idle worker is lost after 3 of them.
MIN_IDLE_INTERVAL_US = 2_500_000
REPORT_INTERVAL = "1s"
# Dataflow retries a failing batch work item up to 4 times: the 4th failure fails the job.
MAX_FAILURES = 4
ANY = "-"  # AIP-159: a wildcard for the project, location or job of a lease

_EXECUTION_STATE = {
    model.RUNNING: "EXECUTION_STATE_RUNNING",
    model.DONE: "EXECUTION_STATE_SUCCEEDED",
    model.FAILED: "EXECUTION_STATE_FAILED",
    model.CANCELLED: "EXECUTION_STATE_CANCELLED",
}
_STOP_STATES = (model.CANCELLING,)
_ABORTED = RPC_CODE["ABORTED"]  # the work item must stop (its lease was revoked)
# Errors that another attempt would meet again (the job cannot run as submitted): no retry.
_PERMANENT_CODES = {RPC_CODE[s] for s in ("INVALID_ARGUMENT", "NOT_FOUND", "PERMISSION_DENIED", "FAILED_PRECONDITION")}


def _duration_us(value: str | None, default: int) -> int:
    if not value:
        return default
    return min(max(int(float(value[:-1]) * 1_000_000), 1_000_000), MAX_LEASE_US)


def metric_key(update: dict) -> str:
    """What makes a MetricUpdate the same metric as an earlier one: its structured name."""
    return orjson.dumps(update.get("name", {}), option=orjson.OPT_SORT_KEYS).decode()


def failures_of(item: WorkItemRecord) -> list[dict]:
    return orjson.loads(item.failures or "[]")


def idle_interval_us(worker: WorkerRecord) -> int:
    """How often the service notes the lease polls of a worker waiting for work (see MIN_IDLE_INTERVAL_US)."""
    return max(worker.report_interval_us, MIN_IDLE_INTERVAL_US)


class ExecutionService:
    def __init__(
        self,
        store: Store,
        clock=wire.now_us,
        default_report_interval_us: int = 5_000_000,
        work: WorkNotifier | None = None,
        streaming_engine: str | None = None,
        saved_state: engines.SavedState | None = None,
    ):
        self.store = store
        self.clock = clock
        self.work = work or WorkNotifier()  # told when work is put back to be leased again
        self.started_us = clock()
        # The health report interval a worker is first given (the registry adapts it per worker).
        self.default_report_interval_us = default_report_interval_us
        self.streaming_engine = streaming_engine  # an engine's name, or None: see beamport.service.engines
        # Where jobs on engines that keep state start from (the snapshot service); None: nowhere.
        self.saved_state = saved_state

    # -- the work-item protocol -------------------------------------------------

    def lease(self, project_id: str, location: str, job_id: str, body: dict, projects: set[str] | None = None) -> dict:
        """Lease work of a job, or with `-` for the job (and project, location) of any job that has some (of
        `projects` only, unless None)."""
        request = schema.check(body, "LeaseWorkItemRequest")
        worker_id = _worker_id(request, "lease work")
        lease_us = _duration_us(request.get("requestedLeaseDuration"), DEFAULT_LEASE_US)
        if job_id != ANY:
            load_job(self.store, project_id, location, job_id, with_detail=False)
        worker = self.store.workers.get_many([worker_id]).get(worker_id)
        if worker is not None and worker.state == WORKER_BROKEN:
            return {}  # abandoned: a broken worker gets no more work (a worker that shut down and leases
            # again is a new process under the same name: it may)
        for _ in range(_RETRIES):
            found = self._leasable(project_id, location, job_id, projects)
            if found is None:
                self._waiting(worker, worker_id, project_id, location)
                return {}
            job, item = found
            doc = document(job)
            now = self.clock()
            expected_item, expected_job = item.version, job.version
            item.state, item.worker_id = WORK_LEASED, worker_id
            item.lease_expire_us = now + lease_us
            item.start_us = now
            write = Write(
                changed_work_items=[WorkItemChange(item, expected_item)],
                workers=[self._serving(worker, worker_id, job, item, now)],
            )
            messages = []
            # The job is RUNNING once its engine runs it (CODE_ENGINE_RUNNING): a Flink job is not running
            # while it is being submitted to the cluster. A queued job waits no more.
            if doc.get("currentState") in model.NOT_STARTED_STATES and item.attempt == 1:
                if doc.get("currentState") == model.QUEUED:
                    move_to_state(doc, model.PENDING, now)
                messages.append(job_message(job.id, now, "JOB_MESSAGE_BASIC", "Workers have started successfully."))
            failures = failures_of(item)
            if item.attempt > 1:
                after = f" (worker {failures[-1]['worker']}: {failures[-1]['reason']})" if failures else ""
                messages.append(
                    job_message(
                        job.id,
                        now,
                        "JOB_MESSAGE_BASIC",
                        f"Worker {worker_id} took over work item {item.id}, attempt {item.attempt}{after}.",
                    )
                )
            if messages:
                record_from_document(doc, job)
                write.changed_jobs = [JobChange(job, expected_job)]
                write.messages = messages
            workers = autoscaling.worker_range(doc)
            if workers:
                upto = f", up to {workers.high} as its backlog asks" if workers.scales else ""
                write.autoscaling_events = [
                    autoscaling.event(
                        job.id,
                        now,
                        autoscaling.TARGET_CHANGED,
                        0,
                        workers.low,
                        f"Starting the job's work on {workers.low} worker(s){upto}.",
                    )
                ]
            try:
                commit(self.store, write)
            except VersionConflict:
                continue
            return {"workItems": [self._render_item(job, doc, item, workers)]}
        raise ApiError("ABORTED", f"Too much contention leasing work of job {job_id}; try again.")

    def _leasable(
        self, project_id: str, location: str, job_id: str, projects: set[str] | None = None
    ) -> tuple[JobRecord, WorkItemRecord] | None:
        """The oldest pending work item of the job (or of any job the wildcards match), with its job."""
        if job_id != ANY:
            job = load_job(self.store, project_id, location, job_id)
            if not job.active or document(job).get("currentState") in _STOP_STATES:
                return None
            items = [item for item in self.store.work_items.list(job_id) if item.state == WORK_PENDING]
            return (job, items[0]) if items else None
        if projects is not None and project_id != ANY and project_id not in projects:
            return None
        where = None if location == ANY else location
        # Fair across projects: among the projects with work this worker may take, the one with the fewest work
        # items running goes first (ties: the one whose waiting work is oldest), and its oldest item; so a
        # project that queues thousands of jobs delays another project's job by one lease at most. One query
        # finds it; if its job is being stopped (or that project's pending work is all of jobs that ended), the
        # projects are gone through in the same order.
        found = self.store.work_items.next_to_lease(where, projects, None if project_id == ANY else project_id)
        if found is not None and document(found[0]).get("currentState") not in _STOP_STATES:
            return found
        if project_id != ANY:
            candidates = [project_id]
        else:
            waiting = self.store.work_items.pending_projects(where, projects)
            candidates = [p.project_id for p in sorted(waiting, key=lambda p: (p.leased, p.oldest_id))]
        for project in candidates:
            item = self.store.work_items.oldest_pending(project, where)
            while item is not None:
                job = self.store.jobs.get(project, item.job_id)
                if job is not None and job.active and document(job).get("currentState") not in _STOP_STATES:
                    return job, item
                item = self.store.work_items.oldest_pending(project, where, after_id=item.id)
        return None

    def _serving(self, worker: WorkerRecord | None, worker_id: str, job: JobRecord, item: WorkItemRecord, now: int):
        """The registry entry of a worker that has just leased work."""
        if worker is None:
            worker = WorkerRecord.first_seen(
                worker_id, job.project_id, job.location, job.id, WORKER_RUNNING, now, self.default_report_interval_us
            )
        worker.project_id, worker.location, worker.job_id = job.project_id, job.location, job.id
        worker.work_item_id, worker.last_seen_us = item.id, now
        # Leasing proves it alive: its health deadline counts from now, not from its last report (which,
        # for a worker that was idle between jobs, may be long past).
        if worker.last_health_us is not None:
            worker.last_health_us = now
        if worker.state not in WORKER_REPORTING_STATES:  # idle, or lost (e.g. cut off) and back
            worker.state, worker.reason = WORKER_RUNNING, ""
        return worker

    def _waiting(self, worker: WorkerRecord | None, worker_id: str, project_id: str, location: str) -> None:
        """A lease poll that found no work: the worker is alive, and IDLE unless it still holds work. Noted at
        most once per idle interval (polls may come many times a second), and at once when its state changes."""
        now = self.clock()
        if worker is None:  # not serving any job yet: bound to the project (and location) it asks work of, if one
            worker = WorkerRecord.first_seen(
                worker_id,
                "" if project_id == ANY else project_id,
                "" if location == ANY else location,
                "",
                WORKER_IDLE,
                now,
                self.default_report_interval_us,
            )
        elif worker.state == WORKER_RUNNING and not self._holds_work(worker):  # its work ended
            worker.state, worker.reason, worker.last_seen_us = WORKER_IDLE, "", now
        elif worker.state in WORKER_LIVE_STATES:  # an unhealthy one stays so until a health report says otherwise
            if now - worker.last_seen_us < idle_interval_us(worker):
                return
            worker.last_seen_us = now
        else:  # lost (e.g. cut off) or shut down, and back
            worker.state, worker.reason, worker.last_seen_us = WORKER_IDLE, "", now
        commit(self.store, Write(workers=[worker]))

    def _holds_work(self, worker: WorkerRecord) -> bool:
        item = self.store.work_items.get(worker.work_item_id) if worker.work_item_id else None
        return item is not None and item.state == WORK_LEASED and item.worker_id == worker.worker_id

    def _render_item(
        self, job: JobRecord, doc: dict, item: WorkItemRecord, workers: autoscaling.WorkerRange | None
    ) -> dict:
        return {
            "id": str(item.id),
            "projectId": job.project_id,
            "jobId": job.id,
            "leaseExpireTime": timestamp(item.lease_expire_us),
            "reportStatusInterval": REPORT_INTERVAL,
            "initialReportIndex": str(item.next_report_index),
            # What to run: the whole pipeline of the job, on its engine (from a snapshot's state).
            "configuration": json.dumps(
                {
                    "kind": WORK_ITEM_TYPE,
                    "attempt": item.attempt,
                    "location": job.location,
                    "engine": engines.engine_of(doc, self.streaming_engine),
                    **self._restore(job, doc),
                    **({"workers": workers.as_config()} if workers else {}),
                }
            ),
        }

    def _restore(self, job: JobRecord, doc: dict) -> dict:
        """Where the job's starting state is (createdFromSnapshotId), for its engine."""
        snapshot_id = doc.get("createdFromSnapshotId")
        if not snapshot_id or self.saved_state is None:
            return {}
        restore = {"restoreFrom": self.saved_state.restore_location(job.project_id, job.location, snapshot_id)}
        if doc.get("transformNameMapping"):  # an update that renamed transforms: their state keeps its old names
            restore["stateNames"] = {new: old for old, new in doc["transformNameMapping"].items()}
        return restore

    def report_status(self, project_id: str, location: str, job_id: str, body: dict) -> dict:
        request = schema.check(body, "ReportWorkItemStatusRequest")
        worker_id = _worker_id(request, "report work status")
        statuses = request.get("workItemStatuses", [])
        for status in statuses:  # everything is checked before anything changes
            if status.get("counterUpdates"):
                raise unimplemented(
                    "counterUpdates are not implemented: Beamport's workers report metrics as metricUpdates."
                )
            self._owned_item(job_id, status)
        job = load_job(self.store, project_id, location, job_id)
        return {"workItemServiceStates": [self._apply_status(job, worker_id, status) for status in statuses]}

    def _owned_item(self, job_id: str, status: dict) -> WorkItemRecord:
        raw_id = status.get("workItemId", "")
        item = self.store.work_items.get(int(raw_id)) if raw_id.isdigit() else None
        if item is None or item.job_id != job_id:
            raise not_found(f"Work item {raw_id!r} of job {job_id} does not exist.")
        return item

    def _apply_status(self, job: JobRecord, worker_id: str, status: dict) -> dict:
        for _ in range(_RETRIES):
            item = self._owned_item(job.id, status)
            job = load_job(self.store, job.project_id, job.location, job.id)
            doc = document(job)
            now = self.clock()
            if item.state == WORK_CANCELLED or not job.active:
                return {"completeWorkStatus": {"code": 1, "message": f"Job {job.id} is {doc.get('currentState')}."}}
            if item.state != WORK_LEASED or item.worker_id != worker_id:
                lost = [f for f in failures_of(item) if f["worker"] == worker_id]
                if lost:  # this worker held the work, and lost it: tell it to stop
                    return {
                        "completeWorkStatus": {
                            "code": _ABORTED,
                            "message": f"The lease of work item {item.id} was revoked: {lost[-1]['reason']}",
                        }
                    }
                raise failed_precondition(f"Work item {item.id} is not leased to worker {worker_id}.")
            index = int(status.get("reportIndex", "0"))
            if index != item.next_report_index:
                raise failed_precondition(
                    f"reportIndex {index} of work item {item.id} does not match the expected {item.next_report_index}."
                )
            expected_item, expected_job = item.version, job.version
            item.next_report_index += 1
            item.lease_expire_us = now + _duration_us(status.get("requestedLeaseDuration"), DEFAULT_LEASE_US)
            write = Write(
                changed_work_items=[WorkItemChange(item, expected_item)],
                metrics=self._changed_metrics(job.id, status.get("metricUpdates", []), now),
            )
            answer = {
                "leaseExpireTime": timestamp(item.lease_expire_us),
                "reportStatusInterval": REPORT_INTERVAL,
                "nextReportIndex": str(item.next_report_index),
            }
            worker = self.store.workers.get_many([worker_id]).get(worker_id)
            if worker and (worker.stacks_request_us or 0) > (worker.stacks_us or 0):
                answer["harnessData"] = {HARNESS_SEND_STACKS: True}
            progress = status.get("reportedProgress") or {}
            if progress.get("fractionConsumed") is not None:
                item.progress = min(max(float(progress["fractionConsumed"]), 0.0), 1.0)
            remaining = (progress.get("remainingParallelism") or {}).get("value")
            if remaining is not None:
                target = self._scale(doc, job.id, float(remaining), now, write)
                if target:
                    answer.setdefault("harnessData", {})[autoscaling.HARNESS_TARGET_WORKERS] = target
            if doc.get("currentState") == model.DRAINING:
                answer.setdefault("harnessData", {})[HARNESS_DRAIN] = True
            if doc.get("currentState") == model.CANCELLING:
                item.state, item.end_us = WORK_CANCELLED, now
                self._end_job(doc, model.CANCELLED, now, write)
                answer = {"completeWorkStatus": {"code": 1, "message": f"Job {job.id} was cancelled."}}
            elif status.get("completed") and status.get("errors"):
                reason = "; ".join(e.get("message") or f"error {e.get('code')}" for e in status["errors"])
                permanent = any(e.get("code") in _PERMANENT_CODES for e in status["errors"])
                self._fail_attempt(doc, item, reason, now, write, permanent=permanent)
            elif status.get("completed"):
                item.state, item.end_us, item.progress = WORK_DONE, now, 1.0
                # A draining job's work completes once it has flushed: the job ends drained.
                self._end_job(
                    doc, model.DRAINED if doc.get("currentState") == model.DRAINING else model.DONE, now, write
                )
            if write.messages or answer.get("completeWorkStatus"):
                record_from_document(doc, job)
                write.changed_jobs = [JobChange(job, expected_job)]
            if self._commit(write, item):
                return answer
        raise ApiError("ABORTED", f"Too much contention reporting work of job {job.id}; try again.")

    def _commit(self, write: Write, item: WorkItemRecord) -> bool:
        """Write a change of a work item (False: it changed meanwhile, read again); if the item is waiting
        for a worker again, wake the workers waiting for work."""
        try:
            commit(self.store, write)
        except VersionConflict:
            return False
        if item.state == WORK_PENDING:
            self.work.notify()
        return True

    def _scale(self, doc: dict, job_id: str, remaining: float, now: int, write: Write) -> int | None:
        """The job's target worker count for the backlog its worker reports (an event when it changes)."""
        workers = autoscaling.worker_range(doc)
        if workers is None:
            return None
        target = workers.target(remaining) if workers.scales else workers.low
        last = self.store.messages.latest_autoscaling_event(job_id, autoscaling.TARGET_CHANGED)
        if last is None or last.target_workers != target:
            changed = self.store.messages.latest_autoscaling_event(job_id, autoscaling.CURRENT_CHANGED)
            current = changed.current_workers if changed is not None else 0
            verb = "Raised" if last is None or target > last.target_workers else "Lowered"
            write.autoscaling_events = [
                autoscaling.event(
                    job_id,
                    now,
                    autoscaling.TARGET_CHANGED,
                    current,
                    target,
                    f"{verb} the target number of workers to {target} (between {workers.low} and {workers.high}): "
                    f"the backlog of the stage starting is {remaining:g} unit(s) of "
                    f"{autoscaling.UNIT_BYTES // 2**20} MiB.",
                )
            ]
        return target

    def _fail_attempt(
        self, doc: dict, item: WorkItemRecord, reason: str, now: int, write: Write, counts=True, permanent=False
    ) -> None:
        """The current attempt of a leased work item ended without finishing the work (the worker reported an
        error, or was lost, broken or shut down). Lease it again, or fail the job at the 4th failure, or at
        once when the error is permanent. An attempt that ends through no fault of the work (a shutdown
        notice, a server restart) is not counted."""
        job_id, worker = item.job_id, item.worker_id or "unknown"
        failures = failures_of(item)
        failures.append(
            {
                "attempt": item.attempt,
                "worker": worker,
                "reason": reason,
                "counted": counts,
                "startUs": item.start_us,
                "endUs": now,
            }
        )
        item.failures = orjson.dumps(failures).decode()
        counted = [f for f in failures if f.get("counted", True)]
        if permanent or (counts and len(counted) >= MAX_FAILURES):
            item.state, item.end_us = WORK_FAILED, now
            causes = "\n".join(f"  attempt {f['attempt']} on worker {f['worker']}: {f['reason']}" for f in counted)
            why = (
                "The job cannot run as submitted; another attempt would fail the same way."
                if permanent
                else "Workflow failed. Causes: The job failed because a work item has failed "
                f"{MAX_FAILURES} times:\n{causes}"
            )
            write.messages = [
                *write.messages,
                job_message(
                    job_id, now, "JOB_MESSAGE_ERROR", f"Work item {item.id} failed on worker {worker}: {reason}"
                ),
                job_message(job_id, now, "JOB_MESSAGE_ERROR", why),
            ]
            self._end_job(doc, model.FAILED, now, write)
            return
        item.state, item.worker_id, item.lease_expire_us, item.end_us = WORK_PENDING, None, None, now
        item.attempt += 1
        item.next_report_index, item.progress = 1, None
        left = MAX_FAILURES - len(counted)
        what = f"failed ({len(counted)} of {MAX_FAILURES} failures allowed)" if counts else "stopped"
        write.messages = [
            *write.messages,
            job_message(
                job_id,
                now,
                "JOB_MESSAGE_WARNING" if counts else "JOB_MESSAGE_BASIC",
                f"Work item {item.id} {what} on worker {worker}: {reason}\n"
                f"It will be leased again (attempt {item.attempt}; {left} more failures fail the job).",
            ),
        ]

    def release_work(self, worker_id: str, reason: str, counts: bool = True, job_id: str | None = None) -> int:
        """Revoke the leases a worker holds and lease its work again (see _fail_attempt). Returns how many."""
        items = self.store.work_items.list_leased(worker_id, job_id)
        for item in items:
            self._revoke(item.id, worker_id, reason, counts)
        return len(items)

    def _revoke(self, item_id: int, worker_id: str | None, reason: str, counts: bool) -> None:
        for _ in range(_RETRIES):
            item = self.store.work_items.get(item_id)
            if item is None or item.state != WORK_LEASED or (worker_id and item.worker_id != worker_id):
                return
            job = self.store.jobs.get(None, item.job_id)
            if job is None:
                return
            doc, now = document(job), self.clock()
            expected_item, expected_job = item.version, job.version
            write = Write()
            if doc.get("currentState") == model.CANCELLING or not job.active:
                item.state, item.end_us = WORK_CANCELLED, now
                if job.active:
                    self._end_job(doc, model.CANCELLED, now, write)
            else:
                self._fail_attempt(doc, item, reason, now, write, counts)
            write.changed_work_items = [WorkItemChange(item, expected_item)]
            record_from_document(doc, job)
            write.changed_jobs = [JobChange(job, expected_job)]
            if self._commit(write, item):
                return

    def expire_leases(self) -> None:
        """Leases nobody renewed in time: the worker stopped reporting; its work goes to another."""
        now = self.clock()
        # Workers could not report while this server was down: give them time to reach it again.
        if self.started_us + RESTART_GRACE_US >= now:
            return
        for item in self.store.work_items.list_leased(expired_before_us=now):
            self._revoke(
                item.id,
                item.worker_id,
                f"its lease expired at {timestamp(item.lease_expire_us)} without a report from the worker.",
                counts=True,
            )

    def _changed_metrics(self, job_id: str, updates: list[dict], now: int) -> list[MetricRecord]:
        """Records for the reported metrics whose value changed. Reports are cumulative: an unchanged metric
        keeps its updateTime, so getMetrics' startTime ("only what changed since") can leave it out."""
        stored = {m.metric_key: orjson.loads(m.doc) for m in self.store.metrics.list(job_id)} if updates else {}
        records = []
        for update in updates:
            key = metric_key(update)
            old = stored.get(key)
            if old is not None and {k: v for k, v in old.items() if k != "updateTime"} == update:
                continue
            records.append(
                MetricRecord(job_id, key, now, orjson.dumps({**update, "updateTime": timestamp(now)}).decode())
            )
        return records

    def _end_job(self, doc: dict, state: str, now: int, write: Write) -> None:
        move_to_state(doc, state, now)
        write.messages = [
            *write.messages,
            job_message(doc["id"], now, "JOB_MESSAGE_BASIC", "Stopping worker pool..."),
            job_message(doc["id"], now, "JOB_MESSAGE_BASIC", "Worker pool stopped."),
        ]

    # -- worker message codes -------------------------------------------------------

    def record_code_messages(self, job_id: str, messages: list[dict]) -> None:
        """Apply workerMessageCode messages (checked by the registry) to the job: messages, stage states."""

        def change(doc, now, write):
            stages = {stage.stage: stage for stage in self.store.metrics.list_stages(job_id)}
            notes, touched = [], []
            for message in messages:
                code, params = message["workerMessageCode"]["code"], message["workerMessageCode"].get("parameters", {})
                labels = message.get("labels", {})
                worker = labels.get("WORKER_ID", "a worker")
                if code == CODE_LOG:
                    notes.append(job_message(job_id, now, params["importance"], params["text"]))
                elif code == CODE_STAGE:
                    stage = stages.get(params["stage"]) or StageRecord(job_id, params["stage"], "", ordinal=len(stages))
                    stage.state, stage.worker_id = params["state"], labels.get("WORKER_ID")
                    if str(labels.get("WORK_ITEM_ID", "")).isdigit():
                        stage.work_item_id = int(labels["WORK_ITEM_ID"])
                    # Stage times are the worker's (messages reach the service in batches).
                    at = _worker_time_us(message, now)
                    if params["state"] == model.RUNNING:
                        stage.start_us = stage.start_us or at
                    else:
                        stage.end_us = at
                    stages[stage.stage] = stage
                    touched.append(stage.stage)
                elif code == CODE_WORKERS_CHANGED:
                    write.autoscaling_events = [*write.autoscaling_events, *_workers_changed(job_id, now, params)]
                elif code == CODE_ENGINE_RUNNING:
                    if doc.get("currentState") in model.NOT_STARTED_STATES:
                        move_to_state(doc, model.RUNNING, now)
                    where = params.get("detail") or "its engine"
                    notes.append(job_message(job_id, now, "JOB_MESSAGE_DETAILED", f"The job is running on {where}."))
                elif code == CODE_HARNESS_STARTED:
                    notes.append(
                        job_message(job_id, now, "JOB_MESSAGE_DETAILED", f"Worker {worker} started its harness.")
                    )
                else:
                    detail = f": {json.dumps(params, sort_keys=True)}" if params else ""
                    notes.append(
                        job_message(job_id, now, "JOB_MESSAGE_DETAILED", f"Worker {worker} reported {code}{detail}")
                    )
            write.messages = notes
            if touched:
                write.stages = [stages[name] for name in dict.fromkeys(touched)]
                doc["stageStates"] = [
                    {
                        "executionStageName": stage.stage,
                        "executionStageState": stage.state,
                        "currentStateTime": timestamp(stage.end_us or stage.start_us or now),
                    }
                    for stage in sorted(stages.values(), key=lambda s: s.ordinal)
                ]
            return True

        self._change_job(job_id, change)

    # -- what the API shows of a run -------------------------------------------------

    def get_metrics(self, project_id: str, location: str | None, job_id: str, start_us: int | None = None) -> dict:
        load_job(self.store, project_id, location, job_id, with_detail=False)
        response: dict = {"metricTime": timestamp(self.clock())}
        metrics = [orjson.loads(m.doc) for m in self.store.metrics.list(job_id, since_us=start_us)]
        if metrics:
            response["metrics"] = metrics
        return response

    def execution_details(self, project_id: str, location: str, job_id: str) -> dict:
        ids = self._stage_ids(project_id, location, job_id)
        stages = [_stage_summary(stage, ids) for stage in self.store.metrics.list_stages(job_id)]
        return {"stages": stages} if stages else {}

    def stage_execution_details(self, project_id: str, location: str, job_id: str, stage_id: str) -> dict:
        ids = self._stage_ids(project_id, location, job_id)
        stage = next((s for s in self.store.metrics.list_stages(job_id) if ids.get(s.stage, s.stage) == stage_id), None)
        if stage is None:
            raise not_found(f"Job {job_id} has no stage {stage_id!r}.")
        item = self.store.work_items.get(stage.work_item_id) if stage.work_item_id else None
        if item is None:  # a worker that did not label its messages with the work item: the job has one
            item = next(iter(self.store.work_items.list(job_id)), None)
        task_id = ids.get(stage.stage, stage.stage)
        # Attempts that ended early ran on other workers: each shows, as a failed (or moved) attempt.
        workers = [
            {
                "workerName": failure["worker"],
                "workItems": [
                    {
                        "taskId": task_id,
                        "attemptId": str(failure["attempt"]),
                        "state": "EXECUTION_STATE_FAILED",
                        **({"startTime": timestamp(failure["startUs"])} if failure.get("startUs") else {}),
                        "endTime": timestamp(failure["endUs"]),
                    }
                ],
            }
            for failure in (failures_of(item) if item else [])
        ]
        task = {
            "taskId": task_id,
            "attemptId": str(item.attempt if item else 1),
            "state": _EXECUTION_STATE.get(stage.state, "EXECUTION_STATE_UNKNOWN"),
            **_timing(stage),
        }
        workers.append({"workerName": stage.worker_id or "unknown", "workItems": [task]})
        return {"workers": workers}

    def _stage_ids(self, project_id: str, location: str, job_id: str) -> dict[str, str]:
        """Stage name -> the id the job graph gave it (S01...), for URLs and summaries."""
        doc = document(load_job(self.store, project_id, location, job_id))
        planned = doc.get("pipelineDescription", {}).get("executionPipelineStage", [])
        return {stage["name"]: stage["id"] for stage in planned if "name" in stage and "id" in stage}

    # -- what the local worker pool asks -------------------------------------------------

    def waiting_jobs(self) -> list[str]:
        """The ids of the jobs whose work waits for a worker, oldest first."""
        return self.store.work_items.pending_job_ids()

    def _change_job(self, job_id: str, change) -> None:
        """Apply `change(doc, now, write) -> bool` to the job with a version check; False means no change."""
        for _ in range(_RETRIES):
            job = self.store.jobs.get(None, job_id)
            if job is None:
                return
            doc, expected, now = document(job), job.version, self.clock()
            write = Write()
            if not change(doc, now, write):
                return
            record_from_document(doc, job)
            write.changed_jobs = [JobChange(job, expected)]
            try:
                commit(self.store, write)
                return
            except VersionConflict:
                continue
        raise ApiError("ABORTED", f"Too much contention changing job {job_id}.")

    def mark_queued(self, job_id: str, running: int) -> None:
        def change(doc, now, write):
            if doc.get("currentState") != model.PENDING:
                return False
            move_to_state(doc, model.QUEUED, now)
            write.messages = [
                job_message(
                    job_id,
                    now,
                    "JOB_MESSAGE_BASIC",
                    f"The job is queued: the {running} workers of this server are busy (beamport serve --workers).",
                )
            ]
            return True

        self._change_job(job_id, change)

    def busy_workers(self) -> set[str]:
        """Workers holding a lease."""
        return self.store.work_items.leased_worker_ids()

    def worker_exited(self, worker_id: str, reason: str, counts: bool = True) -> None:
        """A local worker process ended: work it still held is leased again (or the job fails), and the
        registry shows it gone at once (LOST, or SHUTDOWN when the server stopped it), not after its deadline."""
        self.release_work(worker_id, reason, counts)
        worker = self.store.workers.get_many([worker_id]).get(worker_id)
        if worker is not None and worker.state in WORKER_LIVE_STATES:
            worker.state = WORKER_LOST if counts else WORKER_SHUTDOWN
            worker.reason = reason.splitlines()[0] if reason else ""
            commit(self.store, Write(workers=[worker]))


def _workers_changed(job_id: str, now: int, params: dict) -> list:
    """A stage started on a number of SDK workers (CODE_WORKERS_CHANGED): the job's current count changed,
    or could not reach the target."""
    workers, target = int(params.get("workers", 0)), int(params.get("target", 0))
    events = []
    if workers != int(params.get("previous", 0)):
        events.append(
            autoscaling.event(
                job_id,
                now,
                autoscaling.CURRENT_CHANGED,
                workers,
                target,
                f"Stage {params.get('stage', '?')} runs on {workers} worker(s).",
            )
        )
    if workers < target:
        events.append(
            autoscaling.event(
                job_id,
                now,
                autoscaling.ACTUATION_FAILURE,
                workers,
                target,
                f"Could not run {target} workers: the worker's host allows {params.get('limit', workers)}.",
            )
        )
    return events


def _worker_time_us(message: dict, default: int) -> int:
    try:
        return wire.parse_timestamp_us(message.get("time"), "time") or default
    except ApiError:
        return default


def _stage_summary(stage: StageRecord, ids: dict[str, str]) -> dict:
    summary = {
        "stageId": ids.get(stage.stage, stage.stage),
        "state": _EXECUTION_STATE.get(stage.state, "EXECUTION_STATE_UNKNOWN"),
    }
    summary.update(_timing(stage))
    return summary


def _timing(stage: StageRecord) -> dict:
    """Start, end and progress. The engine reports a stage's start and end, not fractions in between,
    so a running stage's progress is its start alone (no current value) and a finished one's is 1."""
    timing: dict = {}
    points = []
    if stage.start_us:
        timing["startTime"] = timestamp(stage.start_us)
        points.append({"time": timing["startTime"], "value": 0.0})
    if stage.end_us:
        timing["endTime"] = timestamp(stage.end_us)
        if stage.state == model.DONE:
            points.append({"time": timing["endTime"], "value": 1.0})
    if points:
        timing["progress"] = {"dataPoints": points}
        if stage.state == model.DONE:
            timing["progress"]["currentProgress"] = 1.0
    return timing


def _worker_id(request: dict, to: str) -> str:
    """A request's workerId: a printable name of at most 256 characters."""
    worker_id = request.get("workerId")
    if not worker_id:
        raise invalid_argument(f"workerId is required to {to}.")
    if not isinstance(worker_id, str) or len(worker_id) > 256 or not worker_id.isprintable():
        raise invalid_argument("workerId must be a printable name of at most 256 characters.")
    return worker_id
