"""Work items and their leases: the work-item protocol workers speak (docs/worker-protocol.md).

Workers use only the public API: `workItems:lease` claims a job's work, `workItems:reportStatus` extends the
lease and carries metrics, progress, completion and errors (the job ends DONE, DRAINED or FAILED, as the
state machine lets the worker: beamport.job_states). The service answers a report for a cancelled job with
`completeWorkStatus` CANCELLED, which tells a worker to stop. A lease nobody renews, or held by a worker that
is lost, broken or shut down, is revoked: the work goes to another attempt (service/retries.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from beamport import job_states, schema, wire
from beamport.errors import RPC_CODE, failed_precondition, invalid_argument, not_found, unimplemented
from beamport.job_states import Actor
from beamport.protocol import HARNESS_DRAIN, HARNESS_SEND_STACKS, WORK_ITEM_TYPE
from beamport.service import autoscaling, engines, model, retries
from beamport.service.documents import (
    change_job,
    commit,
    document,
    end_job,
    job_message,
    load_job,
    move_to_state,
    record_from_document,
    retry_on_conflict,
    timestamp,
)
from beamport.service.execution_details import changed_metrics
from beamport.service.notify import WorkNotifier
from beamport.service.work_queue import ANY, next_leasable, note_waiting, serving
from beamport.store.base import Store, Write
from beamport.store.jobs import JobChange, JobRecord
from beamport.store.work_items import (
    WORK_CANCELLED,
    WORK_DONE,
    WORK_LEASED,
    WORK_PENDING,
    WorkItemChange,
    WorkItemRecord,
)
from beamport.store.workers import WORKER_BROKEN, WORKER_LIVE_STATES, WORKER_LOST, WORKER_SHUTDOWN

log = logging.getLogger(__name__)

DEFAULT_LEASE_US = 60_000_000
MAX_LEASE_US = 600_000_000
# After a start, how long workers (whose reports failed while the server was down) have to report again
# before their leases or health deadlines are judged.
RESTART_GRACE_US = 15_000_000
REPORT_INTERVAL = "1s"
_ABORTED = RPC_CODE["ABORTED"]  # the work item must stop (its lease was revoked)


def _duration_us(value: str | None, default: int) -> int:
    if not value:
        return default
    return min(max(int(float(value[:-1]) * 1_000_000), 1_000_000), MAX_LEASE_US)


class LeaseService:
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

    # -- leasing ----------------------------------------------------------------------

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

        def attempt() -> dict:
            found = next_leasable(self.store, project_id, location, job_id, projects)
            if found is None:
                interval = self.default_report_interval_us
                note_waiting(self.store, worker, worker_id, project_id, location, self.clock(), interval)
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
                workers=[serving(worker, worker_id, job, item, now, self.default_report_interval_us)],
                # A lease that the machine's crash loses leaves the item pending, to be leased again as when its
                # worker is lost (the worker's next report is refused, and it stops): no job is lost.
                durable=False,
            )
            messages = []
            # The job is RUNNING once its engine runs it (CODE_ENGINE_RUNNING): a Flink job is not running
            # while it is being submitted to the cluster. A queued job waits no more.
            if doc.get("currentState") in job_states.NOT_STARTED_STATES and item.attempt == 1:
                if job_states.allows(doc.get("currentState"), model.PENDING, Actor.WORKER):
                    move_to_state(doc, model.PENDING, now, Actor.WORKER)
                messages.append(job_message(job.id, now, "JOB_MESSAGE_BASIC", "Workers have started successfully."))
                stateless = engines.starts_over(doc, self.streaming_engine)
                if stateless:
                    messages.append(
                        job_message(job.id, now, "JOB_MESSAGE_WARNING", retries.stateless_notice(stateless))
                    )
            failures = retries.failures_of(item)
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
                write.autoscaling_events = [autoscaling.starting(job.id, now, workers)]
            commit(self.store, write)
            return {"workItems": [self._render_item(job, doc, item, workers)]}

        return retry_on_conflict(attempt, f"leasing work of job {job_id}")

    def _render_item(
        self, job: JobRecord, doc: dict, item: WorkItemRecord, workers: autoscaling.WorkerRange | None
    ) -> dict:
        return {
            "id": str(item.id),
            "projectId": job.project_id,
            "jobId": job.id,
            "leaseExpireTime": timestamp(_set(item.lease_expire_us)),
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
        restore: dict[str, Any] = {
            "restoreFrom": self.saved_state.restore_location(job.project_id, job.location, snapshot_id)
        }
        if doc.get("transformNameMapping"):  # an update that renamed transforms: their state keeps its old names
            restore["stateNames"] = {new: old for old, new in doc["transformNameMapping"].items()}
        return restore

    # -- reports ----------------------------------------------------------------------

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
        cancelled: list[dict] = []  # the document of a job whose cancel this report ended

        def attempt() -> dict:
            cancelled.clear()
            item = self._owned_item(job.id, status)
            record = load_job(self.store, job.project_id, job.location, job.id)
            doc = document(record)
            now = self.clock()
            if item.state == WORK_CANCELLED or not record.active:
                return {"completeWorkStatus": {"code": 1, "message": f"Job {job.id} is {doc.get('currentState')}."}}
            if item.state != WORK_LEASED or item.worker_id != worker_id:
                lost = [f for f in retries.failures_of(item) if f["worker"] == worker_id]
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
            expected_item, expected_job = item.version, record.version
            item.next_report_index += 1
            item.lease_expire_us = now + _duration_us(status.get("requestedLeaseDuration"), DEFAULT_LEASE_US)
            write = Write(
                changed_work_items=[WorkItemChange(item, expected_item)],
                metrics=changed_metrics(self.store, job.id, status.get("metricUpdates", []), now),
            )
            answer: dict[str, Any] = {
                "leaseExpireTime": timestamp(_set(item.lease_expire_us)),
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
                target = autoscaling.scale(self.store, doc, job.id, float(remaining), now, write)
                if target:
                    answer.setdefault("harnessData", {})[autoscaling.HARNESS_TARGET_WORKERS] = target
            state = doc.get("currentState")
            if state == model.DRAINING:
                answer.setdefault("harnessData", {})[HARNESS_DRAIN] = True
            if state == model.CANCELLING:
                item.state, item.end_us = WORK_CANCELLED, now
                end_job(doc, model.CANCELLED, now, write, Actor.WORKER)
                answer = {"completeWorkStatus": {"code": 1, "message": f"Job {job.id} was cancelled."}}
                cancelled.append(doc)
            elif status.get("completed") and status.get("errors"):
                reason = "; ".join(e.get("message") or f"error {e.get('code')}" for e in status["errors"])
                permanent = retries.is_permanent(status["errors"])
                stateless = engines.starts_over(doc, self.streaming_engine)
                retries.fail_attempt(
                    doc, item, reason, now, write, Actor.WORKER, permanent=permanent, stateless_engine=stateless
                )
            elif status.get("completed"):
                item.state, item.end_us, item.progress = WORK_DONE, now, 1.0
                # A draining job's work completes once it has flushed: the job ends drained.
                end_job(doc, model.DRAINED if state == model.DRAINING else model.DONE, now, write, Actor.WORKER)
            if write.messages or answer.get("completeWorkStatus"):
                record_from_document(doc, record)
                write.changed_jobs = [JobChange(record, expected_job)]
            self._commit(write, item)
            return answer

        answer = retry_on_conflict(attempt, f"reporting work of job {job.id}")
        if cancelled:
            # The worker stops its run when it hears this, but a worker that took over a cluster's run it has not
            # adopted yet (still staging: the CI run at 3f93c10) knows of no run to stop, and the cluster's job
            # would outlive the cancelled job: the service stops it too.
            engines.stop_run_left_behind(self.saved_state, cancelled[0], self.streaming_engine)
        return answer

    def _commit(self, write: Write, item: WorkItemRecord) -> None:
        """Write a change of a work item (VersionConflict: it changed meanwhile); if the item is waiting for a
        worker again, wake the workers waiting for work."""
        commit(self.store, write)
        if item.state == WORK_PENDING:
            self.work.notify()

    # -- revoking ---------------------------------------------------------------------

    def release_work(self, worker_id: str, reason: str, counts: bool = True, job_id: str | None = None) -> int:
        """Revoke the leases a worker holds and lease its work again (see retries.fail_attempt). Returns how many."""
        items = self.store.work_items.list_leased(worker_id, job_id)
        for item in items:
            self._revoke(_set(item.id), worker_id, reason, counts)
        return len(items)

    def _revoke(self, item_id: int, worker_id: str | None, reason: str, counts: bool) -> None:
        ended: list[dict] = []  # the document of a job being cancelled that ended here, without its worker

        def attempt() -> None:
            item = self.store.work_items.get(item_id)
            if item is None or item.state != WORK_LEASED or (worker_id and item.worker_id != worker_id):
                return
            job = self.store.jobs.get(None, item.job_id)
            if job is None:
                return
            doc, now = document(job), self.clock()
            expected_item, expected_job = item.version, job.version
            write = Write()
            ended.clear()
            if doc.get("currentState") == model.CANCELLING or not job.active:
                item.state, item.end_us = WORK_CANCELLED, now
                if job.active:
                    end_job(doc, model.CANCELLED, now, write, Actor.SERVICE)
                    ended.append(doc)
            else:
                stateless = engines.starts_over(doc, self.streaming_engine)
                retries.fail_attempt(
                    doc, item, reason, now, write, Actor.SERVICE, counts=counts, stateless_engine=stateless
                )
            write.changed_work_items = [WorkItemChange(item, expected_item)]
            record_from_document(doc, job)
            write.changed_jobs = [JobChange(job, expected_job)]
            self._commit(write, item)

        retry_on_conflict(attempt, f"revoking the lease of work item {item_id}")
        if ended:  # its worker is gone, and a cluster's run outlives it: nobody else would stop it
            engines.stop_run_left_behind(self.saved_state, ended[0], self.streaming_engine)

    def expire_leases(self) -> None:
        """Leases nobody renewed in time: the worker stopped reporting; its work goes to another."""
        now = self.clock()
        # Workers could not report while this server was down: give them time to reach it again.
        if self.started_us + RESTART_GRACE_US >= now:
            return
        for item in self.store.work_items.list_leased(expired_before_us=now):
            self._revoke(
                _set(item.id),
                item.worker_id,
                f"its lease expired at {timestamp(_set(item.lease_expire_us))} without a report from the worker.",
                counts=True,
            )

    # -- what the local worker pool asks ------------------------------------------------

    def waiting_jobs(self) -> list[str]:
        """The ids of the jobs whose work waits for a worker, oldest first."""
        return self.store.work_items.pending_job_ids()

    def busy_workers(self) -> set[str]:
        """Workers holding a lease."""
        return self.store.work_items.leased_worker_ids()

    def mark_queued(self, job_id: str, running: int) -> None:
        """The job's work waits because each of the `running` local workers is busy."""

        def change(doc: dict, now: int, write: Write) -> bool:
            if not job_states.allows(doc.get("currentState"), model.QUEUED, Actor.SERVICE):
                return False
            move_to_state(doc, model.QUEUED, now, Actor.SERVICE)
            write.messages = [
                job_message(
                    job_id,
                    now,
                    "JOB_MESSAGE_BASIC",
                    f"The job is queued: the {running} workers of this server are busy (beamport serve --workers).",
                )
            ]
            return True

        change_job(self.store, self.clock, job_id, change)

    def worker_exited(self, worker_id: str, reason: str, counts: bool = True) -> None:
        """A local worker process ended: work it still held is leased again (or the job fails), and the
        registry shows it gone at once (LOST, or SHUTDOWN when the server stopped it), not after its deadline."""
        self.release_work(worker_id, reason, counts)
        worker = self.store.workers.get_many([worker_id]).get(worker_id)
        if worker is not None and worker.state in WORKER_LIVE_STATES:
            worker.state = WORKER_LOST if counts else WORKER_SHUTDOWN
            worker.reason = reason.splitlines()[0] if reason else ""
            commit(self.store, Write(workers=[worker]))


def _worker_id(request: dict, to: str) -> str:
    """A request's workerId: a printable name of at most 256 characters."""
    worker_id = request.get("workerId")
    if not worker_id:
        raise invalid_argument(f"workerId is required to {to}.")
    if not isinstance(worker_id, str) or len(worker_id) > 256 or not worker_id.isprintable():
        raise invalid_argument("workerId must be a printable name of at most 256 characters.")
    return worker_id


def _set(value: int | None) -> int:
    """A stored work item's id, or a leased one's lease expiry: always set (None only before the first write)."""
    assert value is not None
    return value
