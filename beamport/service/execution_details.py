"""What the API shows of a job's run (the read model): its metrics (getMetrics), its stages (getExecutionDetails)
and a stage's attempts on workers (stages.getExecutionDetails); and the metric records a work report writes.

Metrics come from the reports of the job's worker (workItems:reportStatus metricUpdates), stages from its
stage-state codes (service/stages.py), attempts from the work item's failures (service/retries.py).
"""

from __future__ import annotations

import orjson

from beamport import wire
from beamport.errors import not_found
from beamport.protocol import STAGE_METRIC_CONTEXT
from beamport.service import model
from beamport.service.documents import document, load_job, timestamp
from beamport.service.retries import failures_of
from beamport.store.base import Store
from beamport.store.metrics import MetricRecord, StageRecord

_EXECUTION_STATE = {
    model.RUNNING: "EXECUTION_STATE_RUNNING",
    model.DONE: "EXECUTION_STATE_SUCCEEDED",
    model.FAILED: "EXECUTION_STATE_FAILED",
    model.CANCELLED: "EXECUTION_STATE_CANCELLED",
}


def metric_key(update: dict) -> str:
    """What makes a MetricUpdate the same metric as an earlier one: its structured name."""
    return orjson.dumps(update.get("name", {}), option=orjson.OPT_SORT_KEYS).decode()


def changed_metrics(store: Store, job_id: str, updates: list[dict], now: int) -> list[MetricRecord]:
    """Records for the reported metrics whose value changed. Reports are cumulative: an unchanged metric
    keeps its updateTime, so getMetrics' startTime ("only what changed since") can leave it out."""
    stored = {m.metric_key: orjson.loads(m.doc) for m in store.metrics.list(job_id)} if updates else {}
    records = []
    for update in updates:
        key = metric_key(update)
        old = stored.get(key)
        if old is not None and {k: v for k, v in old.items() if k != "updateTime"} == update:
            continue
        records.append(MetricRecord(job_id, key, now, orjson.dumps({**update, "updateTime": timestamp(now)}).decode()))
    return records


class ExecutionDetails:
    def __init__(self, store: Store, clock=wire.now_us):
        self.store = store
        self.clock = clock

    def get_metrics(self, project_id: str, location: str | None, job_id: str, start_us: int | None = None) -> dict:
        load_job(self.store, project_id, location, job_id, with_detail=False)
        # `metrics` even when empty, unlike Google's JSON elsewhere: Airflow's DataflowJobMetricsSensor reads
        # response["metrics"] of a job that has reported none yet.
        metrics = [orjson.loads(m.doc) for m in self.store.metrics.list(job_id, since_us=start_us)]
        return {"metricTime": timestamp(self.clock()), "metrics": [m for m in metrics if _stage_of(m) is None]}

    def execution_details(self, project_id: str, location: str, job_id: str) -> dict:
        ids = self._stage_ids(project_id, location, job_id)
        measured = self._stage_metrics(job_id)
        stages = [
            _stage_summary(stage, ids, measured.get(stage.stage)) for stage in self.store.metrics.list_stages(job_id)
        ]
        return {"stages": stages} if stages else {}

    def _stage_metrics(self, job_id: str) -> dict[str, list[dict]]:
        """The metrics the job's worker reported of its stages (a streaming run's watermarks, lag, element counts:
        translate.metrics.stage_metric_updates), by stage name."""
        by_stage: dict[str, list[dict]] = {}
        for record in self.store.metrics.list(job_id):
            if STAGE_METRIC_CONTEXT in record.metric_key:  # (a quick look before parsing)
                metric = orjson.loads(record.doc)
                stage = _stage_of(metric)
                if stage is not None:
                    by_stage.setdefault(stage, []).append(metric)
        return by_stage

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


def _stage_of(metric: dict) -> str | None:
    """The stage a reported metric measures, if it is a stage's (protocol.STAGE_METRIC_CONTEXT)."""
    return ((metric.get("name") or {}).get("context") or {}).get(STAGE_METRIC_CONTEXT)


def _stage_summary(stage: StageRecord, ids: dict[str, str], metrics: list[dict] | None = None) -> dict:
    summary: dict = {
        "stageId": ids.get(stage.stage, stage.stage),
        "state": _EXECUTION_STATE.get(stage.state, "EXECUTION_STATE_UNKNOWN"),
    }
    summary.update(_timing(stage))
    if metrics:
        summary["metrics"] = metrics
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
