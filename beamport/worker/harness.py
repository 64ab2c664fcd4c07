"""The worker: leases work through the API, runs each work item in an executor process, and tells the
service how it is (health, CPU, lifecycle, shutdown) through WorkerMessages.

It talks to the service only through the public API, so it can run on any host that reaches the
endpoint and sees the jobs' staged files: `beamport worker --endpoint URL`. `beamport serve` runs a pool
of these same workers on its own host.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import httpx

from beamport import wire
from beamport.engine import java_boot, java_warm
from beamport.files import FilePolicy
from beamport.protocol import CONTAINER_START
from beamport.sandbox import OFF, Sandbox
from beamport.worker.api import ANY, Work, WorkerApi, WorkerApiError
from beamport.worker.host import HostProbe

if TYPE_CHECKING:
    from beamport.config import EngineSettings

log = logging.getLogger(__name__)

DEFAULT_HEALTH_INTERVAL_US = 5_000_000  # until the service says otherwise
MAX_EXECUTOR_START_FAILURES = 3  # executors that die before their work starts: the worker is broken


@dataclasses.dataclass
class Executor:
    """An executor process, waiting for its assignment or running it."""

    process: subprocess.Popen[bytes]
    assignment: IO[bytes]  # its stdin: one line of JSON, the work item and all it needs
    status_r: int  # our end of its status pipe (progress, completion)
    status_fd: int  # its end, by number (passed on)
    log_path: Path  # its output, kept only when something went wrong


class Worker:
    def __init__(
        self,
        endpoint: str,
        data_dir: Path,
        worker_id: str | None = None,
        allow_paths: Sequence[Path] = (),
        sdk_workers: int = 1,
        project: str = ANY,
        location: str = ANY,
        job_id: str = ANY,
        once: bool = False,
        preemptible: bool = False,
        poll_s: float = 0.25,
        credentials: Path | None = None,
        deny_paths: Sequence[Path] = (),
        sandbox: Sandbox | None = None,
        engines: EngineSettings | None = None,
    ):
        self.endpoint = endpoint
        # The streaming engines its executors run work on (none given: the embedded engine only).
        self.engines = engines.for_executor() if engines else {}
        # User code (the executor and all it starts) sees the allowed roots, never Beamport's own files or keys.
        self.sandbox = sandbox or Sandbox(OFF)
        self.credentials = str(credentials) if credentials else None
        self.deny_paths = [str(p) for p in deny_paths]
        self.data_dir = data_dir
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.labels = {"HOST": socket.gethostname(), "CONTAINER_ID": str(os.getpid())}
        self.api = WorkerApi(endpoint, self.worker_id, self.labels, self.credentials)
        self.allow_paths = [str(p) for p in allow_paths]
        self.sdk_workers = sdk_workers
        self.target = (project, location, job_id)
        self.once = once
        self.shutdown_reason = "PREEMPTION" if preemptible else "UNKNOWN"
        self.poll_s = poll_s
        self.probe = HostProbe(data_dir)
        self.container_start_us = wire.now_us()
        self.interval_us = DEFAULT_HEALTH_INTERVAL_US
        self.stopping = False
        self.broken: str | None = None
        self._standby: Executor | None = None
        self._start_failures = 0
        # The jars of its last Java jobs: its standby executor keeps a JVM warm over them (engine/java_warm.py).
        self._java = java_warm.WarmJars(java_boot.harness_jars())
        self._warm_java = False  # whether the last work item was a Java job's (on the embedded engine)

    # -- the loop ------------------------------------------------------------------

    def run(self) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._standby = self._spawn_executor()
        log.info("worker %s leasing work from %s", self.worker_id, self.endpoint)
        idle_s = self.poll_s
        try:
            while not self.stopping and not self.broken:
                try:
                    work = self.api.lease(*self.target)
                except WorkerApiError as exc:
                    log.warning("lease failed: %s", exc)
                    work = None
                    idle_s = min(idle_s * 2, 5.0)
                if work is None:
                    if self.once:
                        break
                    time.sleep(idle_s)  # a Beamport service has held the lease a while already: see http/execution.py
                    continue
                idle_s = self.poll_s
                self.serve(work)
                if self.once:
                    break
        finally:
            if self._standby:
                self._kill(self._standby)
        return 2 if self.broken else 0

    def _on_signal(self, signum, _frame) -> None:
        self.stopping = True

    def serve(self, work: Work) -> None:
        """Run one work item in an executor, reporting health and CPU until it ends."""
        log.info("running work item %s of job %s (attempt %d)", work.item_id, work.job_id, work.attempt)
        executor, self._standby = self._standby, None
        # The standby died while idle: not the work's fault.
        if executor is None or executor.process.poll() is not None:
            if executor is not None:
                log.warning("the standby executor had exited (code %s); starting another", executor.process.returncode)
                self._kill(executor)
            executor = self._spawn_executor()
        status_r = executor.status_r
        try:
            token = self.api.job_token(work)
        except WorkerApiError as exc:  # the executor will fail to report, and say so; the work is retried
            log.warning("no token for the executor of job %s: %s", work.job_id, exc)
            token = None
        assignment = {
            "work": dataclasses.asdict(work),
            "endpoint": self.endpoint,
            "worker_id": self.worker_id,
            "labels": self.labels,
            "status_fd": executor.status_fd,
            "container_start_us": self.container_start_us,
            "allow_paths": self.allow_paths,
            "deny_paths": self.deny_paths,
            "token": token,
            "sdk_workers": self.sdk_workers,
            "engines": self.engines,
        }
        try:
            executor.assignment.write((json.dumps(assignment) + "\n").encode())
            executor.assignment.close()
        except OSError:
            pass  # it died: seen below, as an exit without completion
        start = self.api.message(
            work,
            "workerLifecycleEvent",
            {
                "event": CONTAINER_START,
                "containerStartTime": wire.format_timestamp_us(self.container_start_us),
                "metadata": {"pid": str(os.getpid()), "executor_pid": str(executor.process.pid)},
            },
        )
        self._report_health(work, [start])
        progress = {"next_report_index": work.report_index}
        next_health = time.monotonic() + self.interval_us / 1e6
        buffer = b""
        while executor.process.poll() is None:
            ready, _, _ = select.select([status_r], [], [], 0.1)
            if ready:
                chunk = os.read(status_r, 65536)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    progress.update(json.loads(line))
            if self.stopping:
                self._shut_down(work, executor)
                return
            if time.monotonic() >= next_health:
                self._report_health(work)
                next_health = time.monotonic() + self.interval_us / 1e6
            self.probe.look()  # what the executor uses counts up to its end, even from inside a sandbox
        for line in (buffer + _drain(status_r)).split(b"\n"):
            if line.strip():
                progress.update(json.loads(line))
        os.close(status_r)
        self._report_usage(work)
        if token:
            try:
                self.api.revoke(token)
            except httpx.HTTPError as exc:  # it expires anyway
                log.warning("could not revoke the executor's token: %s", exc)
        self._remember_java(progress.get("java_class_path"))
        if not progress.get("completed") and not progress.get("stopped"):
            self._executor_died(work, executor, progress)
        else:
            self._start_failures = 0
            executor.log_path.unlink(missing_ok=True)  # kept only when something went wrong
        if not self.stopping:
            self._standby = self._spawn_executor()

    # -- what the worker tells the service --------------------------------------------------

    def _report_health(self, work: Work, extra: Sequence[dict] = ()) -> None:
        """A batch: health report and CPU sample (and any event). The answer sets the next interval."""
        messages = [
            *extra,
            self.api.message(work, "workerHealthReport", self.probe.health(self.interval_us, self.broken)),
            self.api.message(work, "workerMetrics", {"cpuTime": [self.probe.cpu_sample()]}),
        ]
        try:
            responses = self.api.send(work, messages)
        except WorkerApiError as exc:
            log.warning("health report failed: %s", exc)
            return
        for response in responses:
            asked = response.get("workerHealthReportResponse", {}).get("reportInterval")
            if asked and wire.parse_duration_us(asked) > 0:
                if wire.parse_duration_us(asked) != self.interval_us:
                    log.info("health report interval now %s (the service asked)", asked)
                self.interval_us = wire.parse_duration_us(asked)

    def _report_usage(self, work: Work) -> None:
        """The work's last CPU sample, once its executor ended: the service counts what the work used up to its end,
        not up to the last health report."""
        try:
            self.api.send(work, [self.api.message(work, "workerMetrics", {"cpuTime": [self.probe.cpu_sample()]})])
        except WorkerApiError as exc:
            log.warning("the last CPU sample of work item %s was not sent: %s", work.item_id, exc)

    def _shut_down(self, work: Work, executor: Executor) -> None:
        """SIGTERM: tell the service at once (it moves the work), then stop the executor."""
        log.info("shutting down (%s): work item %s moves to another worker", self.shutdown_reason, work.item_id)
        notice = self.api.message(work, "workerShutdownNotice", {"reason": self.shutdown_reason})
        try:
            self.api.send(work, [notice])
        except WorkerApiError as exc:
            log.warning("shutdown notice failed: %s", exc)
        self._kill(executor)

    def _executor_died(self, work: Work, executor: Executor, progress: dict) -> None:
        """The executor ended without completing its work: close the work item as failed, with the reason."""
        self._start_failures += 1
        tail = _tail(executor.log_path)
        process = executor.process
        reason = (
            f"The worker's executor process (pid {process.pid}) exited with code {process.returncode} "
            "before its work ended."
        )
        if tail:
            reason += "\n" + tail
        report_failure(self.api, work, progress, reason)
        if self._start_failures >= MAX_EXECUTOR_START_FAILURES:
            self.broken = f"{self._start_failures} executors in a row died before their work ended"
            self._report_health(work)  # vmIsBroken: the service gives this worker no more work

    # -- executors --------------------------------------------------------------------------

    def _remember_java(self, class_path) -> None:
        """After a Java job's work item, its jars are copied for the next standby's warm JVM; after any other,
        the next standby starts none (a JVM costs seconds of CPU, and memory, that only a Java job repays)."""
        self._warm_java = isinstance(class_path, list) and all(isinstance(path, str) for path in class_path)
        if self._warm_java:
            try:
                self._java.keep(class_path, FilePolicy(self.allow_paths, self.deny_paths))
            except OSError as exc:  # e.g. no room for the copies: the next Java job starts its JVM itself
                log.warning("no warm JVM for the next Java job: %s", exc)
                self._warm_java = False

    def _warm_java_spec(self) -> dict | None:
        """What the standby executor's JVM ahead of its job is to be (java_warm.start_spec), or None."""
        return java_warm.warm_spec(self._java.class_path()) if self._warm_java else None

    def _spawn_executor(self) -> Executor:
        status_r, status_w = os.pipe()
        log_path = self.data_dir / f"executor-{time.time_ns()}.log"
        with open(log_path, "ab") as out:
            # Its own session: stopping it stops the SDK worker processes it started too.
            argv = [sys.executable, "-m", "beamport.worker.executor", "0" if self.sandbox.enabled else str(os.getpid())]
            warm = self._warm_java_spec()
            argv += [json.dumps(warm)] if warm else []
            # Of the jars copied for warm JVMs, its sandbox shows only its own JVM's.
            process = subprocess.Popen(
                self.sandbox.command(argv, readable=java_warm.jar_paths(warm)),
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(status_w,),
            )
        os.close(status_w)
        assert process.stdin is not None  # stdin=PIPE
        return Executor(process, process.stdin, status_r, status_w, log_path)

    @staticmethod
    def _kill(executor: Executor) -> None:
        try:
            os.killpg(executor.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        executor.process.wait()
        try:
            os.close(executor.status_r)
        except OSError:
            pass


def report_failure(api: WorkerApi, work: Work, progress: dict, reason: str) -> bool:
    """Close the work item of an executor that died, as failed. `progress` is what the executor last told: the next
    report index, and the index of a report it was sending (`reporting`). Had that report reached the service before
    the executor died, the service now expects the index after it."""
    index = progress["next_report_index"]
    indexes = [index, index + 1] if progress.get("reporting") == index else [index]
    for report_index in indexes:
        try:
            api.report(work, report_index, [], completed=True, errors=[{"code": 2, "message": reason}])
            return True
        except WorkerApiError as exc:
            if exc.status == 400 and report_index != indexes[-1]:
                continue  # a report index out of step: the next one
            log.warning("could not report the failure of work item %s: %s", work.item_id, exc)
            return False
    return False


def _drain(fd: int) -> bytes:
    data = b""
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:].strip()
    except OSError:
        return ""
