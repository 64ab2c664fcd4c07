"""The worker harness: lease a job's work, run it on the engine, report through the API until it ends.

It talks to the service only through the public API (beamport.worker.api), so it can run on any host
that reaches the endpoint and sees the job's staged files.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import traceback
from pathlib import Path

from beamport import wire
from beamport.protocol import CODE_HARNESS_STARTED, CODE_LOG, CODE_STAGE
from beamport.worker.api import WorkerApi

log = logging.getLogger(__name__)

REPORT_EVERY_S = 1.0


def importance_of(record: logging.LogRecord) -> str:
    """Map a log record onto a job message importance. Beam's own INFO chatter stays DETAILED."""
    if record.levelno >= logging.ERROR:
        return "JOB_MESSAGE_ERROR"
    if record.levelno >= logging.WARNING:
        return "JOB_MESSAGE_WARNING"
    if record.levelno >= logging.INFO:
        return "JOB_MESSAGE_DETAILED" if record.name.startswith("apache_beam") else "JOB_MESSAGE_BASIC"
    return "JOB_MESSAGE_DEBUG"


class Reporter:
    """The engine's RunObserver: collects what happens in the run; the harness sends it in batches."""

    def __init__(self, api: WorkerApi, work_item_id: str):
        self.api = api
        self.work_item_id = work_item_id
        self.lock = threading.Lock()
        self.pending: list[dict] = []
        self.latest_metrics = None
        self.latest_infos: list = []

    def stage_state(self, stage_name: str, state: str, time_us: int) -> None:
        self._queue(CODE_STAGE, {"stage": stage_name, "state": state}, time_us)

    def metrics(self, results) -> None:
        with self.lock:
            self.latest_metrics = results

    def monitoring_infos(self, infos: list) -> None:
        with self.lock:
            self.latest_infos = infos

    def log(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        self._queue(CODE_LOG, {"importance": importance_of(record), "text": text})

    def warn(self, text: str) -> None:
        self._queue(CODE_LOG, {"importance": "JOB_MESSAGE_WARNING", "text": text})

    def _queue(self, code: str, parameters: dict, time_us: int | None = None) -> None:
        message = self.api.code_message(code, parameters, self.work_item_id, time_us)
        with self.lock:
            self.pending.append(message)

    def take(self) -> tuple[list[dict], object, list]:
        with self.lock:
            pending, self.pending = self.pending, []
            return pending, self.latest_metrics, self.latest_infos


def warm_up() -> None:
    """Import what running a job needs (Beam above all), so that a standby worker starts at once."""
    import beamport.engine.embedded  # noqa: F401
    import beamport.engine.staging  # noqa: F401
    import beamport.translate.metrics  # noqa: F401


def run(
    endpoint: str,
    project: str,
    location: str,
    job_id: str,
    worker_id: str | None,
    allow_paths: list[Path],
    sdk_workers: int = 1,
) -> int:
    """Run one job's work to its end. Returns the process exit code."""
    from beamport.engine.embedded import EmbeddedEngine
    from beamport.engine.staging import stage_job
    from beamport.files import FilePolicy
    from beamport.translate.metrics import metric_updates, system_metric_updates

    worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
    api = WorkerApi(endpoint, project, location, job_id, worker_id)
    item = api.lease()
    if item is None:
        log.info("no work to lease for job %s", job_id)
        return 0
    item_id, index = item["id"], int(item["initialReportIndex"])
    api.send([api.code_message(CODE_HARNESS_STARTED, {"pid": os.getpid()}, item_id)])
    reporter = Reporter(api, item_id)
    outcome: dict = {}

    def execute() -> None:
        try:
            staged, warnings = stage_job(api.get_job(), FilePolicy(allow_paths))
            for warning in warnings:
                reporter.warn(warning)
            outcome["pipeline"] = staged.pipeline
            outcome["result"] = EmbeddedEngine(default_workers=sdk_workers).run(staged, reporter)
        except Exception as exc:  # staging errors and engine bugs end the work as failed, with the reason
            outcome["error"] = getattr(exc, "message", None) or "".join(traceback.format_exception(exc))

    thread = threading.Thread(target=execute, name="engine", daemon=True)
    thread.start()

    def flush(completed: bool = False, errors=()) -> dict:
        nonlocal index
        pending, results, infos = reporter.take()
        api.send(pending)
        updates = []
        if results is not None and "pipeline" in outcome:
            now = wire.now_us()
            updates = metric_updates(results, outcome["pipeline"], now)
            updates += system_metric_updates(infos, outcome["pipeline"], now)
        answer = api.report(item_id, index, updates, completed=completed, errors=errors)
        index += 1
        return answer

    while thread.is_alive():
        thread.join(REPORT_EVERY_S)
        if thread.is_alive():
            answer = flush()
            if "completeWorkStatus" in answer:
                # The service wants this work to end (the job was cancelled): stop at once, with any children.
                log.info("stopping: %s", answer["completeWorkStatus"].get("message"))
                if os.getpgrp() == os.getpid():  # this worker leads its group: SDK worker processes go too
                    os.killpg(os.getpgrp(), signal.SIGKILL)
                os._exit(1)

    result = outcome.get("result")
    error = outcome.get("error") or (result.error if result is not None and result.state != "DONE" else None)
    if error:
        flush(completed=True, errors=[{"code": 2, "message": error}])
        return 1
    flush(completed=True)
    return 0
