"""Which streaming engine (if any) the service controls, from the server's settings."""

from __future__ import annotations

from beamport.engine.base import StreamingControl


def streaming_control(settings) -> StreamingControl | None:
    """The control of the server's checkpointing streaming engine, or None when it has none."""
    return None  # filled in by the Flink engine (beamport.engine.flink)
