"""The Prism engine: streaming jobs on Beam's Prism runner, on this host, with nothing else to run.

Prism (Beam's Go runner, Beam's default local runner) runs unbounded pipelines: splittable DoFns that
defer, event-time windows, state and timers. It keeps no savepoints, so it gives no snapshots and no
update with state: the service refuses those for Prism jobs, naming Flink.

Per run, in the executor's process group (so a killed executor takes them with it): a Prism process
serving the Beam Job API on a free port, and an SDK worker pool in the executor, whose workers start
through beamport.engine.sdk_boot with the job's options (the drain signal among them), the job's staged
packages (artifacts) and, for their logs, a Fn API logging service in the executor (to observer.log).
The job's user metrics are Prism's (GetJobMetrics), asked for every METRICS_EVERY_S and at the end. A Beam
Go job's Go environments become process environments: Prism starts the job's worker binary through
beamport.engine.go_boot, as Beam's Go container would. A Go job may have a Python environment too (its Pub/Sub
I/O, engine/staging.py): Prism runs both SDKs' workers, the Python ones with a plugin that keeps their metric
short ids apart from Go's (engine/short_ids.py). A Beam Java job's Java environments become process
environments too, each a Java SDK harness over the job's staged jars (beamport.engine.java_boot), given the job's
options under Java's names; Prism has no drain, and Java's sources know no Beamport drain signal: java_boot's
control relay truncates their splittable DoFns once the drain file is there (harness_process.Drain).

The Prism that scripts/prism-build makes logs a job's fused stages (their transforms) as it starts and their
watermarks every second, which its Job API does not give: the job's stages are those (PrismStages), each named
by its transforms, and a streaming job's stages get their watermark, freshness and lag from those lines
(docs/engines.md, "Streaming signals").
"""

from __future__ import annotations

import json
import logging
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from beamport import wire
from beamport.engine import java_warm, worker_pool
from beamport.engine.base import (
    DONE,
    DRAINED,
    FAILED,
    JOB_TYPE_STREAMING,
    STAGE_DONE,
    STAGE_RUNNING,
    Engine,
    EngineError,
    RunObserver,
    RunResult,
    StagedJob,
    StageFigures,
)
from beamport.engine.capture import worker_log_service
from beamport.engine.java_boot import JavaUnavailable, harness_command
from beamport.engine.portable import JobService, external_environments, java_options, user_metrics
from beamport.engine.sdk_boot import LOGGING_ENDPOINT_OPTION
from beamport.processes import listening_addresses, loopback_only
from beamport.protocol import DRAIN_FILE_OPTION

log = logging.getLogger(__name__)

# A plugin of the Python SDK workers of jobs with a Go environment too: metric short ids that do not clash with
# the Go worker's in Prism's one map of them (engine/short_ids.py). Named, not imported: importing it patches Beam.
SHORT_IDS_PLUGIN = "beamport.engine.short_ids"
# A plugin of every Prism job's Python SDK workers: Prism's finalization of bundles that asked for none is answered
# as done, not as an error in the job's messages (engine/prism_finalization.py).
FINALIZATION_PLUGIN = "beamport.engine.prism_finalization"

POLL_S = 0.5
METRICS_EVERY_S = 2.0  # how often the job's metrics are asked for while it runs (and once at its end)
START_TIMEOUT_S = 30.0


