"""Which streaming engine (if any) the service controls, from the server's settings."""

from __future__ import annotations

from beamport.engine.base import StreamingControl


def streaming_control(settings) -> StreamingControl | None:
    """The control of the server's checkpointing streaming engine (Flink), or None when it has none."""
    if getattr(settings, "flink", None) is None:
        return None
    from beamport.engine.flink import FlinkControl

    return FlinkControl(settings.flink)
