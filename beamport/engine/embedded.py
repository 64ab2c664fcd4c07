"""EmbeddedEngine: runs a staged job on Beam's FnApiRunner (the engine behind Python's DirectRunner).

The runner is driven through `run_via_runner_api`, with the pipeline proto as submitted (its Python
environments made embedded by staging). A subclass of FnApiRunner wraps `_execute_bundle`, the one
method every bundle of every fused stage goes through, to report stage states and metrics as they happen.

A Beam Java pipeline's Java environments run in a Java SDK harness each (engine/java_boot.py), a JVM that
FnApiRunner feeds over the Fn API's gRPC as it feeds Python's SDK harness subprocesses; a Beam Go pipeline's Go
environments run in the job's Go worker binary the same way (engine/go_boot.py).

Parallelism (see docs/engines.md): `run_via_runner_api` ignores direct_num_workers (only `run_pipeline`
reads it), so the engine sets the runner's worker count itself. With one worker, or in "threads" mode,
the SDK workers are embedded in this process (threads: concurrency for I/O, one core for Python code).
In "processes" mode each worker is an SDK harness subprocess (`python -m apache_beam.runners.worker.
sdk_worker_main`, what Beam's multi_processing running mode starts), fed over the Fn API's gRPC.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from apache_beam.internal import pickler
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import SetupOptions
from apache_beam.options.value_provider import RuntimeValueProvider
from apache_beam.portability import python_urns
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiMetrics
from apache_beam.runners.worker.sdk_worker_main import _import_beam_plugins
from apache_beam.transforms import environments
from apache_beam.utils import timestamp
from google.protobuf import struct_pb2

from beamport.engine import java_warm
from beamport.engine.base import (
    DONE,
    FAILED,
    STAGE_DONE,
    STAGE_FAILED,
    STAGE_RUNNING,
    Engine,
    RunObserver,
    RunResult,
    StagedJob,
)
from beamport.engine.capture import pipeline_logs, user_error
from beamport.engine.go_boot import GO_OPTIONS_KEY, go_worker_command
from beamport.engine.java_boot import JavaUnavailable, harness_command
from beamport.translate.graph import readable_stage_names

THREADS = "threads"
PROCESSES = "processes"
AUTO = "auto"
MAIN_SESSION_FAILED = (
    "Could not load the main session (the job was submitted with save_main_session): check that the packages "
    "its main module uses are installed where Beamport runs, at the versions it was submitted with.\n"
)
METRICS_EVERY_S = 1.0  # between snapshots while a stage runs many bundles; every finished stage sends one too


@dataclass(frozen=True)
class Parallelism:
    workers: int
    mode: str  # THREADS or PROCESSES
    max_workers: int = 1  # what autoscaling may raise `workers` to during the run


def parallelism_for(options: dict, default_workers: int = 1, default_mode: str = AUTO) -> Parallelism:
    """How many SDK workers a job gets, and where they run.

    Workers: Dataflow's num_workers, else DirectRunner's direct_num_workers when not its default 1
    (0 means one per CPU, as on DirectRunner), else the engine's default.
    Mode: direct_running_mode multi_processing -> processes, multi_threading -> threads; otherwise
    (in_memory, the default, cannot be told from unset) the engine's default, where AUTO means
    processes as soon as there is more than one worker, since Python threads share one core.
    """
    workers = options.get("num_workers") or None
    if not workers and options.get("direct_num_workers", 1) != 1:
        workers = options["direct_num_workers"] or os.cpu_count() or 1
    # Dataflow's num_workers counts machines; here they share this host's cores, so no more than those.
    cores = os.cpu_count() or 1
    workers = min(max(1, int(workers or default_workers)), cores)
    # Dataflow's max_num_workers: the run may scale up to it (not with autoscaling_algorithm NONE).
    scaling = str(options.get("autoscaling_algorithm") or "").upper() != "NONE"
    max_workers = min(max(workers, int(options.get("max_num_workers") or 0) if scaling else 0), cores)
    mode = {"multi_processing": PROCESSES, "multi_threading": THREADS}.get(options.get("direct_running_mode") or "")
    mode = mode or default_mode
    if mode == AUTO:
        mode = PROCESSES if max_workers > 1 else THREADS
    return Parallelism(workers, mode, max_workers)


class EmbeddedEngine(Engine):
    def __init__(self, default_workers: int = 1, default_mode: str = AUTO, java_harness_jars: list[str] | None = None):
        """default_workers, default_mode: for jobs whose options do not say (see parallelism_for).
        java_harness_jars: Beamport's jars for Java SDK harnesses (java_boot.harness_jars, found by the worker)."""
        if default_mode not in (AUTO, THREADS, PROCESSES):
            raise ValueError(f"default_mode must be {AUTO}, {THREADS} or {PROCESSES}, not {default_mode!r}")
        self.default_workers = default_workers
        self.default_mode = default_mode
        self.java_harness_jars = java_harness_jars or []

    def run(self, job: StagedJob, observer: RunObserver) -> RunResult:
        options = job.pipeline_options()
        parallelism = parallelism_for(job.options, self.default_workers, self.default_mode)
        other_sdk = bool(job.java_environments or job.go_environments)
        if other_sdk:
            # One SDK worker per Java or Go environment: a JVM or a Go worker runs a bundle's parts on threads of
            # its own (goroutines), and each JVM takes seconds to start.
            parallelism = Parallelism(1, PROCESSES)
        with pipeline_logs(observer.log, _harness_log_level(job.options)), _harness_settings(job, options) as workdir:
            if other_sdk:
                try:
                    pipeline, provision_info = _for_other_sdks(job, workdir, self.java_harness_jars)
                except JavaUnavailable as exc:
                    return RunResult(FAILED, str(exc))
            elif parallelism.mode == PROCESSES:
                pipeline, provision_info = _for_worker_processes(job, workdir)
            else:
                pipeline, provision_info = job.pipeline, None
            try:
                pickler.set_library(options.view_as(SetupOptions).pickle_library)
            except (ImportError, ValueError) as exc:  # e.g. pickle_library=dill, and dill is not installed here
                return RunResult(FAILED, str(exc))
            if parallelism.mode == THREADS:
                # The SDK workers are this process: it imports the job's Beam plugins as sdk_worker_main does
                # (Beamport's own among them: beamport/io/bigquery.py).
                _import_beam_plugins(options.view_as(SetupOptions).beam_plugins or [])
            if parallelism.mode == THREADS and job.main_session:
                # As Dataflow's SDK harness does before running anything (sdk_worker_main._load_main_session);
                # worker subprocesses load it themselves from SEMI_PERSISTENT_DIRECTORY.
                try:
                    pickler.load_session(str(job.main_session))
                except Exception:
                    return RunResult(FAILED, MAIN_SESSION_FAILED + traceback.format_exc())
            runner = ObservedFnApiRunner(
                observer, parallelism.workers, parallelism.max_workers, provision_info=provision_info
            )
            if job.java_environments:
                where = "a Java SDK harness"
            elif job.go_environments:
                where = "the job's Go worker"
            else:
                where = f"{parallelism.workers} SDK worker(s), {parallelism.mode}"
            observer.running(f"the embedded engine ({where})", parallelism.workers)
            try:
                result = runner.run_via_runner_api(pipeline, options)
            except Exception as exc:  # the pipeline's failure, whatever it raised, is the job's result
                if runner.tracker:
                    runner.tracker.fail_running()
                return RunResult(FAILED, user_error(exc))
            finally:
                if java_warm.claimed():
                    observer.log(java_warm.CLAIMED_RECORD)
            observer.metrics(result.metrics().query())
            return RunResult(DONE)


