"""What a job used, kept with the job as Dataflow keeps it: service metrics in jobs.getMetrics.

Dataflow reports a job's resources as MetricUpdates of origin `dataflow/v1b3` with no step, each with a
`tentative` twin: `TotalVcpuTime` in vCPU-seconds, `TotalMemoryUsage` in MB-seconds (and for its VMs
`TotalPdUsage`, `CurrentVcpuCount`...). Beamport adds up the first two from what each worker of the job reports
(WorkerMessages, labelled with JOB_ID and WORKER_ID): the growth of the worker's CPU time (`workerMetrics`
CPU samples, whose `totalMs` counts since the worker started) between two samples of the same job, and the
memory of its processes (the RSS of the `pods` of its last health report) over the same time. They are stored
with the job's other metrics, so they stay when the worker moves on to another job and when the server restarts.

Dataflow counts what a job's VMs were given (their vCPUs and memory for as long as they ran); Beamport's
workers are processes sharing a host, given nothing of their own, so it counts what they used. Disks
(`TotalPdUsage`, `TotalSsdUsage`) and the `Current*` gauges have no counterpart here and are not reported.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import orjson

from beamport import wire
from beamport.errors import ApiError
from beamport.protocol import LABEL_JOB, LABEL_WORKER
from beamport.service.documents import commit, timestamp
from beamport.service.execution_details import metric_key
from beamport.store.base import Store, Write
from beamport.store.metrics import MetricRecord

ORIGIN = "dataflow/v1b3"
VCPU_TIME = "TotalVcpuTime"  # vCPU-seconds
MEMORY_USAGE = "TotalMemoryUsage"  # MB-seconds (MB of 2^20 bytes, as machine types count memory)
_MB = 2**20
# Two samples further apart than this many of the worker's report intervals span a time it was not known to run
# the job's work (lost, idle between two attempts, or unable to reach the service): that time is not counted.
MISSED_INTERVALS = 3
DEFAULT_INTERVAL_US = 60_000_000  # for a worker that has not said how often it reports
_REMEMBERED = 100_000  # workers and jobs kept in memory, each: past this, the least recent half is forgotten


@dataclass
class Used:
    vcpu_seconds: float = 0.0
    memory_mb_seconds: float = 0.0


@dataclass
class _Worker:
    """What the last reports of a worker said: its last CPU sample (and the job it ran then), its memory."""

    job_id: str = ""
    total_ms: int = 0
    time_us: int | None = None
    rss_bytes: int | None = None
    interval_us: int = DEFAULT_INTERVAL_US


class JobUsage:
    """Adds up each job's resource use from its workers' reports, into the job's metrics.

    The last sample of each worker is kept in memory: after a restart, the first interval of each worker is
    not counted (what it used before is: the totals are stored). One server owns a store, so one lock serializes
    the additions of workers of the same job."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._workers: dict[str, _Worker] = {}
        self._totals: dict[str, Used] = {}  # job id -> what it used, as stored

    def record(self, messages: list[dict], now_us: int) -> None:
        """Add what a batch of (checked) worker messages says the workers' jobs used since their last samples."""
        with self._lock:
            used = self._measure(messages, now_us)
            records = []
            for job_id, more in used.items():
                total = self._total(job_id)
                total.vcpu_seconds += more.vcpu_seconds
                total.memory_mb_seconds += more.memory_mb_seconds
                records += _records(job_id, total, now_us)
            if records:
                commit(self.store, Write(metrics=records))

    def _measure(self, messages: list[dict], now_us: int) -> dict[str, Used]:
        used: dict[str, Used] = {}
        for message in messages:
            labels = message.get("labels") or {}
            worker_id, job_id = labels.get(LABEL_WORKER), labels.get(LABEL_JOB)
            if not worker_id or not job_id or not ("workerHealthReport" in message or "workerMetrics" in message):
                continue
            worker = self._workers.setdefault(worker_id, _Worker())
            if "workerHealthReport" in message:
                _note_health(worker, message["workerHealthReport"])
                continue
            for sample in message["workerMetrics"].get("cpuTime") or []:
                try:
                    total_ms = int(sample.get("totalMs", 0))
                    at_us = wire.parse_timestamp_us(sample.get("timestamp"), "timestamp") or now_us
                except (ApiError, TypeError, ValueError):
                    continue
                if worker.time_us is not None and at_us <= worker.time_us:
                    continue  # a sample already counted (a retried request), or one older than it
                span_us = at_us - worker.time_us if worker.time_us is not None else None
                if worker.job_id == job_id and span_us is not None and span_us <= MISSED_INTERVALS * worker.interval_us:
                    job = used.setdefault(job_id, Used())
                    # CPU time can shrink (a process that ended unwaited takes its time along): then none is counted.
                    job.vcpu_seconds += max(0, total_ms - worker.total_ms) / 1000
                    if worker.rss_bytes is not None:
                        job.memory_mb_seconds += worker.rss_bytes / _MB * span_us / 1e6
                worker.job_id, worker.total_ms, worker.time_us = job_id, total_ms, at_us
        if len(self._workers) > _REMEMBERED:
            recent = sorted(self._workers.items(), key=lambda item: item[1].time_us or 0)[len(self._workers) // 2 :]
            self._workers = dict(recent)
        return used

    def _total(self, job_id: str) -> Used:
        total = self._totals.get(job_id)
        if total is None:
            if len(self._totals) >= _REMEMBERED:
                self._totals.clear()  # read again from the store when needed
            total = self._totals[job_id] = stored_usage(self.store, job_id)
        return total


def stored_usage(store: Store, job_id: str) -> Used:
    """What the job's metrics say it used so far."""
    used = Used()
    for record in store.metrics.list(job_id):
        doc = orjson.loads(record.doc)
        name = doc.get("name") or {}
        if name.get("origin") != ORIGIN or name.get("context"):
            continue
        if name.get("name") == VCPU_TIME:
            used.vcpu_seconds = float(doc.get("scalar") or 0)
        elif name.get("name") == MEMORY_USAGE:
            used.memory_mb_seconds = float(doc.get("scalar") or 0)
    return used


def _records(job_id: str, used: Used, now_us: int) -> list[MetricRecord]:
    """The job's usage metrics, committed and tentative (Beam's DataflowMetrics reads a metric only with both),
    as running totals. Dataflow's values are whole numbers; Beamport's keep milliseconds: its jobs often last
    seconds."""
    records = []
    for name, value in ((VCPU_TIME, used.vcpu_seconds), (MEMORY_USAGE, used.memory_mb_seconds)):
        tentative = {"origin": ORIGIN, "name": name, "context": {"tentative": "true"}}
        for structured in ({"origin": ORIGIN, "name": name}, tentative):
            update = {"name": structured, "cumulative": True, "kind": "Sum", "scalar": round(value, 3)}
            doc = {**update, "updateTime": timestamp(now_us)}
            records.append(MetricRecord(job_id, metric_key(update), now_us, orjson.dumps(doc).decode()))
    return records


def _note_health(worker: _Worker, report: dict) -> None:
    """The memory of the worker's processes (the sum of its pods' `rssBytes`) and how often it reports."""
    pods = report.get("pods")
    if isinstance(pods, list):
        reported = [pod.get("rssBytes") for pod in pods if isinstance(pod, dict)]
        sizes = [int(size) for size in reported if isinstance(size, int) or (isinstance(size, str) and size.isdigit())]
        worker.rss_bytes = sum(sizes) if sizes else None
    try:
        interval_us = wire.parse_duration_us(report.get("reportInterval") or "")
    except (ApiError, ValueError):
        interval_us = 0
    worker.interval_us = interval_us if interval_us > 0 else DEFAULT_INTERVAL_US
