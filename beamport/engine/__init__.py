"""Engines run staged jobs: base.py is the interface, registry.py names the engines and says what each can do,
staging.py makes a stored job runnable, embedded.py runs it on Beam's FnApiRunner in the calling process. See
docs/engines.md."""

from beamport.engine.base import DONE, FAILED, Engine, RunObserver, RunResult, StagedJob

__all__ = ["DONE", "FAILED", "Engine", "RunObserver", "RunResult", "StagedJob"]