class PrismEngine(Engine):
    def __init__(self, binary: Path, java_harness_jars: list[str] | None = None):
        """java_harness_jars: Beamport's jars for Java SDK harnesses (java_boot.harness_jars, found by the worker)."""
        self.binary = binary
        self.java_harness_jars = java_harness_jars or []
        self._drain = threading.Event()
        self._service: JobService | None = None
        self._invocation: str | None = None
        self._job_id: str | None = None  # the name Prism knows the invocation by
        self._prism_alive = threading.Lock()  # held by stop() while it cancels, taken by run() before it kills Prism

    def request_drain(self) -> bool:
        self._drain.set()
        return True

    def stop(self) -> None:
        with self._prism_alive:  # never after this run's Prism is gone: another may have its port by then
            if self._service is not None and self._invocation is not None and self._job_id is not None:
                try:
                    self._service.cancel(self._invocation, name=self._job_id)  # every Prism has a "job-001"
                except EngineError as exc:
                    log.warning("%s", exc)

    def run(self, job: StagedJob, observer: RunObserver) -> RunResult:
        with tempfile.TemporaryDirectory(prefix="beamport-prism-") as scratch:
            workdir = Path(scratch)
            boot = workdir / "boot"
            boot.write_text(
                f'#!/bin/sh\nexec {sys.executable} -m beamport.engine.sdk_boot --semi_persist_dir={workdir} "$@"\n'
            )
            boot.chmod(0o755)
            # No spare worker (worker_pool's spares): one started with Prism only competed with it for the CPU
            # (created to first output 2.4 s with one, 2.3 s without: benchmarks/README.md).
            pool_address, pool = worker_pool.start(str(boot))
            # Prism picks its own port and logs it: a port chosen here could be taken by another Prism before
            # this one binds it, and this job would then talk to (and cancel) that one's job "job-001".
            command = [str(self.binary), "--job_port=0", "--serve_http=false", "--log_level=info", "--log_kind=json"]
            prism = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            assert prism.stdout is not None
            logger = JAVA_WORKER_LOGGER if job.java_environments else GO_WORKER_LOGGER
            stages = PrismStages(observer, job.pipeline, job.job_type == JOB_TYPE_STREAMING)
            prism_log = PrismLog(self.binary, prism.stdout, observer, workdir / "prism.log", logger, stages)
            forwarder = threading.Thread(target=prism_log.forward, daemon=True)
            forwarder.start()
            try:
                pipeline = go_process_environments(external_environments(job, pool_address), job, workdir)
                pipeline = java_process_environments(pipeline, job, workdir, self.java_harness_jars)
                with worker_log_service(observer.log) as logs:
                    address = prism_log.endpoint(prism, START_TIMEOUT_S)
                    return self._run(job, observer, address, pipeline, workdir / "drain", logs, stages)
            except (EngineError, JavaUnavailable) as exc:
                return RunResult(FAILED, str(exc))
            finally:
                with self._prism_alive:
                    self._service = None
                    prism.kill()
                prism.wait()
                forwarder.join(5)
                pool.stop(0)

    def _run(
        self,
        job: StagedJob,
        observer: RunObserver,
        address: str,
        pipeline,
        drain_file: Path,
        logs: str,
        stages: PrismStages,
    ) -> RunResult:
        self._service = service = JobService(address, "Prism", connect_timeout=START_TIMEOUT_S)
        self._job_id = job.job_id
        if job.java_environments:
            options = java_options(job)
        else:
            options = {**job.options, "job_name": job.job_id, "runner": "PortableRunner"}
        options["streaming"] = job.job_type == JOB_TYPE_STREAMING
        # Beamport's sources watch it; a Java harness's launcher truncates Java's own (harness_process.Drain).
        options[DRAIN_FILE_OPTION] = str(drain_file)
        if _has_python(pipeline):
            # For its Python SDK workers (a Java or Go job's too: its Pub/Sub I/O, engine/staging.py).
            options[LOGGING_ENDPOINT_OPTION] = logs  # the SDK workers' logs: to observer.log
            other_sdk = job.go_environments or job.java_environments
            plugins = [FINALIZATION_PLUGIN, *([SHORT_IDS_PLUGIN] if other_sdk else [])]
            options["beam_plugins"] = [*(options.get("beam_plugins") or []), *plugins]
        self._invocation = invocation = service.submit(job.job_id, pipeline, options)
        draining = False
        running = False
        metrics_sent = 0.0
        warm_told = False
        while True:
            state = service.state(invocation)
            if state == "RUNNING" and not running:
                running = True
                observer.running(f"Prism (invocation {invocation})")
            if not warm_told and java_warm.claimed():  # a Java harness took the JVM its worker kept warm
                observer.log(java_warm.CLAIMED_RECORD)
                warm_told = True
            if state in ("DONE", "FAILED") or time.monotonic() - metrics_sent >= METRICS_EVERY_S:
                # Prism keeps the job's metrics as its bundles finish (committed); its attempted figures are
                # only the progress of bundles in flight, so the committed ones stand for both.
                metrics_sent = time.monotonic()
                results = service.metric_results(invocation)
                if results is not None:
                    # Its system metrics too: element counts per PCollection, getMetrics' ElementCount.
                    observer.monitoring_infos(list(results.committed))
                    observer.metrics(user_metrics(results, one_side="committed"))
            if state == "DONE":
                if not running:  # it ran, within one look (a job of a second): RUNNING before DONE, as on Dataflow
                    observer.running(f"Prism (invocation {invocation})")
                stages.ended(STAGE_DONE)
                return RunResult(DRAINED if draining else DONE)
            if state == "FAILED":
                errors = service.errors(invocation)
                return RunResult(FAILED, errors[-1] if errors else "The job failed on Prism.")
            if state in ("CANCELLED", "STOPPED"):
                return RunResult(FAILED, "The job was cancelled on Prism, not through Beamport.")
            if self._drain.is_set() and not draining:
                drain_file.touch()  # Beamport's sources read what they hold, then end: the job finishes
                draining = True
            time.sleep(POLL_S)


