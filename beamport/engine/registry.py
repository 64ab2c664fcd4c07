"""The engines Beamport has, and what each can do: the one place that names them (docs/engines.md).

Everything else asks here: the server which engines its settings give it and which one streaming jobs run on,
the service whether a job's engine keeps state, the executor how to build the engine its work item names. An
engine's name is what a job's label `beamport_engine` says and what a work item's configuration carries
("engine": "flink"): stored data, so a name never changes.

Registering imports no Beam: an engine's module is imported only inside its factories, when a worker's executor
builds the engine (or the server the control of its saved state, which imports no Beam either). The server
process imports this module and must never import Beam (tests/test_beam_sidecar.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from beamport.config import EngineSettings
    from beamport.engine.base import Engine, StreamingControl

# The SDKs an engine runs pipelines of: Beam's Python SDK (Beamport's own Python), Beam's Java SDK (a Java
# SDK harness over the job's staged jars, engine/java_boot.py) and Beam's Go SDK (the job's staged worker
# binary, engine/go_boot.py). A job's SDK is what its submission's user agent says (service/sdk_version.py).
PYTHON = "python"
JAVA = "java"
GO = "go"
SDK_TITLES = {PYTHON: "Python", JAVA: "Java", GO: "Go"}


class UnknownEngine(ValueError):
    """A name no engine of Beamport has."""


@dataclass(frozen=True)
class EngineSpec:
    """What an engine is and can do, as data; and how to configure and build it (without importing it here)."""

    name: str  # the label value and the work item's "engine": stored, never renamed
    title: str  # the engine in messages ("Flink")
    batch: bool  # runs batch jobs
    streaming: bool  # runs streaming jobs with unbounded sources (others run bounded input only)
    keeps_state: bool  # saves a running job's state: snapshots, jobs created from one, updates that keep state
    # The SDKs whose jobs Engine.request_drain drains (sources stop reading, windows fire, the run ends DRAINED):
    # the service refuses a drain of any other job on it.
    drains: frozenset[str]
    # Engine.stop stops a run that lives outside the executor's process group (a cluster's job); otherwise the run,
    # and its SDK harnesses, live under the executor (which keeps a JVM warm for the next Java job only then).
    stops_outside: bool
    sdks: frozenset[str]  # the SDKs whose pipelines it runs
    # What the engine needs from a host's EngineSettings, as JSON for the executor (None: the host does not have
    # it); None for an engine that needs nothing, which every host has.
    host_config: Callable[[EngineSettings], Any] | None
    missing_on_server: str  # why a server that lacks it refuses a job naming it: how to give it one
    missing_on_worker: str  # the same, for a worker given work on it
    # (host config, work item configuration, SDK workers per job) -> the Engine; imports the engine's module.
    build: Callable[[Any, dict, int], Engine]
    # (host config) -> the control of its jobs' saved state, for the service (engines that keep state).
    state_control: Callable[[Any], StreamingControl] | None = None
    # For an engine every host has (no host_config): what it takes from the worker's host all the same, as
    # JSON for the executor (found outside the sandbox, where the worker's home directory is); None: nothing.
    worker_config: Callable[[EngineSettings], Any] | None = None
    # Runs Beam's reshuffle URN itself, with no GroupByKey; staging then gives Python's ReshufflePerKey that URN
    # (engine/reshuffle_staging.py: on Flink, its GroupByKey dropped a drained window's output as late).
    native_reshuffle: bool = False

    def on(self, settings: EngineSettings) -> bool:
        """Whether a host with these settings has this engine."""
        return self.host_config is None or self.host_config(settings) is not None


def _embedded_worker_config(settings: EngineSettings) -> dict:
    from beamport.engine.java_boot import harness_jars

    return {"java_harness_jars": harness_jars()}


def _build_embedded(config: Any, work: dict, sdk_workers: int) -> Engine:
    from beamport.engine.embedded import EmbeddedEngine

    return EmbeddedEngine(default_workers=sdk_workers, java_harness_jars=(config or {}).get("java_harness_jars"))


def _flink_config(settings: EngineSettings) -> dict | None:
    return settings.flink.model_dump(mode="json") if settings.flink else None


def _build_flink(config: dict, work: dict, sdk_workers: int) -> Engine:
    from beamport.config import FlinkConfig
    from beamport.engine.flink import FlinkEngine

    return FlinkEngine(FlinkConfig(**config), restore_from=work.get("restoreFrom"), state_names=work.get("stateNames"))


def _flink_control(config: dict) -> StreamingControl:
    from beamport.config import FlinkConfig
    from beamport.engine.flink import FlinkControl

    return FlinkControl(FlinkConfig(**config))


def _prism_config(settings: EngineSettings) -> dict | None:
    if not settings.prism:
        return None
    from beamport.engine.java_boot import harness_jars

    return {"binary": str(settings.prism), "java_harness_jars": harness_jars()}


def _build_prism(config: dict, work: dict, sdk_workers: int) -> Engine:
    from beamport.engine.prism import PrismEngine

    return PrismEngine(Path(config["binary"]), java_harness_jars=config.get("java_harness_jars"))


EMBEDDED = EngineSpec(
    name="embedded",
    title="embedded",
    batch=True,
    streaming=False,  # FnApiRunner runs until its input is exhausted: a streaming job's bounded input only
    keeps_state=False,
    drains=frozenset(),
    stops_outside=False,
    # Java and Go: FnApiRunner starts a Java SDK harness, or the job's Go worker binary, from a subprocess
    # environment (engine/java_boot.py, engine/go_boot.py), as it starts Python's.
    sdks=frozenset({PYTHON, JAVA, GO}),
    host_config=None,
    missing_on_server="",
    missing_on_worker="",
    build=_build_embedded,
    worker_config=_embedded_worker_config,
)
FLINK = EngineSpec(
    name="flink",
    title="Flink",
    batch=True,
    streaming=True,
    keeps_state=True,  # savepoints
    # A drain stops Beamport's own sources (Python's, and those staging gives Java's and Go's Pub/Sub I/O), as on
    # Prism, and Java's and Go's own splittable sources are truncated (harness_process.Drain); the service refuses
    # to drain a job with any other source of its SDK's own (service/jobs.py).
    drains=frozenset({PYTHON, JAVA, GO}),
    stops_outside=True,  # the job runs on the cluster
    # Java and Go: the cluster's SDK worker pool starts a Java SDK harness over the job's staged jars, or the job's
    # Go worker binary (engine/sdk_boot.py).
    sdks=frozenset({PYTHON, JAVA, GO}),
    native_reshuffle=True,
    host_config=_flink_config,
    missing_on_server="no Flink cluster: start one with scripts/flink-cluster and give its endpoints to `beamport "
    "serve` (--flink-master, --flink-job-server, --flink-sdk-pool; see docs/engines.md)",
    missing_on_worker="This worker has no Flink cluster to run the job on: start it with --flink-master, "
    "--flink-job-server and --flink-sdk-pool (or the BEAMPORT_FLINK_* variables scripts/flink-cluster writes).",
    build=_build_flink,
    state_control=_flink_control,
)
PRISM = EngineSpec(
    name="prism",
    title="Prism",
    batch=True,
    streaming=True,
    keeps_state=False,  # Prism keeps no savepoints
    # A drain stops Beamport's own sources (Python's, and those staging gives Java's and Go's Pub/Sub I/O); Prism
    # itself has no drain: Java's and Go's own splittable sources are truncated (harness_process.Drain), and the
    # service refuses to drain a job with any other source of its SDK's own.
    drains=frozenset({PYTHON, JAVA, GO}),
    stops_outside=False,  # Prism runs in the executor's process group; stop cancels the invocation all the same
    # Go and Java: Prism starts the job's worker binary, or a Java SDK harness over its staged jars, in a process
    # environment (engine/go_boot.py, engine/java_boot.py), as Beam's containers do.
    sdks=frozenset({PYTHON, GO, JAVA}),
    host_config=_prism_config,
    missing_on_server="no Prism binary: build it with scripts/prism-build, or name one with `beamport serve --prism "
    "PATH` (see docs/engines.md)",
    missing_on_worker="This worker has no Prism binary to run the job on: start it with --prism PATH (or "
    "BEAMPORT_PRISM; scripts/prism-build builds one).",
    build=_build_prism,
)
# In order of preference: streaming jobs that name no engine run on the first streaming engine a server has,
# batch jobs on the first batch engine (which needs nothing, so every server has it).
ENGINES: tuple[EngineSpec, ...] = (EMBEDDED, FLINK, PRISM)
_BY_NAME = {spec.name: spec for spec in ENGINES}
BATCH_DEFAULT = next(spec for spec in ENGINES if spec.batch and spec.host_config is None)


def for_sdk(sdk: str, streaming: bool) -> EngineSpec | None:
    """The first engine, in order of preference, that runs this SDK's jobs of this type (None: none does)."""
    return next((spec for spec in ENGINES if sdk in spec.sdks and (spec.streaming if streaming else spec.batch)), None)


