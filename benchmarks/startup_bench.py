"""Start-up: how soon `beamport serve` answers, and how soon it takes a real job.

    python benchmarks/startup_bench.py [--starts 5] [--workers N]

Stages one real pipeline first (Beam's wordcount, written by DataflowRunner with --template_location: the
pipeline proto, its main session and the job body DataflowRunner would send). Then, --starts times:
`python -m beamport serve --no-auth` on a fresh data dir, and again on the same data dir (a restart), each
timed from the moment the process is started:
- first 200: until jobs.list (a cheap route) first answers 200 (polled every 10 ms);
- first create: until the first jobs.create of the staged job body succeeds (sent as soon as the first 200
  came back, again after any connection error or 503). The server describes the pipeline at create (steps,
  stages), which needs Beam.
The servers run this tree's code (PYTHONPATH is this script's repository), with Prism and Flink off. Prints
median, p90 (nearest rank) and max; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT, REGION = "bench", "us-central1"
JOBS_PATH = f"/v1b3/projects/{PROJECT}/locations/{REGION}/jobs"
POLL_S = 0.01
TIMEOUT_S = 300.0
TARGET_FIRST_200_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_pipeline(work: Path) -> dict:
    """The job body DataflowRunner builds for wordcount, its pipeline staged under `work` (no server needed)."""
    (work / "in.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 100)
    staging = work / "staging"
    staging.mkdir()
    template = work / "wordcount.json"
    args = [
        sys.executable,
        "-m",
        "apache_beam.examples.wordcount",
        f"--input={work / 'in.txt'}",
        f"--output={work / 'out' / 'counts'}",
        "--runner=DataflowRunner",
        f"--project={PROJECT}",
        f"--region={REGION}",
        f"--temp_location={staging}",
        f"--staging_location={staging}",
        f"--template_location={template}",
        "--dataflow_endpoint=http://localhost:1",  # a template is only written: nothing is sent
        "--no_auth",
    ]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"staging the pipeline failed:\n{done.stderr[-3000:]}")
    body = json.loads(template.read_text())
    body.pop("clientRequestId", None)
    return body


def request(url: str, body: dict | None = None) -> tuple[int, bytes]:
    """(HTTP status, body); raises OSError when the server does not answer at all."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if body is not None else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=TIMEOUT_S) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_once(data_dir: Path, work: Path, job: dict, name: str, workers: int | None) -> tuple[float, float]:
    """Start a server on `data_dir`: (seconds to the first 200, seconds to the first successful create)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "beamport", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    args += ["--allow-path", str(work), "--no-auth", "--log-level", "warning"]
    if workers is not None:
        args += ["--workers", str(workers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEAMPORT_FLINK_")}
    env.update(BEAMPORT_PRISM="none", PYTHONPATH=str(ROOT))
    log = open(work / "server.log", "ab")
    started = time.perf_counter()
    server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    try:
        first_200 = None
        while first_200 is None:
            if server.poll() is not None or time.perf_counter() - started > TIMEOUT_S:
                sys.exit(f"the server did not answer; its log: {work / 'server.log'}")
            try:
                if request(url + JOBS_PATH)[0] == 200:
                    first_200 = time.perf_counter() - started
                    break
            except OSError:
                pass
            time.sleep(POLL_S)
        body = {**job, "name": name}
        while True:
            if time.perf_counter() - started > TIMEOUT_S:
                sys.exit(f"jobs.create did not succeed in {TIMEOUT_S:.0f} s; the server's log: {work / 'server.log'}")
            try:
                status, answer = request(url + JOBS_PATH, body)
            except OSError:
                time.sleep(POLL_S)
                continue
            if status == 200:
                first_create = time.perf_counter() - started
                job_id = json.loads(answer)["id"]
                if not json.loads(request(f"{url}{JOBS_PATH}/{job_id}?view=JOB_VIEW_ALL")[1]).get("steps"):
                    sys.exit("the created job has no steps: its pipeline was not described")
                return first_200, first_create
            if status != 503:
                sys.exit(f"jobs.create answered {status}: {answer[:2000]!r}")
            time.sleep(POLL_S)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def summary(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
    return f"{label:<24} {statistics.median(ordered):7.2f} s {p90:7.2f} s {ordered[-1]:7.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=5, help="fresh data dirs (each also restarted once)")
    parser.add_argument("--workers", type=int, default=None, help="--workers for the server (default: its own)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="beamport-startup-bench-"))
    try:
        job = stage_pipeline(work)
        figures: dict[str, list[float]] = {k: [] for k in ("fresh_200", "fresh_create", "again_200", "again_create")}
        for n in range(args.starts):
            data_dir = work / f"data{n}"
            first, create = start_once(data_dir, work, job, f"startup-{n}-fresh", args.workers)
            figures["fresh_200"].append(first)
            figures["fresh_create"].append(create)
            first, create = start_once(data_dir, work, job, f"startup-{n}-again", args.workers)
            figures["again_200"].append(first)
            figures["again_create"].append(create)
            print(
                f"start {n + 1}: fresh {figures['fresh_200'][-1]:.2f} s / {figures['fresh_create'][-1]:.2f} s, "
                f"restart {first:.2f} s / {create:.2f} s (first 200 / first create)",
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    workers = "the server's default" if args.workers is None else str(args.workers)
    print()
    machine = f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"beamport serve, {args.starts} starts, local workers: {workers}; {machine}")
    print(f"{'from process start to':<24} {'median':>9} {'p90':>9} {'max':>9}")
    print(summary("fresh: first 200", figures["fresh_200"]))
    print(summary("fresh: first create", figures["fresh_create"]))
    print(summary("restart: first 200", figures["again_200"]))
    print(summary("restart: first create", figures["again_create"]))
    worst = max(statistics.median(figures["fresh_200"]), statistics.median(figures["again_200"]))
    verdict = "met" if worst <= TARGET_FIRST_200_S else "not met"
    print(f"target: first 200 <= {TARGET_FIRST_200_S:.0f} s (median, fresh and restart): {worst:.2f} s, {verdict}")


if __name__ == "__main__":
    main()
