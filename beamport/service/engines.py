"""Which engine runs a job: Dataflow has one service; Beamport has engines to choose from (docs/engines.md).

A job names its engine with the label `beamport_engine` (DataflowRunner: `--labels beamport_engine=flink`).
Otherwise batch jobs run on the batch engine (embedded), and streaming jobs on the server's streaming engine
(the first streaming engine of beamport.engine.registry the server has: Flink when it has a cluster, else
Prism when it has the binary; without either they wait in JOB_STATE_PENDING, saying so), unless that engine
does not run the job's SDK (its user agent's): then the first engine that does, and a server without it refuses
the job at create (every engine runs every SDK today: Python, Java and Go). What an engine can do (keep state,
drain...) is the registry's to say.
"""

from __future__ import annotations

from typing import Protocol

from beamport.engine import registry
from beamport.errors import failed_precondition, invalid_argument
from beamport.service import model
from beamport.service.sdk_version import sdk_language

ENGINE_LABEL = "beamport_engine"


class SavedState(Protocol):
    """Jobs' state saved by engines that keep it (the snapshot service): what the job and execution services ask
    of it, for jobs whose engine the registry says keeps state."""

    def restore_location(self, project_id: str, location: str, snapshot_id: str) -> str:
        """Where a snapshot's data is, for a job that starts from it; raises unless it can be started from."""

    def save_for_update(self, project_id: str, location: str, job_id: str, new_job_id: str) -> str:
        """For an update: the id of a snapshot of the running job's state, its engine run stopped with it;
        raises, saying why, when it cannot be saved (the job runs on)."""

    def stop_run(self, job_id: str) -> None:
        """Stop the engine's run of a job that ended without its worker (replaced by an update, or cancelled
        between attempts): best effort."""


def engine_of(doc: dict, streaming_engine: str | None) -> str | None:
    """The name of the engine that runs this job (None: a streaming job on a server without a streaming engine)."""
    named = (doc.get("labels") or {}).get(ENGINE_LABEL)
    if named:
        return named
    for_sdk = engine_for_sdk(doc, streaming_engine)
    if for_sdk is not None:
        return for_sdk.name
    if doc.get("type") == model.STREAMING:
        return streaming_engine
    return registry.BATCH_DEFAULT.name


def engine_for_sdk(doc: dict, streaming_engine: str | None) -> registry.EngineSpec | None:
    """The engine a job that names none runs on because the default one does not run its SDK (none today);
    None when the default serves (or no engine runs that SDK: staging then says why)."""
    sdk = sdk_language(doc)
    streaming = doc.get("type") == model.STREAMING
    default = registry.find(streaming_engine) if streaming else registry.BATCH_DEFAULT
    if default is None:  # a streaming job on a server without a streaming engine: the one it would prefer
        default = next(spec for spec in registry.ENGINES if spec.streaming)
    if sdk is None or sdk in default.sdks:
        return None
    return registry.for_sdk(sdk, streaming)


def spec_of(doc: dict, streaming_engine: str | None) -> registry.EngineSpec | None:
    """The engine that runs this job, None when there is none (or its label, changed since the job was created,
    names no engine)."""
    return registry.find(engine_of(doc, streaming_engine))


def stop_run_left_behind(saved_state: SavedState | None, doc: dict, streaming_engine: str | None) -> None:
    """The job ended with no worker to stop its run (cancelled between attempts, or its lease revoked while it
    was being cancelled), or with a worker that may not know of it (it took the work over and has not adopted the
    run yet): a run on an engine outside the workers' processes (a cluster's job) outlives the worker that started
    it, so the service stops it itself (best effort)."""
    spec = registry.find(engine_of(doc, streaming_engine))
    if spec is not None and spec.stops_outside and saved_state is not None:
        saved_state.stop_run(doc["id"])


def starts_over(doc: dict, streaming_engine: str | None) -> str | None:
    """The title of the engine of a streaming job that keeps no state (Prism): another attempt of its work would
    start again from its sources' start, reading and writing again what it already had. None for other jobs."""
    spec = spec_of(doc, streaming_engine)
    if doc.get("type") != model.STREAMING or spec is None or spec.keeps_state:
        return None
    return spec.title


def keeps_state(engine: str | None) -> bool:
    """Whether the engine of this name saves its jobs' state (snapshots, starting from one, updates with state)."""
    spec = registry.find(engine)
    return spec is not None and spec.keeps_state


def check_engine(doc: dict, available: set[str]) -> None:
    """Refuse a job that names an engine this server does not have."""
    named = (doc.get("labels") or {}).get(ENGINE_LABEL)
    if named is None:
        # No engine named: the one its SDK needs, where the default does not run it.
        for_sdk = engine_for_sdk(doc, None)
        if for_sdk is not None and for_sdk.name not in available:
            sdk = registry.SDK_TITLES.get(sdk_language(doc) or "", "")
            raise failed_precondition(
                f"This is a Beam {sdk} pipeline: Beamport runs those on {for_sdk.title}, and this Beamport server has "
                f"{for_sdk.missing_on_server}."
            )
        return
    spec = registry.find(named)
    if spec is None:
        raise invalid_argument(
            f"Label {ENGINE_LABEL}={named!r} names no engine: use one of {', '.join(registry.names())}."
        )
    if spec.name not in available:
        raise failed_precondition(
            f"The job asks for the {named} engine ({ENGINE_LABEL}={named}), but this Beamport server has "
            f"{spec.missing_on_server}."
        )
