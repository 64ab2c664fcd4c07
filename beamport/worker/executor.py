"""The executor: one process per leased work item, started by a worker (beamport.worker.harness).

It stages the job, runs it on the engine, and reports through the API until the work ends: reportStatus
every `reportStatusInterval` (metrics, the lease renewed), WorkerMessages for the pipeline's logs, stage
states and lifecycle events. Each report's next index goes up a pipe to the worker, which can then close
the work item itself if this process dies. A fresh process per work item keeps one job's imports, main
session and threads out of the next job's way; the worker starts it ahead of need (Beam imported) so
that leased work starts at once.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

from beamport import wire
from beamport.engine import registry
from beamport.engine.base import HANDED_OVER, STAGE_RUNNING, Engine
from beamport.errors import RPC_CODE
from beamport.processes import die_with_parent
from beamport.protocol import (
    BACKLOG_UNIT_BYTES,
    CODE_ENGINE_RUNNING,
    CODE_HARNESS_STARTED,
    CODE_LOG,
    CODE_STACKTRACES,
    CODE_STAGE,
    CODE_STAGING_FAILED,
    CODE_WORKERS_CHANGED,
    HARNESS_DRAIN,
    HARNESS_SEND_STACKS,
    HARNESS_TARGET_WORKERS,
    SDK_INSTALL_FINISH,
    SDK_INSTALL_START,
    STAGING_FILES_DOWNLOAD_FINISH,
    STAGING_FILES_DOWNLOAD_START,
)
from beamport.worker.api import Work, WorkerApi, WorkerApiError

log = logging.getLogger(__name__)

REPORT_EVERY_S = 1.0
_BEAMS_LOGGERS = ("apache_beam", "org.apache.beam")


def importance_of(record: logging.LogRecord) -> str:
    """Map a log record onto a job message importance. Beam's own INFO chatter (Python's, and Java's harness)
    stays DETAILED."""
    if record.levelno >= logging.ERROR:
        return "JOB_MESSAGE_ERROR"
    if record.levelno >= logging.WARNING:
        return "JOB_MESSAGE_WARNING"
    if record.levelno >= logging.INFO:
        return "JOB_MESSAGE_DETAILED" if record.name.startswith(_BEAMS_LOGGERS) else "JOB_MESSAGE_BASIC"
    return "JOB_MESSAGE_DEBUG"


class Reporter:
    """The engine's RunObserver: collects what happens in the run; the executor sends it in batches."""

    def __init__(self, api: WorkerApi, work: Work):
        self.api = api
        self.work = work
        self.lock = threading.Lock()
        self.pending: list[dict] = []
        self.latest_metrics = None
        self.latest_infos: list = []
        self.latest_figures: dict = {}  # the latest StageFigures of a streaming run, by stage name
        self.stages: dict[str, str] = {}
        self.planned_stages = 0  # the job graph's count of stages (pipelineDescription), for progress
        self.scaling: dict | None = None  # the work item's worker range, {min, max}
        self.workers = 0  # SDK workers the run uses now (0 before the first stage)
        self.ask_service: Callable[[int], dict] | None = None  # reports at once with a backlog, returns the answer
        # Set to report now, not at the next tick: the job's state changes (RUNNING, or the run ended).
        self.report_now = threading.Event()

    def running(self, detail: str, workers: int | None = None) -> None:
        self.code(CODE_ENGINE_RUNNING, {"detail": detail, **({"workers": workers} if workers else {})})
        self.report_now.set()

    def stage_state(self, stage_name: str, state: str, time_us: int) -> None:
        with self.lock:
            self.stages[stage_name] = state
        self._queue(self.api.code_message(self.work, CODE_STAGE, {"stage": stage_name, "state": state}, time_us))

    def fraction_done(self) -> float:
        """Stages done out of all stages (planned, or seen if more): the run's progress, for reportStatus."""
        with self.lock:
            done = sum(1 for state in self.stages.values() if state != STAGE_RUNNING)
            total = max(self.planned_stages, len(self.stages), 1)
        return round(done / total, 4)

    def metrics(self, results) -> None:
        with self.lock:
            self.latest_metrics = results

    def monitoring_infos(self, infos: list) -> None:
        with self.lock:
            self.latest_infos = infos

    def stage_figures(self, figures: dict) -> None:
        with self.lock:
            self.latest_figures = dict(figures)

    def log(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info))
        params = {"importance": importance_of(record), "text": text}
        self._queue(self.api.code_message(self.work, CODE_LOG, params, int(record.created * 1_000_000)))

    def warn(self, text: str) -> None:
        self.code(CODE_LOG, {"importance": "JOB_MESSAGE_WARNING", "text": text})

    def code(self, code: str, parameters: dict) -> None:
        self._queue(self.api.code_message(self.work, code, parameters))

    def lifecycle(self, event: str, container_start_us: int, **metadata) -> None:
        body = {
            "event": event,
            "containerStartTime": wire.format_timestamp_us(container_start_us),
            "metadata": {k: str(v) for k, v in metadata.items()},
        }
        self._queue(self.api.message(self.work, "workerLifecycleEvent", body))

    def _queue(self, message: dict) -> None:
        with self.lock:
            self.pending.append(message)

    # -- autoscaling (see beamport.service.autoscaling) ---------------------------------

    def workers_for(self, stage_name: str, backlog_bytes: int) -> int | None:
        if not self.scaling or self.scaling["max"] <= self.scaling["min"] or self.ask_service is None:
            return None
        units = -(-backlog_bytes // BACKLOG_UNIT_BYTES)
        answer = self.ask_service(units)
        return (answer.get("harnessData") or {}).get(HARNESS_TARGET_WORKERS)

    def workers_changed(self, stage_name: str, workers: int, target: int, limit: int) -> None:
        previous, self.workers = self.workers, workers
        self.code(
            CODE_WORKERS_CHANGED,
            {"stage": stage_name, "workers": workers, "previous": previous, "target": target, "limit": limit},
        )

    def put_back(self, messages: list[dict]) -> None:
        with self.lock:
            self.pending[:0] = messages

    def take(self) -> tuple[list[dict], object, list, dict]:
        with self.lock:
            pending, self.pending = self.pending, []
            # Stage figures go once per reading (an engine reads them every few seconds; reports go every second).
            figures, self.latest_figures = self.latest_figures, {}
            return pending, self.latest_metrics, self.latest_infos, figures


def thread_stacks() -> list[dict]:
    """This process's threads as Dataflow Stack objects (for debug.getWorkerStacktraces)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    now = wire.format_timestamp_us(wire.now_us())
    return [
        {
            "threadName": names.get(ident, f"thread-{ident}"),
            "threadState": "RUNNABLE",
            "threadCount": 1,
            "stackContent": "".join(traceback.format_stack(frame)),
            "timestamp": now,
        }
        for ident, frame in sys._current_frames().items()
    ]


def warm_up() -> None:
    """Import what running a job needs (Beam above all), so that a standby executor starts at once."""
    import beamport.engine.embedded  # noqa: F401
    import beamport.engine.staging  # noqa: F401
    import beamport.translate.metrics  # noqa: F401


def engine_spec(work_config: dict) -> registry.EngineSpec:
    """The engine the service chose for this work item (see beamport.service.engines); none named: the batch
    engine."""
    try:
        return registry.get(work_config.get("engine") or registry.BATCH_DEFAULT.name)
    except registry.UnknownEngine as exc:
        raise WorkerApiError(f"This worker cannot run the work item: {exc}") from None


def make_engine(work_config: dict, sdk_workers: int, engines: dict) -> Engine:
    """The work item's engine, configured as the worker was (`engines`: EngineSettings.for_executor)."""
    spec = engine_spec(work_config)
    config = engines.get(spec.name)
    if spec.host_config is not None and not config:
        raise WorkerApiError(spec.missing_on_worker)
    return spec.build(config, work_config, sdk_workers)


def execute(assignment: dict) -> int:
    """Run one leased work item to its end. Returns the process exit code."""
    from beamport.engine.cleanup import clean_up_earlier_attempts
    from beamport.engine.staging import stage_job
    from beamport.files import FilePolicy
    from beamport.translate.metrics import (
        backlog_metric_updates,
        metric_updates,
        stage_metric_updates,
        stage_source_lags,
        system_metric_updates,
    )

    work = Work(**assignment["work"])
    work_config = json.loads(work.config or "{}")
    api = WorkerApi(
        assignment["endpoint"], assignment["worker_id"], assignment.get("labels"), token=assignment.get("token")
    )
    status = os.fdopen(assignment["status_fd"], "w", buffering=1) if assignment.get("status_fd") else None
    container_start_us = assignment.get("container_start_us") or wire.now_us()
    allow_paths = [Path(p) for p in assignment.get("allow_paths", [])]
    files = FilePolicy(allow_paths, [Path(p) for p in assignment.get("deny_paths", [])])
    reporter = Reporter(api, work)
    reporter.code(
        CODE_HARNESS_STARTED,
        {
            "pid": os.getpid(),
            "attempt": work.attempt,
            "engine": work_config.get("engine") or registry.BATCH_DEFAULT.name,
        },
    )
    outcome: dict = {}
    engine_box: list = []  # the engine, once made (the main loop drains or stops it)
    index = work.report_index
    lock = threading.Lock()  # the main loop and the engine thread (autoscaling, the jars below) both report

    def run() -> None:
        try:
            reporter.lifecycle(STAGING_FILES_DOWNLOAD_START, container_start_us)
            try:
                job = api.get_job(work)
                reporter.planned_stages = len((job.get("pipelineDescription") or {}).get("executionPipelineStage", []))
                staged, warnings = stage_job(
                    job, files, engine=engine_spec(work_config), pipeline_bytes=api.get_pipeline(work)
                )
                warnings += clean_up_earlier_attempts(staged, work.attempt, files)
            except Exception as exc:
                reporter.code(CODE_STAGING_FAILED, {"error": getattr(exc, "message", None) or str(exc)})
                raise
            reporter.lifecycle(STAGING_FILES_DOWNLOAD_FINISH, container_start_us, downloaded_bytes=staged.staged_bytes)
            reporter.lifecycle(SDK_INSTALL_START, container_start_us)
            for warning in warnings:
                reporter.warn(warning)
            # The engine's SDK is Beamport's own Beam; staged pure-Python wheels go on its path.
            reporter.lifecycle(SDK_INSTALL_FINISH, container_start_us, wheels=len(staged.python_path))
            outcome["pipeline"] = staged.pipeline
            if status and staged.java_environments and not engine_spec(work_config).stops_outside:
                # Its worker keeps a JVM warm over these jars for its next job (engine/java_warm.py): the engine runs
                # its harnesses under this executor (the embedded engine's, Prism's; Flink's pool starts its own).
                with lock:
                    status.write(json.dumps({"java_class_path": next(iter(staged.java_environments.values()))}))
                    status.write("\n")
            engine = make_engine(work_config, assignment.get("sdk_workers", 1), assignment.get("engines", {}))
            engine_box.append(engine)
            outcome["result"] = engine.run(staged, reporter)
        except Exception as exc:  # staging errors and engine bugs end the work as failed, with the reason
            outcome["error"] = getattr(exc, "message", None) or "".join(traceback.format_exception(exc))
            # A job that cannot run as submitted (no pipeline, a file it may not read) fails the same way on
            # every attempt: its status code tells the service not to try again.
            outcome["code"] = RPC_CODE.get(getattr(exc, "status", ""), RPC_CODE["UNKNOWN"])
        finally:
            reporter.report_now.set()

    thread = threading.Thread(target=run, name="engine", daemon=True)
    thread.start()

    def flush(completed: bool = False, errors=(), remaining: int | None = None) -> dict:
        with lock:
            return _flush(completed, errors, remaining)

    reporter.scaling = work_config.get("workers")
    reporter.ask_service = lambda units: flush(remaining=units)

    def _flush(completed: bool, errors, remaining: int | None) -> dict:
        nonlocal index
        pending, results, infos, figures = reporter.take()
        try:
            api.send(work, pending)
        except WorkerApiError as exc:  # the service is away: keep the messages for the next report
            log.warning("could not send worker messages: %s", exc)
            reporter.put_back(pending)
        updates = []
        if results is not None and "pipeline" in outcome:
            now = wire.now_us()
            updates = metric_updates(results, outcome["pipeline"], now)
            updates += system_metric_updates(infos, outcome["pipeline"], now)
            updates += backlog_metric_updates(results, outcome["pipeline"], now)
        if figures:
            lags = stage_source_lags(figures, results, outcome["pipeline"]) if "pipeline" in outcome else {}
            updates += stage_metric_updates(figures, wire.now_us(), lags)
        if status:  # should this process die before the answer, its worker knows the service may have it
            status.write(json.dumps({"reporting": index}) + "\n")
        answer = api.report(
            work,
            index,
            updates,
            completed=completed,
            errors=errors,
            remaining=remaining,
            fraction=reporter.fraction_done(),
        )
        index += 1
        if status:
            status.write(json.dumps({"next_report_index": index, "completed": completed}) + "\n")
        if answer.get("harnessData", {}).get(HARNESS_SEND_STACKS):
            api.send(work, [api.code_message(work, CODE_STACKTRACES, {"stacks": thread_stacks()})])
        return answer

    while thread.is_alive():
        if reporter.report_now.wait(REPORT_EVERY_S):
            reporter.report_now.clear()
            thread.join(0.1)  # (the run may be ending: then its final report follows the loop)
        if thread.is_alive():
            answer = flush()
            if answer.get("harnessData", {}).get(HARNESS_DRAIN) and engine_box:
                engine_box[0].request_drain()  # an engine that cannot drain runs on to its end (or a cancel)
            if "completeWorkStatus" in answer:
                # The service wants this work to end (cancelled, or the lease revoked): stop at once, with
                # the SDK worker processes (this process leads its own process group).
                log.info("stopping: %s", answer["completeWorkStatus"].get("message"))
                if status:
                    status.write(json.dumps({"stopped": True}) + "\n")
                if engine_box:  # an engine whose job runs outside this process group (Flink) stops it first
                    engine_box[0].stop()
                if os.getpgrp() == os.getpid():
                    os.killpg(os.getpgrp(), signal.SIGKILL)
                os._exit(1)

    result = outcome.get("result")
    if result is not None and result.state == HANDED_OVER:
        # Stopped with a savepoint for an update: the service ends this work (the job that takes over goes on from
        # the savepoint) or gives it to another attempt (which does). Its last messages and metrics go; no end.
        log.info("the run was stopped with a savepoint for an update: this work is the service's to end")
        flush()
        if status:
            status.write(json.dumps({"stopped": True}) + "\n")
        return 0
    error = outcome.get("error") or (result.error if result is not None and result.state == "FAILED" else None)
    if error:
        flush(completed=True, errors=[{"code": outcome.get("code", RPC_CODE["UNKNOWN"]), "message": error}])
        return 1
    flush(completed=True)
    return 0


def main() -> None:
    """`python -m beamport.worker.executor PARENT_PID`: warm up, then run the work item read from stdin (PARENT_PID
    0: in a sandbox, which dies with the worker itself)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Killed with the worker that started it, so that a lost worker's work never runs on behind the service's
    # back (PARENT_PID 0: in a sandbox, whose parent is its own init, and which dies with the worker).
    die_with_parent(int(sys.argv[1]))
    if len(sys.argv) > 2:  # the worker's last job was a Java one: a JVM warm for the next (engine/java_warm.py)
        from beamport.engine import java_warm

        java_warm.start_spec(json.loads(sys.argv[2]))
    warm_up()
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)  # the worker stopped without needing this executor
    sys.exit(execute(json.loads(line)))


if __name__ == "__main__":
    main()