def go_process_environments(pipeline, job: StagedJob, workdir: Path):
    """The pipeline with its Go environments as process environments that start each one's worker binary
    (beamport.engine.go_boot); the binary is local, so the environment names no artifacts for Prism to stage."""
    for number, (env_id, binary) in enumerate(sorted(job.go_environments.items())):
        command = [sys.executable, "-m", "beamport.engine.go_boot", f"--worker_binary={binary}"]
        command.append(f"--semi_persist_dir={workdir}")
        _process_environment(pipeline, env_id, workdir / f"go-boot-{number}", shlex.join(command))
    return pipeline


def java_process_environments(pipeline, job: StagedJob, workdir: Path, harness_jars: list[str]):
    """The pipeline with its Java environments as process environments that start a Java SDK harness over each
    one's staged jars (beamport.engine.java_boot); the jars are local (staging resolved them through the file
    policy), so the environment names no artifacts for Prism to stage."""
    for number, (env_id, class_path) in enumerate(sorted(job.java_environments.items())):
        harness_dir = workdir / f"java-{number}"
        harness_dir.mkdir()
        command = harness_command(class_path, harness_jars, harness_dir)
        _process_environment(pipeline, env_id, workdir / f"java-boot-{number}", command)
    return pipeline


def _process_environment(pipeline, env_id: str, boot: Path, command: str) -> None:
    """Make the environment a process environment whose command is `boot`, a script that runs `command` (a shell
    command line) with Prism's flags; it names no artifacts (what it runs is local already)."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    boot.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
    boot.chmod(0o755)
    env = pipeline.components.environments[env_id]
    env.urn = common_urns.environments.PROCESS.urn
    env.payload = beam_runner_api_pb2.ProcessPayload(command=str(boot)).SerializeToString()
    del env.dependencies[:]


def _has_python(pipeline) -> bool:
    """Whether an environment of the pipeline runs Python SDK workers (from the pool: external_environments)."""
    from apache_beam.portability import common_urns

    return any(env.urn == common_urns.environments.EXTERNAL.urn for env in pipeline.components.environments.values())


# The Go worker's log lines as job messages: Beam's Go SDK's own and the pipeline's alike, under one name (Prism
# keeps no logger or source location at its info level), so INFO is DETAILED and warnings and errors stand out.
GO_WORKER_LOGGER = "org.apache.beam.sdk.go"
JAVA_WORKER_LOGGER = "org.apache.beam.fn.harness"  # a Java harness's lines, which reach Prism's log the same way
_SLOG_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR}
_SDK_PREFIX = "[SDK] "
_SERVING = "Serving JobManagement"  # Prism's line naming its Job API endpoint


class PrismLog:
    """Prism's JSON log lines, read until it exits: the endpoint it serves the Job API on, the SDK workers' lines
    (a Go worker logs through Prism's logging service) to the observer as job messages, the rest (Prism's own, a
    worker's raw output) to Prism's log file."""

    def __init__(
        self,
        binary: Path,
        lines: IO[bytes],
        observer: RunObserver,
        log_path: Path,
        logger: str = GO_WORKER_LOGGER,
        stages: PrismStages | None = None,
    ):
        self.binary, self.lines, self.observer, self.log_path = binary, lines, observer, log_path
        self.logger = logger  # the name the SDK workers' lines are logged under
        self.stages = stages  # what the job's stage lines tell (scripts/prism-build's)
        self._endpoint: str | None = None
        self._ended = threading.Event()  # the endpoint is known, or Prism's output ended without it

    def endpoint(self, prism: subprocess.Popen, timeout: float) -> str:
        """The address Prism serves the Job API on, once it says (EngineError if it exits or stays silent)."""
        self._ended.wait(timeout)
        if self._endpoint is None:
            prism.kill()
            said = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            raise EngineError(f"Prism ({self.binary}) did not start its job service: {said.strip() or 'no output'}")
        addresses = listening_addresses(int(self._endpoint.rsplit(":", 1)[1]))
        if addresses and not loopback_only(addresses):
            prism.kill()
            where = ", ".join(sorted({str(a) for a in addresses}))
            raise EngineError(
                f"Prism ({self.binary}) serves its job service on {where}, not on loopback only: anyone who reaches "
                "this host there could run any command through it. Beamport runs only a Prism built by "
                "scripts/prism-build, which listens on 127.0.0.1."
            )
        return self._endpoint

    def forward(self) -> None:
        with open(self.log_path, "ab") as rest:
            for raw in self.lines:
                try:
                    entry = json.loads(raw)
                    text = entry["msg"]
                except (ValueError, TypeError, KeyError):
                    rest.write(raw)
                    continue
                if text == _SERVING and self._endpoint is None and isinstance(entry.get("endpoint"), str):
                    self._endpoint = entry["endpoint"]
                    self._ended.set()
                if text in (STAGE_TRANSFORMS, STAGE_WATERMARKS):  # a line a second: not kept in the log
                    if self.stages is not None:
                        self.stages.told(text, entry.get("stages"))
                    continue
                if not isinstance(text, str) or not text.startswith(_SDK_PREFIX):
                    rest.write(raw)
                    continue
                self.observer.log(_worker_record(self.logger, entry, text))
        self._ended.set()


# The lines scripts/prism-build's Prism logs of a job: its stages' transforms (once, as it starts, {stage id:
# [transform id]}) and their watermarks (every second, [{"stage", "input_ms", "output_ms", "pending"}]).
STAGE_TRANSFORMS = "beamport: stage transforms"
STAGE_WATERMARKS = "beamport: stage watermarks"
# Prism's watermarks are Beam Go's mtime: milliseconds, from math.MinInt64 / 1000 (none yet: Go's division rounds
# toward zero) to the end of the global window (a day before math.MaxInt64 / 1000) and beyond (the end of time).
_PRISM_NO_WATERMARK_MS = -(2**63 // 1000)
_PRISM_END_OF_WINDOW_MS = (2**63 - 1) // 1000 - 24 * 60 * 60 * 1000
STAGE_NAME_LENGTH = 200


class PrismStages:
    """A Prism job's fused stages, from its stage lines (scripts/prism-build's Prism): each named by its
    transforms' outermost names ("stage-3: Read, Observe"), in the job's stage states as Flink's vertices are; and,
    for a streaming job, their watermarks as StageFigures, as Flink's engine gives them (FlinkRest.stage_figures).
    Prism counts no records per stage: a stage's elements are getMetrics' ElementCount, from Prism's metrics. A
    Prism that logs no stage lines (not built by scripts/prism-build) gives one stage, "Prism", at the end."""

    def __init__(self, observer: RunObserver | None, pipeline, streaming: bool):
        self.observer = observer
        self.streaming = streaming
        self.transforms = {tid: t.unique_name for tid, t in pipeline.components.transforms.items()} if pipeline else {}
        self.names: dict[str, str] = {}  # by Prism's stage id
        self.steps: dict[str, frozenset[str]] = {}  # each stage's transforms (Prism's ids), by its id

    def told(self, text: str, stages) -> None:
        """A stage line of Prism's (its message `text`, its `stages`), as PrismLog reads it."""
        if self.observer is None:
            return
        if text == STAGE_TRANSFORMS and isinstance(stages, dict) and not self.names:
            now = wire.now_us()
            for stage_id, transforms in sorted(stages.items(), key=lambda item: _stage_number(item[0])):
                name = self.names[stage_id] = self._name(stage_id, transforms)
                self.steps[stage_id] = frozenset(map(str, transforms if isinstance(transforms, list) else []))
                self.observer.stage_state(name, STAGE_RUNNING, now)
        elif text == STAGE_WATERMARKS and isinstance(stages, list) and self.streaming and self.names:
            now = wire.now_us()
            figures = {}
            for mark in stages:
                stage_id = str(mark.get("stage")) if isinstance(mark, dict) else ""
                stage = self.names.get(stage_id)
                if stage is not None:
                    figures[stage] = StageFigures(
                        measured_us=now,
                        input_watermark_us=_prism_watermark_us(mark.get("input_ms")),
                        output_watermark_us=_prism_watermark_us(mark.get("output_ms")),
                        transforms=self.steps.get(stage_id, frozenset()),
                    )
            if figures:
                self.observer.stage_figures(figures)

    def ended(self, state: str) -> None:
        """The job ended: each stage in `state` (STAGE_DONE)."""
        if self.observer is None:
            return
        now = wire.now_us()
        if not self.names:
            self.observer.stage_state("Prism", STAGE_RUNNING, now)
        for name in self.names.values() or ["Prism"]:
            self.observer.stage_state(name, state, now)

    def _name(self, stage_id: str, transforms) -> str:
        """`stage-3: Read, Observe`: the stage's number and its transforms' outermost names, in their order."""
        outer: list[str] = []
        for transform in transforms if isinstance(transforms, list) else []:
            name = self._transform_name(str(transform)).split("/", 1)[0]
            if name not in outer:
                outer.append(name)
        named = f"{stage_id}: {', '.join(outer)}" if outer else str(stage_id)
        return named if len(named) <= STAGE_NAME_LENGTH else named[: STAGE_NAME_LENGTH - 3] + "..."

    def _transform_name(self, transform_id: str) -> str:
        """A transform's unique name; the transforms Prism expands a splittable DoFn or a combine into are named
        after it (Prism's ids for them are "e" + its id + "_" + a part: `_pwr`, `_processandsplit`, `_lift`...)."""
        if transform_id in self.transforms:
            return self.transforms[transform_id]
        expanded_from = transform_id.removeprefix("e").rsplit("_", 1)[0]
        return self.transforms.get(expanded_from, transform_id)


def _stage_number(stage_id: str) -> tuple[int, str]:
    digits = "".join(c for c in stage_id if c.isdigit())
    return (int(digits) if digits else 0, stage_id)


def _prism_watermark_us(value) -> int | None:
    """A Prism watermark (ms) in µs; None for none yet, and from the end of the global window on (the input is all
    read: the stage's age and lag no longer mean anything)."""
    if not isinstance(value, int) or value <= _PRISM_NO_WATERMARK_MS or value >= _PRISM_END_OF_WINDOW_MS:
        return None
    return value * 1000


def _worker_record(logger: str, entry: dict, text: str) -> logging.LogRecord:
    level = str(entry.get("level", "INFO"))
    return logging.LogRecord(
        logger,
        _SLOG_LEVELS.get(level.split("+")[0].split("-")[0], logging.INFO),
        "",
        0,
        text.removeprefix(_SDK_PREFIX),
        None,
        None,
    )
