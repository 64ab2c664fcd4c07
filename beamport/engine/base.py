"""The engine interface: what runs a staged job, and what it tells its caller while it runs.

An engine runs one job synchronously in the calling process. The caller (the worker harness) runs it
in a process of its own and cancels by killing that process (and its process group: an engine may
start worker subprocesses), so engines need no cancellation protocol of their own.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the server imports this module for StreamingControl and its errors; it never imports Beam
    from apache_beam.portability.api import beam_runner_api_pb2

# What a run ends in (Beam's PipelineState names).
DONE = "DONE"
FAILED = "FAILED"
DRAINED = "DRAINED"  # a streaming run that stopped reading, fired its windows and flushed (on request)
# A streaming run stopped with a savepoint for an update (StreamingControl.savepoint, stop=True): its state, input
# positions among it, is in that savepoint, and nothing was read or written after it. The job's work goes on from
# there, in the job that takes over, or in this job's next attempt if none does: the run ends without a report.
HANDED_OVER = "HANDED_OVER"

# What a fused stage goes through (Dataflow's execution state names).
STAGE_RUNNING = "JOB_STATE_RUNNING"
STAGE_DONE = "JOB_STATE_DONE"
STAGE_FAILED = "JOB_STATE_FAILED"

JOB_TYPE_BATCH = "FNAPI_BATCH"
JOB_TYPE_STREAMING = "FNAPI_STREAMING"


@dataclass
class StagedJob:
    """A job made ready to run: its pipeline, options and main session, read from where it was staged."""

    job_id: str
    job_type: str  # JOB_TYPE_BATCH or JOB_TYPE_STREAMING
    # The pipeline as submitted, except that its Python SDK environments run embedded (see staging.py).
    pipeline: beam_runner_api_pb2.Pipeline
    # sdkPipelineOptions.options, with JSON's whole floats turned back into ints (see staging.py).
    options: dict[str, Any]
    main_session: Path | None = None  # the pickled main session (save_main_session), a local file
    python_path: list[str] = field(default_factory=list)  # staged pure-Python wheels, importable as they are
    rewritten_environments: list[str] = field(default_factory=list)  # ids of the environments rewritten
    # Beam Java SDK environments, by id: each one's class path (its staged jars, local files), in order.
    java_environments: dict[str, list[str]] = field(default_factory=dict)
    # Beam Go SDK environments, by id: each one's worker binary (the job's staged binary, a local executable).
    go_environments: dict[str, str] = field(default_factory=dict)
    staged_bytes: int = 0  # the size of the staged files read (pipeline, main session, packages)

    def pipeline_options(self):
        """The options as Beam's PipelineOptions, as Dataflow's SDK harness builds them."""
        from apache_beam.options.pipeline_options import PipelineOptions

        return PipelineOptions.from_dictionary(self.options)


@dataclass
class StageFigures:
    """What an engine measured of one fused stage of a streaming run, at `measured_us` (µs since the epoch).
    A figure the engine does not give is None: never estimated (docs/engines.md, "Streaming signals")."""

    measured_us: int
    input_watermark_us: int | None = None  # the event time the stage's input is complete up to
    output_watermark_us: int | None = None  # the watermark the stage passes on (its data watermark)
    elements_in: int | None = None  # elements the stage took in so far
    elements_out: int | None = None  # elements it passed on so far
    elements_out_per_s: float | None = None  # the rate it passes them on at now, as the engine measures it
    # The steps the stage runs, as far as the engine tells (transform ids or unique names): where its sources'
    # lags go (translate.metrics.stage_source_lags).
    transforms: frozenset[str] = frozenset()


class RunObserver(Protocol):
    """What an engine reports while a job runs. Called from the engine's threads: keep each call short."""

    def running(self, detail: str, workers: int | None = None) -> None:
        """The engine has the job running now (Flink: on the cluster; not merely submitted), so the job is
        JOB_STATE_RUNNING from here on. `detail` says where, for the job's log; `workers` how many SDK workers
        the run starts on, where the engine decides it (None: Beam's portable default, one per environment).
        Called once per run."""

    def stage_state(self, stage_name: str, state: str, time_us: int) -> None:
        """A fused stage started (STAGE_RUNNING) or ended (STAGE_DONE, STAGE_FAILED); time in µs since the epoch."""

    def metrics(self, results: dict[str, list]) -> None:
        """The job's user metrics so far, as `PipelineResult.metrics().query()` gives them on DirectRunner:
        {"counters": [MetricResult...], "distributions": [...], "gauges": [...], "string_sets": [...],
        "bounded_tries": [...]}, each MetricResult keyed by the transform's unique name. Each call is a
        complete snapshot (not a delta); the last one is the job's final metrics."""

    def log(self, record: logging.LogRecord) -> None:
        """A log record the pipeline's code emitted (a DoFn's logging.warning, an IO's progress...)."""

    def monitoring_infos(self, infos: list) -> None:
        """Every monitoring info of the run so far (Beam's MonitoringInfo protos, aggregated per stage),
        sent with each metrics snapshot: the system metrics, such as element counts per PCollection."""

    def stage_figures(self, figures: dict[str, StageFigures]) -> None:
        """The latest figures of a streaming run's stages, by stage name (the names of `stage_state`): each
        call a complete reading. Engines that measure no stage never call it."""

    def workers_for(self, stage_name: str, backlog_bytes: int) -> int | None:
        """A stage is about to start with this much input in front of it: how many SDK workers should run
        it (None: as many as now). Called once per stage, before it runs; may take a round trip."""

    def workers_changed(self, stage_name: str, workers: int, target: int, limit: int) -> None:
        """The run now uses `workers` SDK workers (asked for `target`; the host allows `limit`)."""


