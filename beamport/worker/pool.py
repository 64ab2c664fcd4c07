"""The local worker pool of `beamport serve`: N `beamport worker` processes on the server's host.

They are the same workers one starts by hand on other hosts (one execution path): each leases work
through the API and runs one work item at a time. The pool keeps N of them alive, tells the service at
once when one dies holding work (rather than waiting for its health deadline), and marks waiting jobs
QUEUED while every local worker is busy.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from google.auth import environment_vars  # GOOGLE_APPLICATION_CREDENTIALS

from beamport.service.leases import LeaseService

log = logging.getLogger(__name__)

RESPAWN_AFTER_S = 1.0  # a worker that keeps dying is not respawned in a tight loop
QUEUE_CHECK_S = 0.5  # how often waiting jobs are checked for QUEUED (a worker's exit is seen every tick)


@dataclass
class _Worker:
    worker_id: str
    process: subprocess.Popen
    log_path: Path


class LocalWorkerPool:
    def __init__(
        self,
        leases: LeaseService,
        endpoint: str,
        size: int,
        allow_paths: list[Path],
        data_dir: Path,
        sdk_workers: int = 1,
        tick_s: float = 0.1,
        credentials: Path | None = None,
        private_paths: Sequence[Path] = (),
        engine_flags: Sequence[str] = (),
    ):
        # The server's engines and sandbox as `beamport worker` flags (EngineSettings.worker_flags): all the
        # configuration a local worker gets, besides the arguments below.
        self.engine_flags = list(engine_flags)
        self.credentials = credentials  # the local workers' key (None: the server runs without authentication)
        self.private_paths = private_paths
        self.leases = leases
        self.endpoint = endpoint
        self.size = size
        self.allow_paths = allow_paths
        self.sdk_workers = sdk_workers
        self.run_dir = data_dir / "workers"
        self.tick_s = tick_s
        self.workers: list[_Worker] = []
        self._spawned_at = 0.0
        self._queue_checked = 0.0
        self._queued: set[str] = set()  # waiting jobs already marked QUEUED
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stop_leftovers()
        for _ in range(self.size):
            self.workers.append(self._spawn())
        self._thread = threading.Thread(target=self._loop, name="worker-pool", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Server shutdown: stop every worker; their work is leased again (not counted as failed)."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        for worker in self.workers:
            self._kill(worker)
            self.leases.worker_exited(worker.worker_id, "the Beamport server stopped its local workers.", counts=False)
        self.workers = []

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # the pool must outlive a bad tick (e.g. a database hiccup)
                log.exception("worker pool tick failed")
            self._stop.wait(self.tick_s)

    def _tick(self) -> None:
        for i, worker in enumerate(self.workers):
            if worker.process.poll() is None:
                continue
            reason = f"The worker process {worker.worker_id} exited with code {worker.process.returncode}."
            tail = _tail(worker.log_path)
            self.leases.worker_exited(worker.worker_id, reason + (f"\n{tail}" if tail else ""))
            (self.run_dir / f"{worker.worker_id}.pid").unlink(missing_ok=True)
            if time.monotonic() - self._spawned_at > RESPAWN_AFTER_S:
                self.workers[i] = self._spawn()
        if time.monotonic() - self._queue_checked < QUEUE_CHECK_S:
            return
        self._queue_checked = time.monotonic()
        # Every waiting job, not only the oldest few: behind a flood of jobs, the newest wait longest. Each is
        # marked once (the service's change is a no-op for a job no longer PENDING).
        waiting = self.leases.waiting_jobs()
        self._queued &= set(waiting)
        new = [job_id for job_id in waiting if job_id not in self._queued]
        if new:
            busy = self.leases.busy_workers()
            if all(worker.worker_id in busy for worker in self.workers):
                for job_id in new:  # oldest first
                    self.leases.mark_queued(job_id, len(self.workers))
                self._queued.update(new)

    def _spawn(self) -> _Worker:
        worker_id = f"local-{uuid.uuid4().hex[:8]}"
        data_dir = self.run_dir / worker_id
        data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "beamport",
            "worker",
            "--endpoint",
            self.endpoint,
            "--worker-id",
            worker_id,
            "--data-dir",
            str(data_dir),
            "--sdk-workers",
            str(self.sdk_workers),
            "--poll-interval",
            "0.1",
        ]
        for path in self.allow_paths:
            args += ["--allow-path", str(path)]
        for path in self.private_paths:
            args += ["--deny-path", str(path)]
        if self.credentials:
            args += ["--credentials", str(self.credentials)]
        args += self.engine_flags
        log_path = data_dir / "worker.log"
        with open(log_path, "ab") as out:
            # Its own session: the server's signals (Ctrl-C) are not the worker's.
            # Its credentials are the pool's to give: never the key of whoever started the server. Its settings are
            # its flags: no BEAMPORT_* variable of the server's gets in their way (one the server's flags overrode).
            env = {
                k: v
                for k, v in os.environ.items()
                if k != environment_vars.CREDENTIALS and not k.startswith("BEAMPORT_")
            }
            process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        (self.run_dir / f"{worker_id}.pid").write_text(str(process.pid))
        self._spawned_at = time.monotonic()
        log.info("local worker %s started (pid %d)", worker_id, process.pid)
        return _Worker(worker_id, process, log_path)

    def _kill(self, worker: _Worker) -> None:
        # Its executor dies with it (it asks the kernel to be killed when its worker dies).
        try:
            os.killpg(worker.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.process.wait()
        (self.run_dir / f"{worker.worker_id}.pid").unlink(missing_ok=True)

    def stop_leftovers(self) -> None:
        """Local workers of a server that was killed: stop them, and lease their work again. The server calls it
        as soon as it starts (a leftover would go on with work that is now for new workers), and start() again."""
        for pid_file in self.run_dir.glob("*.pid"):
            worker_id = pid_file.stem
            try:
                pid = int(pid_file.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"beamport" in cmdline and b"worker" in cmdline:
                    os.killpg(pid, signal.SIGKILL)
            except (ValueError, OSError):
                pass
            pid_file.unlink(missing_ok=True)
            self.leases.worker_exited(
                worker_id, "the Beamport server restarted, and stopped the local worker that ran it.", counts=False
            )


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:].strip()
    except OSError:
        return ""
