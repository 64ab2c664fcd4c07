"""The worker registry: what workers tell the service through WorkerMessages, and what the service does
about it.

Every worker message carries labels (JOB_ID, WORKER_ID, ...). Health reports, CPU samples, lifecycle
events and shutdown notices update the worker's entry; message codes go to the job (its log, its stage
states). The service acts on what it hears: a worker that reports itself broken, sends a shutdown notice,
or misses its health deadline loses its leases and its work is leased to another worker
(LeaseService.release_work). The health report interval is the service's to set, per worker: longer
when many workers report, shorter for a worker it is worried about. A worker waiting for work sends no
reports: its lease polls say it is alive (work_queue.note_waiting), and it is lost when they stop.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import overload

import orjson

from beamport import schema, wire
from beamport.errors import ApiError, failed_precondition, invalid_argument, not_found
from beamport.polling import wait_until
from beamport.protocol import CODE_LOG, CODE_STACKTRACES, CODE_STAGE, CONTAINER_START, LABEL_JOB, LABEL_WORKER
from beamport.service import model
from beamport.service.documents import commit, job_message, load_job, timestamp
from beamport.service.leases import RESTART_GRACE_US, LeaseService
from beamport.service.stages import StageRecorder
from beamport.service.usage import JobUsage
from beamport.service.work_queue import idle_interval_us
from beamport.store.base import Store, Write
from beamport.store.work_items import WorkItemRecord
from beamport.store.workers import (
    WORKER_BROKEN,
    WORKER_LIVE_STATES,
    WORKER_LOST,
    WORKER_REPORTING_STATES,
    WORKER_RUNNING,
    WORKER_SHUTDOWN,
    WORKER_UNHEALTHY,
    CpuSample,
    WorkerEvent,
    WorkerRecord,
)

log = logging.getLogger(__name__)

MAX_WORKER_MESSAGES = 1000
MISSED_INTERVALS = (
    3  # a worker not heard from (health report, or lease poll while idle) for this many intervals is lost
)
MIN_INTERVAL_US = 200_000
MAX_INTERVAL_US = 60_000_000
HEALTH_REPORTS_PER_S = 200  # past this many live workers' reports a second, everyone reports less often
CPU_SAMPLES_KEPT_US = 3_600_000_000  # the CPU series of the last hour
GONE_WORKERS_KEPT_US = 7 * 86_400_000_000  # workers lost, broken or shut down: a week of history
PRUNE_EVERY_US = 60_000_000
STACKS_WAIT_S = 10.0

_REGISTRY_KINDS = ("workerHealthReport", "workerMetrics", "workerLifecycleEvent", "workerShutdownNotice")
# Kinds of WorkerMessage Beamport's engines have no use for (streaming and sampling reports): refused whole.
_UNSUPPORTED_KINDS = ("perWorkerMetrics", "streamingScalingReport", "workerThreadScalingReport", "dataSamplingReport")
_SHUTDOWN_REASONS = ("UNKNOWN", "PREEMPTION")


class WorkerRegistry:
    def __init__(self, store: Store, leases: LeaseService, stages: StageRecorder, clock=wire.now_us):
        self.store = store
        self.leases = leases  # the work a worker holds, released when it is lost, broken or leaves
        self.stages = stages  # what message codes say of a job
        self.clock = clock
        self._jobs: dict[str, _JobRef] = {}
        self._live, self._live_at = 0, 0.0  # reporting workers, as counted at that monotonic time
        self._pruned_us: int | None = None  # when the sweep last dropped old workers and samples
        self.usage = JobUsage(store)  # what each job used, from its workers' CPU samples and health reports

    def _job(self, project_id: str, location: str, job_id: str) -> _JobRef:
        """Where a job lives, or NOT_FOUND. Remembered: a job never moves and is never deleted, and every
        worker message names one."""
        ref = self._jobs.get(job_id)
        if ref is None:
            job = load_job(self.store, None, None, job_id, with_detail=False)
            ref = _JobRef(job.id, job.project_id, job.location)
            if len(self._jobs) > 100_000:
                self._jobs.clear()
            self._jobs[job_id] = ref
        if ref.project_id != project_id or ref.location != location:
            load_job(self.store, project_id, location, job_id, with_detail=False)  # raises NOT_FOUND
        return ref

    @property
    def base_interval_us(self) -> int:
        return self.leases.default_report_interval_us

    # -- WorkerMessages --------------------------------------------------------------

    def worker_messages(self, project_id: str, location: str, body: dict) -> dict:
        request = schema.check(body, "SendWorkerMessagesRequest")
        messages = request.get("workerMessages", [])
        if len(messages) > MAX_WORKER_MESSAGES:
            raise invalid_argument(f"At most {MAX_WORKER_MESSAGES} worker messages per request, got {len(messages)}.")
        jobs: dict[str, _JobRef] = {}
        for i, message in enumerate(messages):  # everything is checked before anything changes
            _check_message(message, i)
            job_id = message["labels"][LABEL_JOB]
            if job_id not in jobs:
                jobs[job_id] = self._job(project_id, location, job_id)
        now = self.clock()
        ids = {m["labels"][LABEL_WORKER] for m in messages if LABEL_WORKER in m["labels"]}
        workers = self.store.workers.get_many(ids)
        newcomers = len(ids) - len(workers)  # live from this batch on, not counted in the store yet
        update = _Update(now)
        responses: list[dict] = []
        codes: dict[str, list[dict]] = {}
        for message in messages:
            labels = message["labels"]
            job = jobs[labels[LABEL_JOB]]
            if "workerMessageCode" in message:
                if message["workerMessageCode"]["code"] == CODE_STACKTRACES:
                    stacks = message["workerMessageCode"].get("parameters", {}).get("stacks", [])
                    update.stacks.append((labels[LABEL_WORKER], orjson.dumps(stacks).decode()))
                else:
                    codes.setdefault(job.id, []).append(message)
                responses.append({})
                continue
            worker = self._entry(workers, labels, job, now)
            update.touch(worker)
            if "workerHealthReport" in message:
                responses.append(self._health(worker, message["workerHealthReport"], update, newcomers))
            elif "workerMetrics" in message:
                for sample in message["workerMetrics"].get("cpuTime", []):
                    at = _time_us(sample.get("timestamp"), now)
                    total, rate = int(sample.get("totalMs", 0)), float(sample.get("rate", 0.0))
                    update.samples.append(CpuSample(worker.worker_id, at, total, rate))
                    if at >= (worker.cpu_us or 0):
                        worker.cpu_total_ms, worker.cpu_rate, worker.cpu_us = total, rate, at
                responses.append({"workerMetricsResponse": {}})
            elif "workerLifecycleEvent" in message:
                self._lifecycle(worker, message, update)
                responses.append({})
            else:
                self._shutdown(worker, message["workerShutdownNotice"], update)
                responses.append({"workerShutdownNoticeResponse": {}})
        commit(
            self.store,
            Write(
                workers=list(update.workers.values()),
                cpu_samples=update.samples,
                worker_events=update.events,
                messages=update.messages,
            ),
        )
        self.usage.record(messages, now)
        for worker_id, stacks in update.stacks:
            self.store.workers.save_stacks(worker_id, stacks, now)
        for worker_id, reason, counts in update.releases:
            self.leases.release_work(worker_id, reason, counts)
        for job_id, job_messages in codes.items():
            self.stages.record_code_messages(job_id, job_messages)
        return {"workerMessageResponses": responses}

    def _entry(self, workers: dict[str, WorkerRecord], labels: dict, job, now: int) -> WorkerRecord:
        worker_id = labels[LABEL_WORKER]
        worker = workers.get(worker_id)
        if worker is None:
            worker = workers[worker_id] = WorkerRecord.first_seen(
                worker_id, job.project_id, job.location, job.id, WORKER_RUNNING, now, self.base_interval_us
            )
        if worker.job_id != job.id:  # the worker moved on to another job
            worker.project_id, worker.location, worker.job_id, worker.work_item_id = (
                job.project_id,
                job.location,
                job.id,
                None,
            )
        worker.labels = orjson.dumps(labels, option=orjson.OPT_SORT_KEYS).decode()
        worker.last_seen_us = now
        return worker

    def _health(self, worker: WorkerRecord, report: dict, update: _Update, newcomers: int) -> dict:
        now = update.now
        was = worker.state
        previous = worker.last_health_us
        worker.last_health_us = now
        worker.health = orjson.dumps(report).decode()
        if report.get("vmStartupTime"):
            worker.vm_startup_us = _time_us(report["vmStartupTime"], None)
        if was in (WORKER_BROKEN, WORKER_SHUTDOWN):
            pass  # abandoned, or leaving: late reports change nothing
        elif report.get("vmIsBroken"):
            worker.state, worker.reason = WORKER_BROKEN, report.get("msg") or "the worker reported it is broken"
            update.note(
                worker,
                "JOB_MESSAGE_WARNING",
                f"Worker {worker.worker_id} reported it is broken ({worker.reason}): it gets no more work.",
            )
            update.releases.append(
                (worker.worker_id, f"worker {worker.worker_id} reported it is broken: {worker.reason}", True)
            )
        elif report.get("vmIsHealthy", True) is False:
            worker.state, worker.reason = WORKER_UNHEALTHY, report.get("msg") or "the worker reported it is unhealthy"
            if was != WORKER_UNHEALTHY:
                update.note(worker, "JOB_MESSAGE_WARNING", f"Worker {worker.worker_id} is unhealthy: {worker.reason}")
        else:
            if was == WORKER_UNHEALTHY:
                update.note(worker, "JOB_MESSAGE_BASIC", f"Worker {worker.worker_id} is healthy again.")
            worker.state, worker.reason = WORKER_RUNNING, ""
        late = previous is not None and now - previous > 1.5 * worker.report_interval_us
        worker.report_interval_us = self._interval_for(worker, newcomers, worried=late)
        return {"workerHealthReportResponse": {"reportInterval": wire.format_duration_us(worker.report_interval_us)}}

    def _interval_for(self, worker: WorkerRecord, newcomers: int, worried: bool) -> int:
        """How often this worker should report: the base interval, stretched when so many workers report
        that their reports would pass HEALTH_REPORTS_PER_S, shortened for a worker that is unhealthy or
        reported late (so that the service learns soon whether it is lost)."""
        live = self._live_count() + newcomers
        interval = max(self.base_interval_us, live * 1_000_000 // HEALTH_REPORTS_PER_S)
        if worker.state == WORKER_UNHEALTHY or worried:
            interval = self.base_interval_us // 5
        return min(max(interval, MIN_INTERVAL_US), MAX_INTERVAL_US)

    def _live_count(self) -> int:
        # Counted at most once a second: every health report asks. Idle workers send none: not counted.
        now = time.monotonic()
        if now - self._live_at > 1.0:
            self._live = self.store.workers.count(WORKER_REPORTING_STATES)
            self._live_at = now
        return self._live

    def _lifecycle(self, worker: WorkerRecord, message: dict, update: _Update) -> None:
        event = message["workerLifecycleEvent"]
        name = event.get("event") or "UNKNOWN"
        at = _time_us(message.get("time"), update.now)
        if event.get("containerStartTime"):
            worker.container_start_us = _time_us(event["containerStartTime"], None)
        detail = {"metadata": event.get("metadata", {})}
        update.events.append(WorkerEvent(worker.worker_id, worker.job_id, at, name, orjson.dumps(detail).decode()))
        if name == CONTAINER_START:
            labels = orjson.loads(worker.labels)
            where = ", ".join(
                f"{k.lower()} {v}" for k, v in sorted(labels.items()) if k.startswith("CONTAINER_") or k == "HOST"
            )
            update.note(
                worker, "JOB_MESSAGE_BASIC", f"Worker {worker.worker_id} started" + (f" ({where})." if where else ".")
            )

    def _shutdown(self, worker: WorkerRecord, notice: dict, update: _Update) -> None:
        reason = notice.get("reason") or "UNKNOWN"
        if worker.state == WORKER_SHUTDOWN:
            return
        worker.state, worker.reason = WORKER_SHUTDOWN, f"shutdown notice ({reason})"
        update.events.append(
            WorkerEvent(
                worker.worker_id,
                worker.job_id,
                update.now,
                "SHUTDOWN_NOTICE",
                orjson.dumps({"reason": reason}).decode(),
            )
        )
        update.note(
            worker,
            "JOB_MESSAGE_BASIC",
            f"Worker {worker.worker_id} is shutting down ({reason}): its work moves to another worker.",
        )
        # Not the work's fault: a preempted worker's work is not counted as failed.
        update.releases.append((worker.worker_id, f"worker {worker.worker_id} is shutting down ({reason}).", False))

    # -- what the service does on its own ----------------------------------------------------

    def sweep(self) -> None:
        """Mark workers past their deadline lost (those holding work lose it), expire leases, drop old workers."""
        now = self.clock()
        grace_until = self.leases.started_us + RESTART_GRACE_US  # reports failed while we were down
        # The shorter deadline first (a worker holding work must report on its health interval), so that the
        # leases are read only when some worker is late.
        late = self.store.workers.list_overdue(WORKER_LIVE_STATES, MISSED_INTERVALS, now) if grace_until < now else []
        busy = self.leases.busy_workers() if late else set()
        lost = []
        for worker in late:
            heard = timestamp(_heard_us(worker))
            if worker.worker_id in busy:
                if worker.last_health_us is None:
                    continue  # it never sent a health report: its leases alone say whether it is alive
                worker.reason = f"no health report since {timestamp(worker.last_health_us)}"
            elif max(_heard_us(worker) + MISSED_INTERVALS * idle_interval_us(worker), grace_until) < now:
                worker.reason = f"no report or lease poll since {heard}"
            else:
                continue  # waiting for work: its lease polls are noted once per idle interval
            worker.state = WORKER_LOST
            lost.append(worker)
        if lost:
            update = _Update(now)
            for worker in lost:
                if worker.worker_id in busy:  # its job is told; the work of an idle worker is nobody's concern
                    update.note(
                        worker,
                        "JOB_MESSAGE_WARNING",
                        f"Worker {worker.worker_id} was lost: {worker.reason} ({MISSED_INTERVALS} report intervals).",
                    )
            commit(self.store, Write(workers=lost, messages=update.messages))
            for worker in lost:
                if worker.worker_id in busy:
                    self.leases.release_work(worker.worker_id, f"the worker was lost: {worker.reason}.", True)
        self.leases.expire_leases()
        if self._pruned_us is None or now - self._pruned_us >= PRUNE_EVERY_US:
            self._pruned_us = now
            self.store.workers.prune(now - CPU_SAMPLES_KEPT_US, now - GONE_WORKERS_KEPT_US, WORKER_LIVE_STATES)

    # -- what the API and the CLI show -------------------------------------------------------------

    def list_workers(
        self,
        job_id: str | None = None,
        include_gone: bool = False,
        projects: set[str] | None = None,
        project_id: str | None = None,
        location: str | None = None,
    ) -> dict:
        """The registry's live workers, or all (of jobs of `projects` only, unless None). With `project_id` (or
        `location`): that project's workers, and those that serve no job yet (they wait for any project's work)."""
        states = () if include_gone else WORKER_LIVE_STATES
        if project_id is not None:
            projects = {project_id, ""} if projects is None else {project_id, ""} & projects
        locations = None if location is None else {location, ""}
        workers = self.store.workers.list(job_id, states, projects, locations)
        # The progress of the work each live worker holds (workers that left hold none).
        items = {
            w.work_item_id: self.store.work_items.get(w.work_item_id)
            for w in workers
            if w.work_item_id and w.state in WORKER_LIVE_STATES
        }
        return {"workers": [self.render(w, items.get(w.work_item_id) if w.work_item_id else None) for w in workers]}

    def get_worker(self, worker_id: str, projects: set[str] | None = None) -> dict:
        worker = self.store.workers.get_many([worker_id]).get(worker_id)
        if worker is None or (projects is not None and worker.project_id not in projects):
            raise not_found(f"Worker {worker_id!r} is not known to this service.")
        item = self.store.work_items.get(worker.work_item_id) if worker.work_item_id else None
        out = self.render(worker, item)
        out["cpuTime"] = [
            {"timestamp": timestamp(s.time_us), "totalMs": str(s.total_ms), "rate": s.rate}
            for s in self.store.workers.list_cpu_samples(worker_id, 120)
        ]
        out["lifecycleEvents"] = [
            {"time": timestamp(e.time_us), "event": e.event, "jobId": e.job_id, **orjson.loads(e.detail)}
            for e in self.store.workers.list_events(worker_id)
        ]
        return out

    def render(self, worker: WorkerRecord, item: WorkItemRecord | None = None) -> dict:
        out = {
            "workerId": worker.worker_id,
            "projectId": worker.project_id,
            "location": worker.location,
            "jobId": worker.job_id,
            "state": worker.state,
            "labels": orjson.loads(worker.labels),
            "firstSeenTime": timestamp(worker.first_seen_us),
            "lastSeenTime": timestamp(worker.last_seen_us),
            "reportInterval": wire.format_duration_us(worker.report_interval_us),
        }
        optional = {
            "reason": worker.reason or None,
            "containerStartTime": worker.container_start_us and timestamp(worker.container_start_us),
            "vmStartupTime": worker.vm_startup_us and timestamp(worker.vm_startup_us),
            "lastHealthTime": worker.last_health_us and timestamp(worker.last_health_us),
            "workItemId": worker.work_item_id and str(worker.work_item_id),
        }
        out.update({k: v for k, v in optional.items() if v})
        if item is not None and item.worker_id == worker.worker_id and item.progress is not None:
            out["workItemProgress"] = item.progress
        if worker.health != "{}":
            out["health"] = orjson.loads(worker.health)
        if worker.cpu_us is not None:
            out["cpu"] = {
                "timestamp": timestamp(worker.cpu_us),
                "totalMs": str(worker.cpu_total_ms),
                "rate": worker.cpu_rate,
            }
        return out

    def stacktraces(
        self, project_id: str, location: str, job_id: str, body: dict, wait_s: float = STACKS_WAIT_S
    ) -> dict:
        """debug.getWorkerStacktraces: ask a live worker of the job for its thread stacks, wait for them."""
        request = schema.check(body, "GetWorkerStacktracesRequest")
        load_job(self.store, project_id, location, job_id, with_detail=False)
        worker_id = request.get("workerId")
        if not worker_id:
            raise invalid_argument("workerId is required: the worker whose thread stacks to get.")
        worker = self.store.workers.get_many([worker_id]).get(worker_id)
        if worker is None or worker.job_id != job_id:
            raise not_found(f"Job {job_id} has no worker {worker_id!r}.")
        if worker.state not in WORKER_REPORTING_STATES or worker.work_item_id is None:
            raise failed_precondition(f"Worker {worker_id} is not running work of job {job_id} ({worker.state}).")
        asked = self.clock()
        self.store.workers.request_stacks(worker_id, asked)
        worker = wait_until(
            lambda: self.store.workers.get_many([worker_id])[worker_id],
            lambda worker: (worker.stacks_us or 0) >= asked,
            wait_s,
            0.05,
        )
        if worker is None:
            raise ApiError(
                "DEADLINE_EXCEEDED", f"Worker {worker_id} did not send its thread stacks within {wait_s:g} s."
            )
        stacks = orjson.loads(worker.stacks)
        return {"sdks": [{"sdkId": f"{worker_id}/python", "stacks": stacks}]} if stacks else {}


@dataclass(frozen=True)
class _JobRef:
    id: str
    project_id: str
    location: str


class _Update:
    """What one batch of messages (or one sweep) changes in the registry, written at once."""

    def __init__(self, now: int):
        self.now = now
        self.workers: dict[str, WorkerRecord] = {}
        self.samples: list[CpuSample] = []
        self.events: list[WorkerEvent] = []
        self.messages: list = []
        self.releases: list[tuple[str, str, bool]] = []
        self.stacks: list[tuple[str, str]] = []

    def touch(self, worker: WorkerRecord) -> None:
        self.workers[worker.worker_id] = worker

    def note(self, worker: WorkerRecord, importance: str, text: str) -> None:
        self.messages.append(job_message(worker.job_id, self.now, importance, text))


def _check_message(message: dict, i: int) -> None:
    labels = message.get("labels") or {}
    if not labels.get(LABEL_JOB):
        raise invalid_argument(f"workerMessages[{i}] has no {LABEL_JOB} label.")
    kinds = [kind for kind in (*_REGISTRY_KINDS, "workerMessageCode", *_UNSUPPORTED_KINDS) if kind in message]
    if not kinds:
        raise invalid_argument(
            f"workerMessages[{i}] carries nothing: expected one of workerHealthReport, workerMetrics, "
            "workerLifecycleEvent, workerShutdownNotice or workerMessageCode."
        )
    if len(kinds) > 1:
        raise invalid_argument(f"workerMessages[{i}] carries {' and '.join(kinds)}: a worker message is one of them.")
    kind = kinds[0]
    if kind in _UNSUPPORTED_KINDS:
        raise ApiError("UNIMPLEMENTED", f"workerMessages[{i}] is a {kind}, which Beamport's engines do not use.")
    if kind == "workerMessageCode":
        code = message["workerMessageCode"]
        if not code.get("code"):
            raise invalid_argument(f"workerMessages[{i}].workerMessageCode has no code.")
        _check_code(code, i)
        if code["code"] == CODE_STACKTRACES and not labels.get(LABEL_WORKER):
            raise invalid_argument(f"workerMessages[{i}] has no {LABEL_WORKER} label.")
        return
    if not labels.get(LABEL_WORKER):
        raise invalid_argument(f"workerMessages[{i}] is a {kind} without a {LABEL_WORKER} label.")
    if kind == "workerShutdownNotice":
        reason = message[kind].get("reason") or "UNKNOWN"
        if reason not in _SHUTDOWN_REASONS:
            raise invalid_argument(f"workerMessages[{i}].workerShutdownNotice.reason must be UNKNOWN or PREEMPTION.")
    if kind == "workerLifecycleEvent" and not message[kind].get("event"):
        raise invalid_argument(f"workerMessages[{i}].workerLifecycleEvent has no event.")


def _check_code(code: dict, index: int) -> None:
    params = code.get("parameters", {})
    if code["code"] == CODE_LOG:
        if params.get("importance") not in model.IMPORTANCE_RANK or not isinstance(params.get("text"), str):
            raise invalid_argument(
                f"workerMessages[{index}]: {CODE_LOG} needs parameters importance (a JOB_MESSAGE_* name) and text."
            )
    elif code["code"] == CODE_STAGE:
        if not isinstance(params.get("stage"), str) or params.get("state") not in (
            model.RUNNING,
            model.DONE,
            model.FAILED,
        ):
            raise invalid_argument(
                f"workerMessages[{index}]: {CODE_STAGE} needs parameters stage and state "
                "(JOB_STATE_RUNNING, JOB_STATE_DONE or JOB_STATE_FAILED)."
            )
    elif code["code"] == CODE_STACKTRACES:
        stacks = params.get("stacks")
        if not isinstance(stacks, list):
            raise invalid_argument(f"workerMessages[{index}]: {CODE_STACKTRACES} needs parameters stacks (a list).")
        schema.check({"sdks": [{"stacks": stacks}]}, "GetWorkerStacktracesResponse", f"workerMessages[{index}]")


def _heard_us(worker: WorkerRecord) -> int:
    """When the service last heard from a worker: a health report, any worker message, a lease or a lease poll."""
    return max(worker.last_health_us or 0, worker.last_seen_us)


@overload
def _time_us(value: str | None, default: int) -> int: ...
@overload
def _time_us(value: str | None, default: None) -> int | None: ...
def _time_us(value: str | None, default: int | None) -> int | None:
    try:
        return wire.parse_timestamp_us(value, "time") or default
    except ApiError:
        return default
