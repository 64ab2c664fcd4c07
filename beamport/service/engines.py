"""Which engine runs a job: Dataflow has one service; Beamport has engines to choose from (docs/engines.md).

A job names its engine with the label `beamport_engine` (DataflowRunner: `--labels beamport_engine=flink`).
Otherwise batch jobs run on the embedded engine, and streaming jobs on the server's streaming engine
(Flink, when the server has one; without one they wait in JOB_STATE_PENDING, saying so).
"""

from __future__ import annotations

from beamport.errors import failed_precondition, invalid_argument
from beamport.service import model

ENGINE_LABEL = "beamport_engine"
EMBEDDED = "embedded"
FLINK = "flink"
ENGINES = (EMBEDDED, FLINK)


def engine_of(doc: dict, streaming_engine: str | None) -> str | None:
    """The engine that runs this job (None: a streaming job on a server without a streaming engine)."""
    named = (doc.get("labels") or {}).get(ENGINE_LABEL)
    if named:
        return named
    if doc.get("type") == model.STREAMING:
        return streaming_engine
    return EMBEDDED


def check_engine(doc: dict, streaming_engine: str | None) -> None:
    """Refuse a job that names an engine this server does not have."""
    named = (doc.get("labels") or {}).get(ENGINE_LABEL)
    if named is None:
        return
    if named not in ENGINES:
        raise invalid_argument(
            f"Label {ENGINE_LABEL}={named!r} names no engine: use one of {', '.join(ENGINES)}."
        )
    if named == FLINK and streaming_engine != FLINK:
        raise failed_precondition(
            f"The job asks for the Flink engine ({ENGINE_LABEL}={named}), but this Beamport server has no Flink "
            "cluster: start one with scripts/flink-cluster and give its endpoints to `beamport serve` "
            "(--flink-master, --flink-job-server, --flink-sdk-pool; see docs/engines.md)."
        )
