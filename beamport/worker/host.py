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

    def cpu_sample(self) -> dict:
        """A CPUTime sample of this worker's processes (it, its executor and their SDK workers): total CPU
        time since the worker started, and the share of the host's CPUs it used since the last sample."""
        total = self._tree_cpu_seconds()
        wall = time.monotonic()
        previous, self._last_total_s = self._last_total_s, total
        elapsed, self._last_wall = wall - self._last_wall, wall
        rate = 0.0
        if previous is not None and elapsed > 0:
            rate = max(0.0, total - previous) / (elapsed * self.cpus)
        return {"timestamp": wire.format_timestamp_us(wire.now_us()), "totalMs": str(int(total * 1000)), "rate": round(rate, 4)}

    def _tree_cpu_seconds(self) -> float:
        total = 0.0
        for process in [self.process, *self._children()]:
            try:
                t = process.cpu_times()
            except psutil.Error:
                continue
            # children_* count the processes already waited for: their time stays in the total.
            total += t.user + t.system + t.children_user + t.children_system
        return total

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
                    pods.append({
                        "name": "harness" if process.pid == os.getpid() else process.name(),
                        "pid": process.pid,
                        "status": process.status(),
                        "rssBytes": process.memory_info().rss,
                    })  # fmt: skip
            except psutil.Error:
                continue
        return pods
