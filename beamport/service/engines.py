"""Which engine runs a job: Dataflow has one service; Beamport has engines to choose from (docs/engines.md).

A job names its engine with the label `beamport_engine` (DataflowRunner: `--labels beamport_engine=flink`).
Otherwise batch jobs run on the embedded engine, and streaming jobs on the server's streaming engine
(Flink when the server has a cluster, else Prism when it has the binary; without either they wait in
JOB_STATE_PENDING, saying so).
"""

from __future__ import annotations

from beamport.errors import failed_precondition, invalid_argument
from beamport.service import model

ENGINE_LABEL = "beamport_engine"
EMBEDDED = "embedded"
FLINK = "flink"
PRISM = "prism"
ENGINES = (EMBEDDED, FLINK, PRISM)
SAVES_STATE = {FLINK}  # engines whose jobs can be snapshotted, started from a snapshot, updated with state


def engine_of(doc: dict, streaming_engine: str | None) -> str | None:
    """The engine that runs this job (None: a streaming job on a server without a streaming engine)."""
    named = (doc.get("labels") or {}).get(ENGINE_LABEL)
    if named:
        return named
    if doc.get("type") == model.STREAMING:
        return streaming_engine
    return EMBEDDED


_SETUP = {
    FLINK: "no Flink cluster: start one with scripts/flink-cluster and give its endpoints to `beamport serve` "
    "(--flink-master, --flink-job-server, --flink-sdk-pool; see docs/engines.md)",
    PRISM: "no Prism binary: build it with scripts/prism-build, or name one with `beamport serve --prism PATH` "
    "(see docs/engines.md)",
}


def check_engine(doc: dict, available: set[str]) -> None:
    """Refuse a job that names an engine this server does not have."""
    named = (doc.get("labels") or {}).get(ENGINE_LABEL)
    if named is None:
        return
    if named not in ENGINES:
        raise invalid_argument(f"Label {ENGINE_LABEL}={named!r} names no engine: use one of {', '.join(ENGINES)}.")
    if named not in available:
        raise failed_precondition(
            f"The job asks for the {named} engine ({ENGINE_LABEL}={named}), but this Beamport server has "
            f"{_SETUP[named]}."
        )
