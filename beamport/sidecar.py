"""The Beam sidecar: the server's one process that imports Beam, for the calls the service needs Beam for.

The server process never imports Beam: importing it takes seconds (2 s on an idle 2-core machine, 7-9 s on
a busy one), and its ~200 modules made every full garbage collection of the server's heap slow. What the
service needs Beam for (describing a submitted pipeline: its steps and fused stages; checking an update's
compatibility) runs in a long-lived child process instead, `python -m beamport.sidecar`, started in the
background when the server starts, so that the HTTP port answers at once. The calls themselves are
beamport/translate/calls.py.

Requests and answers are pickled plain data only (bytes, strings, numbers, lists, dicts), and each side
reads with an unpickler that refuses every class and function: no Beam type, nor anything else, can be
loaded (nor any module imported) by what crosses the socket.

One call at a time. A call that comes while the sidecar is still starting waits for it, within its deadline
(UNAVAILABLE past it). A sidecar that dies is started again at once (one that could not start, by the next
call); a call it was answering is made again on the new one, and fails (UNAVAILABLE) only if that one dies
too (the call itself may be what kills it). A sidecar that overruns the deadline of a call is killed
(DEADLINE_EXCEEDED: its answer would come too late) and started again.
"""

from __future__ import annotations

import gc
import io
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection

from beamport.errors import ApiError

log = logging.getLogger(__name__)

# How long a call may take, waiting for the sidecar included: Beam's import takes up to ~20 s on a busy
# machine, describing a large pipeline a few seconds.
CALL_DEADLINE_S = 120.0
STOP_GRACE_S = 5.0
COMMAND = [sys.executable, "-m", "beamport.sidecar"]  # then the number of its end of the socket