class ObservedFnApiRunner(fn_runner.FnApiRunner):
    """FnApiRunner that tells an observer when stages start and end, and what the metrics are so far."""

    def __init__(self, observer: RunObserver, workers: int, max_workers: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.observer = observer
        # run_pipeline() would set this from direct_num_workers; run_via_runner_api() leaves the default 1.
        self._num_workers = workers
        self.max_workers = max(workers, max_workers)
        self.tracker: StageTracker | None = None

    def run_stages(self, stage_context, stages):
        self.tracker = StageTracker(stages, self.observer)
        result = super().run_stages(stage_context, stages)
        self.tracker.finish()
        return result

    def _execute_bundle(self, runner_execution_context, bundle_context_manager, bundle_input):
        tracker = self._running_tracker()
        stage = bundle_context_manager.stage.name
        if stage not in tracker.running and stage not in tracker.scaled:
            self._scale(stage, bundle_context_manager, bundle_input)
        tracker.bundle_started(stage)
        try:
            result = super()._execute_bundle(runner_execution_context, bundle_context_manager, bundle_input)
        except BaseException:
            tracker.stage_failed(stage)
            raise
        tracker.bundle_finished(stage, result.process_bundle.monitoring_infos, runner_execution_context)
        return result

    def _running_tracker(self) -> StageTracker:
        # Bundles run only inside run_stages, which set it.
        assert self.tracker is not None
        return self.tracker

    def _scale(self, stage: str, bundle_context_manager, bundle_input) -> None:
        """Before a stage's first bundle: run it on as many SDK workers as the observer says (autoscaling).
        FnApiRunner's bundle managers take their worker count from the stage's context; more workers are
        created on demand (get_worker_handlers)."""
        tracker = self._running_tracker()
        tracker.scaled.add(stage)
        if bundle_context_manager.stage.is_stateful():
            return  # one key at a time: FnApiRunner runs stateful stages on one worker whatever the count
        ask = getattr(self.observer, "workers_for", None)
        target = ask(tracker.names[stage], _backlog_bytes(bundle_input)) if ask else None
        if not target:
            return
        workers, before = max(1, min(target, self.max_workers)), bundle_context_manager.num_workers
        if workers != before:
            bundle_context_manager.num_workers = workers
            bundle_context_manager._worker_handlers = None  # fetched again, for the new count
        tell = getattr(self.observer, "workers_changed", None)
        if tell and (workers != tracker.workers or workers < target):
            tell(tracker.names[stage], workers, target, self.max_workers)
        tracker.workers = workers


def _backlog_bytes(bundle_input) -> int:
    """The size of a bundle's input: encoded chunks as they are, grouped values (a GroupByKey's output,
    kept decoded by Beam) estimated by their length; 0 where Beam's buffers do not say."""
    total = 0
    try:
        for buffer in bundle_input.data.values():  # translations.DataInput(data, timers)
            total += sum(len(chunk) for chunk in getattr(buffer, "_inputs", ()))
            for key, values in getattr(buffer, "_table", {}).items():
                total += len(key) + sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in values)
    except (AttributeError, TypeError):
        pass
    return total