def names() -> list[str]:
    return [spec.name for spec in ENGINES]


def get(name: str) -> EngineSpec:
    """The engine of this name; UnknownEngine, naming the engines there are, for any other name."""
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        raise UnknownEngine(f"No engine is named {name!r}: Beamport's engines are {', '.join(names())}.") from None


def find(name: str | None) -> EngineSpec | None:
    """The engine of this name, or None (no name, or one no engine has)."""
    return _BY_NAME.get(name) if isinstance(name, str) else None


def titles(specs: Iterable[EngineSpec]) -> str:
    """Engines for a message: "Flink", "Flink or Prism", "embedded, Flink or Prism"."""
    names = [spec.title for spec in specs]
    return " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


def keeping_state() -> list[EngineSpec]:
    return [spec for spec in ENGINES if spec.keeps_state]


def available(settings: EngineSettings) -> list[EngineSpec]:
    """The engines a host with these settings has, in order of preference."""
    return [spec for spec in ENGINES if spec.on(settings)]


def default_streaming(settings: EngineSettings) -> EngineSpec | None:
    """The engine streaming jobs that name none run on, on a server with these settings (None: it has none)."""
    return next((spec for spec in available(settings) if spec.streaming), None)


def host_configs(settings: EngineSettings) -> dict[str, Any]:
    """What each configurable engine needs from these settings (None where the host lacks it), and what the
    others take from the worker's host (worker_config), by name: how a worker hands its engines to its
    executors (JSON, in each work item's assignment)."""
    configs = {spec.name: spec.host_config(settings) for spec in ENGINES if spec.host_config is not None}
    configs.update({spec.name: spec.worker_config(settings) for spec in ENGINES if spec.worker_config is not None})
    return configs


def state_control(settings: EngineSettings) -> StreamingControl | None:
    """The control of saved state of the first engine these settings have that keeps state (None: none does)."""
    for spec in available(settings):
        if spec.keeps_state and spec.state_control is not None:
            return spec.state_control(spec.host_config(settings) if spec.host_config else None)
    return None
