"""Where the test suite's CPU goes, per test and per file: a pytest plugin and its report.

The suite is CPU-bound on 2 cores (its two test processes end within a minute of each other), so its wall time is
its CPU over two cores, and the host's speed changes from hour to hour: compare CPU-seconds, not minutes.

    PYTHONPATH=$PWD/benchmarks SUITE_CPU_DIR=/tmp/suite-cpu scripts/test -p suite_cpu
    .venv/bin/python benchmarks/suite_cpu.py /tmp/suite-cpu [--tests 30]

Each test process appends a line per test to SUITE_CPU_DIR/<worker>.tsv: the test's id, its own CPU-seconds,
its reaped children's (servers and everything they waited for), its wall seconds (setup and teardown included).
A module's or session's server is counted in the test whose teardown stops it. Processes no test reaps (the Flink
cluster and the SDK workers it starts, PostgreSQL, children killed with their parent) are in no line: the report
prints the share of the run's CPU the lines hold.
"""

from __future__ import annotations

import argparse
import collections
import os
import time
from pathlib import Path

import pytest

DIRECTORY = os.environ.get("SUITE_CPU_DIR", "/tmp/suite-cpu")


def _cpu() -> tuple[float, float]:
    times = os.times()
    return times.user + times.system, times.children_user + times.children_system


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    own, children = _cpu()
    started = time.monotonic()
    yield
    own_after, children_after = _cpu()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    Path(DIRECTORY).mkdir(parents=True, exist_ok=True)
    with open(Path(DIRECTORY) / f"{worker}.tsv", "a") as out:
        line = [item.nodeid, own_after - own, children_after - children, time.monotonic() - started]
        out.write("\t".join(f"{v:.2f}" if isinstance(v, float) else v for v in line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--tests", type=int, default=30, help="how many of the costliest tests to list")
    args = parser.parse_args()
    rows = []
    for path in sorted(args.directory.glob("*.tsv")):
        for line in path.read_text().splitlines():
            nodeid, own, children, wall = line.split("\t")
            rows.append((nodeid, float(own) + float(children), float(wall)))
    if not rows:
        raise SystemExit(f"no lines in {args.directory}")
    by_file: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for nodeid, cpu, wall in rows:
        entry = by_file[nodeid.split("::")[0]]
        entry[0] += cpu
        entry[1] += wall
        entry[2] += 1
    cpu_total, wall_total = sum(r[1] for r in rows), sum(r[2] for r in rows)
    # Two test processes on two cores: their test time is the run's core-seconds.
    print(f"{len(rows)} tests: {cpu_total:.0f} CPU-s in their process trees, of {wall_total:.0f} s of test time")
    share = 100 * cpu_total / wall_total
    print(f"(the lines hold {share:.0f}% of the two cores; the rest: processes no test reaps, and idle time)")
    print("\n  CPU-s   wall-s  tests  file")
    for name, (cpu, wall, count) in sorted(by_file.items(), key=lambda kv: -kv[1][0]):
        print(f"{cpu:7.1f} {wall:8.1f} {count:6d}  {name}")
    print(f"\nthe {args.tests} costliest tests\n  CPU-s   wall-s  test")
    for nodeid, cpu, wall in sorted(rows, key=lambda r: -r[1])[: args.tests]:
        print(f"{cpu:7.1f} {wall:8.1f}  {nodeid}")


if __name__ == "__main__":
    main()