@dataclass
class RunResult:
    state: str  # DONE, FAILED, DRAINED or HANDED_OVER
    error: str | None = None  # for FAILED: the user's exception, formatted as a traceback


class Engine(abc.ABC):
    """What runs a staged job. Which engines there are, and what each can do, is beamport.engine.registry."""

    @abc.abstractmethod
    def run(self, job: StagedJob, observer: RunObserver) -> RunResult:
        """Run the job to its end in this process. Errors of the pipeline are a FAILED result, not exceptions."""

    def request_drain(self) -> bool:
        """Drain the running job: its sources stop reading, every window fires, the run ends DRAINED. Called from
        another thread while `run` runs, once per report while the job drains. Answers whether this engine
        drains; by default it cannot, and the run goes on until its input ends or it is stopped."""
        return False

    def stop(self) -> None:
        """Stop the run at once, from another thread: the executor then kills its process group. An engine
        whose run lives outside that group (a job on a cluster) stops it here; by default there is nothing
        outside it to stop."""
        return


# -- streaming: what the service asks of the engine that runs a streaming job, outside any worker --------


class EngineError(Exception):
    """The engine could not do what was asked (its message says why, for the user)."""


@dataclass
class Savepoint:
    """A job's state, saved by its engine while it runs (what Dataflow calls a snapshot's data)."""

    location: str  # where the engine wrote it (a directory): what a new job restores from, what is deleted
    size_bytes: int


def savepoint_path(location: str) -> Path:
    """A savepoint's location as a local path: engines may name it with a file: URI (Flink does)."""
    if location.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(location).path))
    return Path(location)


class StreamingControl(abc.ABC):
    """Control of running streaming jobs, used by the service layer (snapshots, drain, update).

    Jobs are named by their Beamport job id. Implemented by beamport.engine.flink.FlinkControl, for the engines
    the registry says keep state; a server without one has none (`registry.state_control(settings)` answers
    None), and refuses snapshots with FAILED_PRECONDITION naming what would work.
    """

    name: str = ""  # the engine's name (beamport.engine.registry), for choosing and for messages

    @abc.abstractmethod
    def savepoint(self, job_id: str, directory: Path, stop: bool = False) -> Savepoint:
        """Save the running job's state under `directory` (created if missing), without stopping it; or, `stop`
        (an update), stopping it with that state: it reads and writes nothing after the savepoint, so the job
        that takes over neither repeats nor misses anything (its run ends HANDED_OVER).
        Blocks until the savepoint is complete. Raises EngineError (job not running on the engine...)."""

    @abc.abstractmethod
    def stop(self, job_id: str) -> None:
        """Stop the running job at once, without draining (its state was saved: an update). Raises EngineError."""

    @abc.abstractmethod
    def discard(self, location: str) -> None:
        """Delete a savepoint's data (a location `savepoint` returned). Missing data is not an error."""