class StageTracker:
    """Stage states and metrics snapshots from FnApiRunner's bundles (run one at a time by run_stages'
    loop: with several workers, a bundle's parts run in parallel inside one _execute_bundle call).

    A stage starts with its first bundle. It is done when nothing more can reach it: its inputs'
    producers are done (its input watermark is at the end of time) and no input of its waits in
    the runner's queues. Whatever is still running when the run ends is done then.
    """

    def __init__(self, stages, observer: RunObserver):
        self.observer = observer
        self.names = readable_stage_names(stages)
        self.running: set[str] = set()
        self.scaled: set[str] = set()  # stages whose worker count was decided
        self.workers = 0  # the count the last stage started with (0: not decided yet)
        self.infos_by_stage: dict[str, list] = {}
        self.last_metrics = 0.0

    def bundle_started(self, stage: str) -> None:
        if stage in self.running:
            return
        self.running.add(stage)
        self.observer.stage_state(self.names[stage], STAGE_RUNNING, _now_us())

    def bundle_finished(self, stage: str, monitoring_infos, context) -> None:
        # Accumulated as run_stages does for its result, so the last snapshot equals result.metrics().
        previous = self.infos_by_stage.get(stage, [])
        self.infos_by_stage[stage] = list(fn_runner.consolidate_monitoring_infos([*monitoring_infos, *previous]))
        finished = [s for s in sorted(self.running) if _nothing_more_for(s, context)]
        for name in finished:
            self.running.discard(name)
            self.observer.stage_state(self.names[name], STAGE_DONE, _now_us())
        if finished or time.monotonic() - self.last_metrics >= METRICS_EVERY_S:
            self.send_metrics()

    def stage_failed(self, stage: str) -> None:
        self.running.discard(stage)
        self.observer.stage_state(self.names[stage], STAGE_FAILED, _now_us())
        self.send_metrics()

    def fail_running(self) -> None:
        for stage in sorted(self.running):
            self.stage_failed(stage)

    def finish(self) -> None:
        for stage in sorted(self.running):
            self.observer.stage_state(self.names[stage], STAGE_DONE, _now_us())
        self.running.clear()

    def send_metrics(self) -> None:
        self.last_metrics = time.monotonic()
        self.observer.metrics(FnApiMetrics(dict(self.infos_by_stage), user_metrics_only=True).query())
        self.observer.monitoring_infos([info for infos in self.infos_by_stage.values() for info in infos])


def _nothing_more_for(stage: str, context) -> bool:
    try:
        # The queues' keys: the stage name for ready inputs, (stage name, time) for pending ones.
        queues = context.queues
        if (
            stage in queues.ready_inputs._keyed_elements
            or any(key[0] == stage for key in queues.watermark_pending_inputs._keyed_elements)
            or any(key[0] == stage for key in queues.time_pending_inputs._keyed_elements)
        ):
            return False
        return context.watermark_manager.get_stage_node(stage).input_watermark() >= timestamp.MAX_TIMESTAMP
    except (AttributeError, KeyError):  # another Beam's internals: stages then end with the run
        return False


def _now_us() -> int:
    return time.time_ns() // 1000


def _harness_log_level(options: dict) -> int:
    """The level Dataflow's SDK harness logs at: default_sdk_harness_log_level, INFO unless set."""
    name = str(options.get("default_sdk_harness_log_level") or "INFO").upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.INFO


