"""Beam is imported lazily (the server answers at once; Beam takes seconds to import), and by one thread at
a time: two threads importing Beam's modules together can meet its import cycles from both ends, and one
of them then sees a partially initialized module (ImportError "cannot import name ..."). Every lazy import
of Beam in the server goes through `beam_module`.
"""

from __future__ import annotations

import importlib
import threading

_lock = threading.Lock()


def beam_module(name: str):
    """The module `name` (Beam's, or one of Beamport's that imports Beam), imported under the one lock."""
    with _lock:
        return importlib.import_module(name)
