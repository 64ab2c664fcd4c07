"""How many workers a job runs on: Dataflow's numWorkers and maxNumWorkers, and throughput-based scaling
between them from the backlog the job's worker reports.

A Beamport "worker" of a job is an SDK worker of its run (a process of the engine): its work item runs on
one worker host, whose cores bound the count. The worker reports, as each stage starts, the backlog in
front of it as `reportedProgress.remainingParallelism`: how many units of work (UNIT_BYTES of input each)
could proceed in parallel. The service answers the target worker count in `harnessData`, clamped to the
job's range, and records every change as an AutoscalingEvent (messages.list `autoscalingEvents`).
"""

from __future__ import annotations

from dataclasses import dataclass

from beamport.protocol import BACKLOG_UNIT_BYTES as UNIT_BYTES
from beamport.protocol import HARNESS_TARGET_WORKERS
from beamport.service.documents import timestamp
from beamport.store.messages import AutoscalingEventRecord

__all__ = ["UNIT_BYTES", "HARNESS_TARGET_WORKERS", "WorkerRange", "worker_range", "event", "render_event"]

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
