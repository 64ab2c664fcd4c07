"""Where a run's CPU goes, per kind of process (executors, servers, sidecars, CLI calls, JVMs...): a sampler and
its report. suite_cpu.py counts per test what each test reaps; this counts every process on the machine, those no
test reaps included (the Flink cluster, its SDK workers), by what it is.

    .venv/bin/python benchmarks/process_cpu.py sample /tmp/process-cpu.json &   # while the run goes on
    .venv/bin/python benchmarks/process_cpu.py report /tmp/process-cpu.json [--kinds 30]

The sampler reads every process's CPU twice a second (psutil) and writes what it has seen every 30 s. A process
shorter than half a second may be missed, and one that was running when sampling began counts only its CPU since.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import time
from pathlib import Path

import psutil

EVERY_S = 0.5
WRITE_EVERY_S = 30.0


def sample(out: Path) -> None:
    """Sample until killed: per process (pid, start), its CPU when first and last seen, its name and command."""
    seen: dict[tuple[int, float], list] = {}
    started = written = time.time()
    while True:
        for process in psutil.process_iter(["pid", "name", "cmdline", "cpu_times", "create_time"]):
            times = process.info["cpu_times"]
            if times is None:
                continue
            cpu = times.user + times.system
            key = (process.info["pid"], process.info["create_time"])
            if key in seen:
                seen[key][1] = cpu
            else:
                # Running before the sampling began: count only what it uses from now on.
                first = cpu if process.info["create_time"] < started else 0.0
                seen[key] = [first, cpu, process.info["name"], " ".join(process.info["cmdline"] or [])[:300]]
        if time.time() - written > WRITE_EVERY_S:
            written = time.time()
            out.with_suffix(".tmp").write_text(json.dumps(list(seen.values())))
            os.replace(out.with_suffix(".tmp"), out)
        time.sleep(EVERY_S)


def kind(name: str, command: str) -> str:
    """What a process is: Beamport's subcommand or module, a Flink or Java process, else its name."""
    if found := re.search(r"-m beamport (\S+)", command):
        return f"beamport {found.group(1)}"
    if found := re.search(r"-m (\S+)", command):
        return found.group(1)
    if name == "java":
        for main in ("TaskManagerRunner", "StandaloneSessionClusterEntrypoint", "JobServer", "FnHarness"):
            if main in command:
                return f"java {main}"
        return "java (other)"
    return name


def report(path: Path, kinds: int) -> None:
    totals: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for first, last, name, command in json.loads(path.read_text()):
        totals[kind(name, command)] += last - first
        counts[kind(name, command)] += 1
    print(f"{sum(totals.values()):.0f} CPU-s in {sum(counts.values())} processes\n\n  CPU-s  processes  kind")
    for what, cpu in totals.most_common(kinds):
        print(f"{cpu:7.1f}  {counts[what]:9d}  {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["sample", "report"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--kinds", type=int, default=30, help="how many kinds of process to print")
    args = parser.parse_args()
    if args.action == "sample":
        sample(args.path)
    else:
        report(args.path, args.kinds)


if __name__ == "__main__":
    main()