class _PlainData(pickle.Unpickler):
    """Unpickles plain data only: containers, strings, bytes, numbers, booleans, None. Anything that names a
    class or a function is refused, so reading an answer imports nothing and runs no code."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"only plain data crosses to and from the Beam sidecar, not {module}.{name}")


def _dumps(value) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def _loads(data: bytes):
    return _PlainData(io.BytesIO(data)).load()


class _Exited(Exception):
    """The sidecar closed its end: it exited (or is exiting)."""


class _Child:
    """One sidecar process and the server's end of its socket."""

    def __init__(self, command: list[str]):
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [*command, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,  # its output goes where the server's goes (the server's log)
                start_new_session=True,  # the server decides when it stops, not a Ctrl-C at the server's terminal
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.connection = Connection(ours.detach())
        self.started = time.monotonic()
        self.ready = False

    def send(self, message) -> None:
        try:
            self.connection.send_bytes(_dumps(message))
        except OSError:
            raise _Exited() from None

    def receive(self, deadline: float):
        """The next message; TimeoutError past the deadline, _Exited when the sidecar closed its end."""
        if not self.connection.poll(max(0.0, deadline - time.monotonic())):
            raise TimeoutError
        try:
            data = self.connection.recv_bytes()
        except (EOFError, OSError):
            raise _Exited() from None
        return _loads(data)

    def exit_code(self) -> int | None:
        try:
            return self.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            return None

    def end(self) -> None:
        """Stop the process now (it may be in the middle of a call) and close the socket."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.connection.close()


class BeamSidecar:
    """The server's handle on its Beam sidecar: `start()` it at start-up, `call()` it, `stop()` it at the end."""

    def __init__(self, command: list[str] | None = None, deadline_s: float = CALL_DEADLINE_S):
        self.command = command or COMMAND
        self.deadline_s = deadline_s
        self._lock = threading.Lock()  # one call at a time, and one (re)start
        self._child: _Child | None = None
        self._stopping = False
        self._first_start_over = threading.Event()  # ready, or failed to be

    @property
    def pid(self) -> int | None:
        """The sidecar's process id, while it runs."""
        child = self._child
        return child.process.pid if child is not None and child.process.poll() is None else None

    def start(self) -> None:
        """Start the sidecar in the background and return: calls made meanwhile wait for it."""
        threading.Thread(target=self._warm_up, name="beam-sidecar", daemon=True).start()

    def wait_first_start(self, timeout: float) -> bool:
        """Wait until the first start is over (the sidecar is ready, or failed to be), `timeout` at most."""
        return self._first_start_over.wait(timeout)

    def stop(self) -> None:
        """Stop the sidecar (at the server's shutdown); a call in progress fails UNAVAILABLE."""
        self._stopping = True
        child = self._child
        if child is None:
            return
        child.process.terminate()
        try:
            child.process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()

    def call(self, name: str, *args):
        """The answer of beamport.translate.calls.CALLS[name](*args), computed in the sidecar. Raises what
        the call raised if it was an ApiError; UNAVAILABLE or DEADLINE_EXCEEDED if the sidecar could not answer."""
        deadline = time.monotonic() + self.deadline_s
        if not self._lock.acquire(timeout=self.deadline_s):
            raise ApiError(
                "UNAVAILABLE", f"Beam's sidecar has been busy with other calls for {self.deadline_s:.0f} s: try again."
            )
        try:
            try:
                answer = self._call(name, args, deadline)
            except _Exited:
                # It may have died before this call (its death not yet seen): once more, on a new sidecar. A call
                # that kills the sidecar fails on the second one too.
                answer = self._call(name, args, deadline)
        except _Exited:
            raise ApiError(
                "UNAVAILABLE",
                f"Beam's sidecar, the server's process for what needs Beam, exited during this call ({name}), "
                "twice; it is being started again. The server's log may say why.",
            ) from None
        finally:
            self._lock.release()
        if answer[0] == "ok":
            return answer[1]
        if answer[0] == "api_error":
            raise ApiError(answer[1], answer[2])
        log.error("Beam's sidecar failed in %s:\n%s", name, answer[2])
        raise RuntimeError(f"Beam's sidecar failed in {name}: {answer[1]}")

    def _call(self, name: str, args: tuple, deadline: float):
        """One request and its answer; _Exited if the sidecar exited meanwhile (it is started again)."""
        child = self._ready(deadline)
        started = time.monotonic()
        try:
            child.send((name, args))
            return child.receive(deadline)
        except TimeoutError:
            self._replace(child, f"overran the deadline of a call ({name})")
            raise ApiError(
                "DEADLINE_EXCEEDED",
                f"Beam's sidecar took more than {deadline - started:.0f} s over this call ({name}); it was "
                "stopped and is being started again.",
            ) from None
        except _Exited:
            self._replace(child, f"exited (code {child.exit_code()}) during a call ({name})")
            raise
        except pickle.UnpicklingError:
            self._replace(child, f"answered something other than plain data ({name})")
            raise

    # -- (re)starting; with the lock held --------------------------------------------------------

    def _warm_up(self) -> None:
        try:
            with self._lock:
                self._ready(time.monotonic() + self.deadline_s)
        except ApiError as exc:
            log.error("%s", exc.message)
        finally:
            self._first_start_over.set()

    def _ready(self, deadline: float) -> _Child:
        """The sidecar, started if it is not running, once it is ready (it has imported Beam)."""
        if self._stopping:
            raise ApiError("UNAVAILABLE", "The server is stopping.")
        child = self._child
        if child is not None and child.process.poll() is not None:
            log.warning("Beam's sidecar exited (code %s); starting it again", child.process.returncode)
            child.end()
            child = self._child = None
        if child is None:
            child = self._child = _Child(self.command)
            threading.Thread(target=self._watch, args=(child,), name="beam-sidecar-watch", daemon=True).start()
        if child.ready:
            return child
        try:
            kind, details = child.receive(deadline)
            if kind != "ready":
                raise _Exited()
        except TimeoutError:
            raise ApiError(
                "UNAVAILABLE",
                f"Beam's sidecar, the server's process for what needs Beam, is still starting after "
                f"{time.monotonic() - child.started:.0f} s (the machine may be busy): try again.",
            ) from None
        except (_Exited, pickle.UnpicklingError):
            code = child.exit_code()
            child.end()
            self._child = None
            raise ApiError(
                "UNAVAILABLE",
                f"Beam's sidecar, the server's process for what needs Beam, exited (code {code}) before it was "
                "ready; the server's log says why. The next call starts it again.",
            ) from None
        child.ready = True
        log.info(
            "Beam's sidecar is ready (pid %d, Beam %s) after %.1f s",
            child.process.pid,
            details.get("beam"),
            time.monotonic() - child.started,
        )
        return child

    def _watch(self, child: _Child) -> None:
        """Start a sidecar that was ready again as soon as it dies (one that died starting waits for a call)."""
        code = child.process.wait()
        if child.ready and self._child is child and not self._stopping:
            log.warning("Beam's sidecar exited (code %s); starting it again", code)
            self.start()

    def _replace(self, child: _Child, why: str) -> None:
        """End a sidecar that cannot go on, and start the next one in the background."""
        log.warning("Beam's sidecar %s; starting it again", why)
        child.end()
        if self._child is child:
            self._child = None
        if not self._stopping:
            self.start()


# -- the sidecar process ---------------------------------------------------------------------------


def main() -> None:
    connection = Connection(int(sys.argv[1]))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s beam-sidecar %(name)s: %(message)s")
    from beamport.translate import calls  # imports Beam

    # Beam's modules stay for good: keep them out of full collections (each would walk them, ~100 ms).
    gc.collect()
    gc.freeze()
    try:
        connection.send_bytes(_dumps(("ready", {"beam": calls.beam_version(), "pid": os.getpid()})))
        while True:
            name, args = _loads(connection.recv_bytes())
            answer: tuple
            try:
                answer = ("ok", calls.CALLS[name](*args))
            except ApiError as exc:
                answer = ("api_error", exc.status, exc.message)
            except Exception as exc:
                answer = ("error", f"{type(exc).__name__}: {exc}", traceback.format_exc())
            connection.send_bytes(_dumps(answer))
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the server closed its end: it is gone
        return


if __name__ == "__main__":
    main()
