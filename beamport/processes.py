"""Small process helpers shared by the engines, the worker and serve's emulators."""

from __future__ import annotations

import ctypes
import os
import signal
import socket

_PR_SET_PDEATHSIG = 1


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server this process starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent(parent_pid: int = 0) -> None:
    """Linux: be killed when the parent process dies (kill -9 included). With `parent_pid`, exit at once if
    that parent died before this took effect (0: no check, e.g. in a sandbox whose parent is its own init)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)
