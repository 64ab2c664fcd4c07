"""A signal that work may have become leasable (a batch job was created, a failed attempt was put back).

Waiting workers are woken by it instead of polling (see http/execution.py). It reaches listeners in this
process only: with several servers on one PostgreSQL, a worker waiting on another server learns of the
work at the end of its wait instead, which is still correct, only later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class WorkNotifier:
    def __init__(self):
        self.generation = 0  # counts notifications: read it before looking for work, wait for it to change
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def notify(self) -> None:
        with self._lock:
            self.generation += 1
        for listener in list(self._listeners):
            listener()
