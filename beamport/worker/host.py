"""What a worker says about its host and itself: health reports and CPU time samples (psutil)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import psutil

from beamport import wire

MIN_FREE_MEMORY = 0.05  # below this share of memory available, the worker says it is unhealthy
MIN_FREE_DISK = 0.02


class HostProbe:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.process = psutil.Process()
        self.started_us = wire.now_us()
        self.cpus = psutil.cpu_count() or 1
        self._last_total_s: float | None = None
        self._last_wall = time.monotonic()
        # The worker's processes as last seen: (pid, start time) -> their CPU seconds (their own and their waited
        # children's) and the waited children's alone; the harness's waited children's; and the CPU time of the
        # processes that ended without passing theirs on to a process still seen (see cpu_seconds).
        self._seen: dict[tuple[int, float], tuple[float, float]] = {}
        self._waited_s = 0.0
        self._ended_s = 0.0
        self._looked = 0.0  # monotonic time of the last look

    def cpu_sample(self) -> dict:
        """A CPUTime sample of this worker's processes (it, its executor and their SDK workers): total CPU
        time since the worker started, and the share of the host's CPUs it used since the last sample."""
        total = self.cpu_seconds()
        wall = time.monotonic()
        previous, self._last_total_s = self._last_total_s, total
        elapsed, self._last_wall = wall - self._last_wall, wall
        rate = 0.0
        if previous is not None and elapsed > 0:
            rate = max(0.0, total - previous) / (elapsed * self.cpus)
        return {
            "timestamp": wire.format_timestamp_us(wire.now_us()),
            "totalMs": str(int(total * 1000)),
            "rate": round(rate, 4),
        }

    def look(self, every_s: float = 0.5) -> None:
        """Look at the worker's processes, at most once every `every_s` (a look takes a few milliseconds): what a
        process in a sandbox used counts up to the last look before it ended."""
        if time.monotonic() - self._looked >= every_s:
            self.cpu_seconds()

    def cpu_seconds(self) -> float:
        """The CPU time of the worker's processes since it started, which does not shrink when one of them ends.

        A process's time passes to its parent when the parent waits for it, and so on up to the harness; but not
        out of a sandbox (bubblewrap's process in a PID namespace passes none of its child's time on). So each
        process's time is remembered as last seen, and when one ends, what of it did not show up as time of
        waited children (of the harness, or of a process seen before and still running) is kept aside."""
        self._looked = time.monotonic()
        harness = self.process.cpu_times()
        seen: dict[tuple[int, float], tuple[float, float]] = {}
        for process in self._children():
            try:
                with process.oneshot():
                    t, key = process.cpu_times(), (process.pid, process.create_time())
            except psutil.Error:
                continue
            waited = t.children_user + t.children_system
            seen[key] = (t.user + t.system + waited, waited)
        staying = [key for key in seen if key in self._seen]
        waited_now = harness.children_user + harness.children_system + sum(seen[key][1] for key in staying)
        waited_before = self._waited_s + sum(self._seen[key][1] for key in staying)
        ended = sum(cpu for key, (cpu, _) in self._seen.items() if key not in seen)
        self._ended_s += max(0.0, ended - (waited_now - waited_before))
        self._seen, self._waited_s = seen, harness.children_user + harness.children_system
        return harness.user + harness.system + self._waited_s + sum(cpu for cpu, _ in seen.values()) + self._ended_s

    def _children(self) -> list:
        try:
            return self.process.children(recursive=True)
        except psutil.Error:
            return []

    def health(self, interval_us: int, broken: str | None = None) -> dict:
        """A WorkerHealthReport: unhealthy when memory or the data dir's disk is nearly full."""
        problems = []
        memory = psutil.virtual_memory()
        if memory.available / memory.total < MIN_FREE_MEMORY:
            problems.append(f"only {memory.available // 2**20} MiB of memory available")
        try:
            disk = shutil.disk_usage(self.data_dir)
            if disk.free / disk.total < MIN_FREE_DISK:
                problems.append(f"only {disk.free // 2**20} MiB free on {self.data_dir}")
        except OSError as exc:
            problems.append(f"cannot read {self.data_dir}: {exc.strerror}")
        report = {
            "vmIsHealthy": not problems and not broken,
            "vmIsBroken": bool(broken),
            "vmStartupTime": wire.format_timestamp_us(int(psutil.boot_time() * 1e6)),
            "reportInterval": wire.format_duration_us(interval_us),
            "pods": self.pods(),
        }
        if broken or problems:
            report["msg"] = broken or "; ".join(problems)
        return report

    def pods(self) -> list[dict]:
        """The worker's processes, in the spirit of Kubernetes pod statuses."""
        pods = []
        for process in [self.process, *self._children()]:
            try:
                with process.oneshot():
                    pods.append(
                        {
                            "name": "harness" if process.pid == os.getpid() else process.name(),
                            "pid": process.pid,
                            "status": process.status(),
                            "rssBytes": process.memory_info().rss,
                        }
                    )
            except psutil.Error:
                continue
        return pods
