"""Beamport: a self-hosted implementation of the Google Cloud Dataflow service."""

__version__ = "0.1.0"
