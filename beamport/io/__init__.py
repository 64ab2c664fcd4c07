"""Beam I/O that Beamport provides to pipelines: sources to try streaming without cloud services."""

from beamport.io.local_log import ReadFromLocalLog

__all__ = ["ReadFromLocalLog"]