@contextlib.contextmanager
def _harness_settings(job: StagedJob, options) -> Iterator[Path]:
    """What Dataflow's SDK harness sets up in its process before running (sdk_worker_main.create_harness):
    options for templates' value providers and for file systems; plus the staged pure-Python wheels on
    sys.path. Undone afterwards (with the pickle library run() sets), so runs in one process do not leak
    into each other. Yields a scratch directory for the run."""
    workdir = Path(tempfile.mkdtemp(prefix="beamport-run-"))
    saved_path = list(sys.path)
    RuntimeValueProvider.set_runtime_options(job.options)
    FileSystems.set_options(options)
    sys.path[:0] = job.python_path
    try:
        yield workdir
    finally:
        sys.path[:] = saved_path
        pickler.set_library(pickler.DEFAULT_PICKLE_LIB)
        RuntimeValueProvider.set_runtime_options(None)
        shutil.rmtree(workdir, ignore_errors=True)


def _for_worker_processes(job: StagedJob, workdir: Path):
    """The pipeline and provision info for SDK harness subprocesses: the embedded environments become subprocess
    environments, and each subprocess gets what Dataflow gives its SDK harness: the options (provisioned
    over the Fn API), the main session (in SEMI_PERSISTENT_DIRECTORY/staged), the staged wheels."""
    staged = workdir / "staged"
    staged.mkdir()
    if job.main_session:
        shutil.copyfile(job.main_session, staged / "pickled_main_session")
    variables = {"SEMI_PERSISTENT_DIRECTORY": str(workdir)}
    if job.python_path:
        inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
        variables["PYTHONPATH"] = os.pathsep.join([*job.python_path, *inherited])
    # The command runs through a shell (local_job_service.SubprocessSdkWorker): variables go in front of it.
    command = " ".join(
        [
            *(f"{k}={shlex.quote(v)}" for k, v in variables.items()),
            shlex.quote(sys.executable),
            "-m",
            "apache_beam.runners.worker.sdk_worker_main",
        ]
    )
    subprocess_env = environments.SubprocessSDKEnvironment.from_command_string(command).to_runner_api(
        None  # type: ignore[arg-type]  # Beam's type; a subprocess environment's payload needs no context
    )
    pipeline = copy.deepcopy(job.pipeline)
    for env in pipeline.components.environments.values():
        if env.urn == python_urns.EMBEDDED_PYTHON:
            env.urn, env.payload = subprocess_env.urn, subprocess_env.payload
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(
            retrieval_token="unused-retrieval-token", pipeline_options=_provisioned_options(job.options)
        )
    )
    return pipeline, provision_info


def _for_other_sdks(job: StagedJob, workdir: Path, harness_jars: list[str]):
    """The pipeline and provision info for Java SDK harnesses and Go workers: each Java environment becomes a
    subprocess environment running java_boot over its staged jars, each Go environment one running go_boot over
    its worker binary. A Java harness gets the job's options as the Java runner wrote them (Java's option names,
    which Java's harness reads); a Go worker reads its program's flags under Beam Go's own key."""
    pipeline = copy.deepcopy(job.pipeline)
    commands = {env_id: harness_command(jars, harness_jars, workdir) for env_id, jars in job.java_environments.items()}
    for number, (env_id, binary) in enumerate(sorted(job.go_environments.items())):
        commands[env_id] = go_worker_command(binary, workdir / f"go-{number}")
    for env_id, command in commands.items():
        subprocess_env = environments.SubprocessSDKEnvironment.from_command_string(command).to_runner_api(
            None  # type: ignore[arg-type]  # Beam's type; a subprocess environment's payload needs no context
        )
        env = pipeline.components.environments[env_id]
        env.urn, env.payload = subprocess_env.urn, subprocess_env.payload
    options = {k: v for k, v in job.options.items() if v is not None}
    struct = struct_pb2.Struct()
    struct.update({"options": options})
    if "go_options" in options:
        struct.update({GO_OPTIONS_KEY: options["go_options"]})
    provision_info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(retrieval_token="unused-retrieval-token", pipeline_options=struct)
    )
    return pipeline, provision_info


def _provisioned_options(options: dict) -> struct_pb2.Struct:
    """Options as the SDK harness reads them (sdk_worker_main: PipelineOptions.from_dictionary of
    {"options": {...}}). A Struct has only floats, and Beam's int options refuse "4.0": whole numbers
    travel as strings, which from_dictionary turns into the same flags. True booleans whose flag Beam
    does not define (store_false options at their default) are left out: the harness would warn."""
    flags = _known_flags()
    carried = {}
    for key, value in options.items():
        if value is None or (value is True and f"--{key}" not in flags):
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        carried[key] = value
    struct = struct_pb2.Struct()
    struct.update({"options": carried})
    return struct


def _known_flags() -> set[str]:
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)
    return set(parser._option_string_actions)
