"""What the benchmark scripts share (each runs as `python benchmarks/NAME.py`, which puts this folder on sys.path)."""

from __future__ import annotations

from datetime import datetime

from beamport.processes import free_loopback_port as free_port

__all__ = ["free_port", "parse_time"]


def parse_time(value: str) -> float:
    """An RFC 3339 time of the API (`2026-11-30T02:00:00.123456Z`) as seconds since the epoch."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
