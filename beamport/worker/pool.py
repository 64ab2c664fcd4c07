"""The local worker pool of `beamport serve`: one worker process per running job, at most N at once.

The pool is the service's hand on this host: it starts a worker harness process for work waiting to be
leased, queues jobs past the limit, and stops a job's process tree at once when the job is cancelled. The
workers themselves speak only the public API.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from beamport.service import model
from beamport.service.execution import ExecutionService

log = logging.getLogger(__name__)


@dataclass
class _Worker:
    job_id: str
    worker_id: str
    process: subprocess.Popen
    log_path: Path


class LocalWorkerPool:
    def __init__(
        self,
        execution: ExecutionService,
        endpoint: str,
        max_jobs: int,
        allow_paths: list[Path],
        data_dir: Path,
        sdk_workers: int = 1,
        tick_s: float = 0.1,
    ):
        self.execution = execution
        self.endpoint = endpoint
        self.max_jobs = max_jobs
        self.allow_paths = allow_paths
        self.sdk_workers = sdk_workers
        self.run_dir = data_dir / "workers"
        self.tick_s = tick_s
        self.workers: dict[str, _Worker] = {}
        # A worker process started ahead of need, Beam already imported, waiting on stdin for its job:
        # a submitted job starts running in a fraction of a second instead of after an interpreter start.
        self._standby: tuple[subprocess.Popen, Path] | None = None
        self._standby_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._kill_leftovers()
        self.execution.recover_after_restart()
        self._thread = threading.Thread(target=self._loop, name="worker-pool", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Server shutdown: stop every worker. Their work stays leased and runs again at the next start."""
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        for worker in list(self.workers.values()):
            self._kill(worker)
        if self._standby:
            self._standby[0].kill()
            self._standby[0].wait()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # the pool must outlive a bad tick (e.g. a database hiccup)
                log.exception("worker pool tick failed")
            self._stop.wait(self.tick_s)

    def _tick(self) -> None:
        for worker in list(self.workers.values()):
            state = self.execution.job_state(worker.job_id)
            if worker.process.poll() is not None:
                self._forget(worker)
                self.execution.worker_exited(worker.job_id, worker.worker_id, self._exit_reason(worker))
            elif state is None or state in model.TERMINAL_STATES or state == model.CANCELLING:
                self._kill(worker)
                if state == model.CANCELLING:
                    self.execution.complete_cancel(worker.job_id)
        for job, _item in self.execution.pending_work(limit=100):
            if job.id in self.workers:
                continue
            if len(self.workers) < self.max_jobs:
                self._launch(job)
            else:
                self.execution.mark_queued(job.id, len(self.workers))
        dead = self._standby is None or self._standby[0].poll() is not None
        if dead and time.monotonic() - self._standby_at > 2:  # a standby that keeps dying is not respawned in a loop
            self._standby, self._standby_at = self._spawn_standby(), time.monotonic()

    def _worker_args(self) -> list[str]:
        args = [sys.executable, "-m", "beamport", "worker", "--endpoint", self.endpoint,
                "--sdk-workers", str(self.sdk_workers)]  # fmt: skip
        for path in self.allow_paths:
            args += ["--allow-path", str(path)]
        return args

    def _spawn_standby(self) -> tuple[subprocess.Popen, Path]:
        log_path = self.run_dir / f"standby-{uuid.uuid4().hex[:8]}.log"
        with open(log_path, "ab") as out:
            # Its own session, so that cancelling kills the worker and every process it started.
            process = subprocess.Popen(
                [*self._worker_args(), "--standby"],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        (self.run_dir / f"standby-{process.pid}.pid").write_text(str(process.pid))
        return process, log_path

    def _launch(self, job) -> None:
        worker_id = f"local-{uuid.uuid4().hex[:8]}"
        self.execution.starting_worker(job.id, worker_id)
        assignment = {"project": job.project_id, "region": job.location, "job_id": job.id, "worker_id": worker_id}
        process, log_path = self._standby or self._spawn_standby()
        self._standby = None
        try:
            process.stdin.write((json.dumps(assignment) + "\n").encode())
            process.stdin.close()
        except (BrokenPipeError, OSError):  # the standby died: the next tick sees the exit and fails the job
            pass
        (self.run_dir / f"standby-{process.pid}.pid").rename(self.run_dir / f"{worker_id}.pid")
        self.workers[job.id] = _Worker(job.id, worker_id, process, log_path)
        log.info("worker %s (pid %d) runs job %s", worker_id, process.pid, job.id)

    def _kill(self, worker: _Worker) -> None:
        try:
            os.killpg(worker.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.process.wait()
        self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        self.workers.pop(worker.job_id, None)
        (self.run_dir / f"{worker.worker_id}.pid").unlink(missing_ok=True)

    def _exit_reason(self, worker: _Worker) -> str:
        tail = ""
        try:
            tail = worker.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            pass
        return f"The worker process {worker.worker_id} exited with code {worker.process.returncode} before its work ended.\n{tail}"

    def _kill_leftovers(self) -> None:
        """Worker process groups left by a server that was killed: their work runs again anyway."""
        for pid_file in self.run_dir.glob("*.pid"):
            try:
                pid = int(pid_file.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"beamport" in cmdline and b"worker" in cmdline:
                    os.killpg(pid, signal.SIGKILL)
            except (ValueError, OSError):
                pass
            pid_file.unlink(missing_ok=True)


