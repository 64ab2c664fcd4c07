"""What a job's worker says of the job in `workerMessageCode` messages (checked by the worker registry):
its log lines, its stages' states, its engine running it, the SDK workers it runs on.

A stage's state and times go to the job's stage records (the execution details) and its `stageStates`;
BEAMPORT_ENGINE_RUNNING moves the job to RUNNING, as the state machine lets the worker (beamport.job_states);
a count of workers is an autoscaling event; any other code is kept as a DETAILED job message.
"""

from __future__ import annotations

import json

from beamport import job_states, wire
from beamport.errors import ApiError
from beamport.job_states import Actor
from beamport.protocol import CODE_ENGINE_RUNNING, CODE_HARNESS_STARTED, CODE_LOG, CODE_STAGE, CODE_WORKERS_CHANGED
from beamport.service import autoscaling, model
from beamport.service.documents import change_job, job_message, move_to_state, timestamp
from beamport.store.base import Store, Write
from beamport.store.metrics import StageRecord


class StageRecorder:
    def __init__(self, store: Store, clock=wire.now_us):
        self.store = store
        self.clock = clock

    def record_code_messages(self, job_id: str, messages: list[dict]) -> None:
        """Apply workerMessageCode messages to the job: messages, stage states, its state, autoscaling events."""

        def change(doc: dict, now: int, write: Write) -> bool:
            stages = {stage.stage: stage for stage in self.store.metrics.list_stages(job_id)}
            notes, touched = [], []
            for message in messages:
                code, params = message["workerMessageCode"]["code"], message["workerMessageCode"].get("parameters", {})
                labels = message.get("labels", {})
                worker = labels.get("WORKER_ID", "a worker")
                if code == CODE_LOG:  # at the time it was logged (messages reach the service in batches)
                    at = min(_worker_time_us(message, now), now)
                    notes.append(job_message(job_id, at, params["importance"], params["text"]))
                elif code == CODE_STAGE:
                    stages[params["stage"]] = _stage_reported(stages, job_id, message, now)
                    touched.append(params["stage"])
                elif code == CODE_WORKERS_CHANGED:
                    write.autoscaling_events = [
                        *write.autoscaling_events,
                        *autoscaling.workers_changed(job_id, now, params),
                    ]
                elif code == CODE_ENGINE_RUNNING:
                    if job_states.allows(doc.get("currentState"), model.RUNNING, Actor.WORKER):
                        move_to_state(doc, model.RUNNING, now, Actor.WORKER)
                    where = params.get("detail") or "its engine"
                    notes.append(job_message(job_id, now, "JOB_MESSAGE_DETAILED", f"The job is running on {where}."))
                    write.autoscaling_events = [
                        *write.autoscaling_events,
                        *autoscaling.engine_started(self.store, job_id, now, params.get("workers")),
                    ]
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

        change_job(self.store, self.clock, job_id, change)


def _stage_reported(stages: dict[str, StageRecord], job_id: str, message: dict, now: int) -> StageRecord:
    """The stage record as a CODE_STAGE message leaves it (new if the stage is new)."""
    params, labels = message["workerMessageCode"].get("parameters", {}), message.get("labels", {})
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
    return stage


def _worker_time_us(message: dict, default: int) -> int:
    try:
        return wire.parse_timestamp_us(message.get("time"), "time") or default
    except ApiError:
        return default
