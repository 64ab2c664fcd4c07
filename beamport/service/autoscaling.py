"""How many workers a job runs on: Dataflow's numWorkers and maxNumWorkers, and throughput-based scaling
between them from the backlog the job's worker reports.

A Beamport "worker" of a job is an SDK worker of its run (a process of the engine): its work item runs on
one worker host, whose cores bound the count. The worker reports, as each stage starts, the backlog in
front of it as `reportedProgress.remainingParallelism`: how many units of work (UNIT_BYTES of input each)
could proceed in parallel. The service answers the target worker count in `harnessData`, clamped to the
job's range, and records every change as an AutoscalingEvent (messages.list `autoscalingEvents`). The worker
reports, as each stage starts, how many SDK workers it runs on (CODE_WORKERS_CHANGED): the job's current count.
Every job gets an initial TARGET_NUM_WORKERS_CHANGED event, as on Dataflow: at its lease when it names its
workers, else when its engine starts it (CODE_ENGINE_RUNNING, with the count the engine chose).
"""

from __future__ import annotations

from dataclasses import dataclass

from beamport.protocol import BACKLOG_UNIT_BYTES as UNIT_BYTES
from beamport.protocol import HARNESS_TARGET_WORKERS
from beamport.service.documents import timestamp
from beamport.store.base import Store, Write
from beamport.store.messages import AutoscalingEventRecord

__all__ = [
    "UNIT_BYTES",
    "HARNESS_TARGET_WORKERS",
    "WorkerRange",
    "worker_range",
    "starting",
    "engine_started",
    "scale",
    "workers_changed",
    "event",
    "render_event",
]

TARGET_CHANGED = "TARGET_NUM_WORKERS_CHANGED"
CURRENT_CHANGED = "CURRENT_NUM_WORKERS_CHANGED"
ACTUATION_FAILURE = "ACTUATION_FAILURE"


@dataclass(frozen=True)
class WorkerRange:
    low: int
    high: int

    @property
    def scales(self) -> bool:
        return self.high > self.low

    def target(self, remaining_parallelism: float) -> int:
        return min(max(int(-(-remaining_parallelism // 1)), self.low), self.high)

    def as_config(self) -> dict:
        return {"min": self.low, "max": self.high}


def worker_range(doc: dict) -> WorkerRange | None:
    """The job's worker range: workerPools[0].numWorkers to autoscalingSettings.maxNumWorkers (no scaling
    with algorithm NONE), overridden by runtimeUpdatableParams min/maxNumWorkers (jobs.update). None when
    the job says nothing (the worker's own default applies)."""
    pools = (doc.get("environment") or {}).get("workerPools") or [{}]
    pool = pools[0]
    settings = pool.get("autoscalingSettings") or {}
    runtime = doc.get("runtimeUpdatableParams") or {}
    low = runtime.get("minNumWorkers") or pool.get("numWorkers")
    high = runtime.get("maxNumWorkers") or settings.get("maxNumWorkers")
    if not low and not high:
        return None
    low = max(1, int(low or 1))
    high = max(low, int(high or low))
    if settings.get("algorithm") == "AUTOSCALING_ALGORITHM_NONE" and not runtime.get("maxNumWorkers"):
        high = low
    return WorkerRange(low, high)


def starting(job_id: str, now: int, workers: WorkerRange) -> AutoscalingEventRecord:
    """The job's work starts (its first lease, and each attempt's): its target is the range's low end."""
    upto = f", up to {workers.high} as its backlog asks" if workers.scales else ""
    return event(
        job_id, now, TARGET_CHANGED, 0, workers.low, f"Starting the job's work on {workers.low} worker(s){upto}."
    )


def engine_started(store: Store, job_id: str, now: int, workers: object) -> list[AutoscalingEventRecord]:
    """The engine runs the job on `workers` SDK workers (a positive integer from the worker; else Beam's portable
    default, one). Dataflow reports every job's initial worker count as an event (Airflow's
    DataflowJobAutoScalingEventTrigger waits for one): a job that named its workers had it at its lease
    (`starting`); one that did not gets it here, once."""
    if store.messages.latest_autoscaling_event(job_id, TARGET_CHANGED) is not None:
        return []
    count = workers if isinstance(workers, int) and not isinstance(workers, bool) and workers > 0 else 1
    return [starting(job_id, now, WorkerRange(count, count))]


def scale(store: Store, doc: dict, job_id: str, remaining: float, now: int, write: Write) -> int | None:
    """The job's target worker count for the backlog its worker reports (an event in `write` when it changes);
    None when the job says nothing of its workers."""
    workers = worker_range(doc)
    if workers is None:
        return None
    target = workers.target(remaining) if workers.scales else workers.low
    last = store.messages.latest_autoscaling_event(job_id, TARGET_CHANGED)
    if last is None or last.target_workers != target:
        changed = store.messages.latest_autoscaling_event(job_id, CURRENT_CHANGED)
        current = changed.current_workers if changed is not None else 0
        verb = "Raised" if last is None or target > last.target_workers else "Lowered"
        write.autoscaling_events = [
            event(
                job_id,
                now,
                TARGET_CHANGED,
                current,
                target,
                f"{verb} the target number of workers to {target} (between {workers.low} and {workers.high}): "
                f"the backlog of the stage starting is {remaining:g} unit(s) of {UNIT_BYTES // 2**20} MiB.",
            )
        ]
    return target


def workers_changed(job_id: str, now: int, params: dict) -> list[AutoscalingEventRecord]:
    """A stage started on a number of SDK workers (CODE_WORKERS_CHANGED): the job's current count changed,
    or could not reach the target."""
    workers, target = int(params.get("workers", 0)), int(params.get("target", 0))
    events = []
    if workers != int(params.get("previous", 0)):
        events.append(
            event(
                job_id,
                now,
                CURRENT_CHANGED,
                workers,
                target,
                f"Stage {params.get('stage', '?')} runs on {workers} worker(s).",
            )
        )
    if workers < target:
        events.append(
            event(
                job_id,
                now,
                ACTUATION_FAILURE,
                workers,
                target,
                f"Could not run {target} workers: the worker's host allows {params.get('limit', workers)}.",
            )
        )
    return events


def event(job_id: str, now: int, kind: str, current: int, target: int, text: str) -> AutoscalingEventRecord:
    return AutoscalingEventRecord(job_id, now, kind, current, target, text)


def render_event(record: AutoscalingEventRecord) -> dict:
    return {
        "currentNumWorkers": str(record.current_workers),
        "targetNumWorkers": str(record.target_workers),
        "eventType": record.event_type,
        "description": {"messageText": record.description},
        "time": timestamp(record.time_us),
        "workerPool": "pool-0",
    }
