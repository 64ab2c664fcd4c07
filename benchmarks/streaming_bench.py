"""Streaming jobs: how soon a submitted streaming job reads its input, how soon a new line comes out, how long
a drain takes, on each streaming engine the machine has.

    python benchmarks/streaming_bench.py [--jobs 3] [--engine prism|flink ...] [--beam-flag=--FLAG=VALUE ...]

For each engine: `beamport serve` with that engine only (Flink: the cluster named by BEAMPORT_FLINK_* from
scripts/flink-cluster; Prism: BEAMPORT_PRISM or the binary found on the machine), then, one job after
another, the counts pipeline of tests/pipelines/streaming_counts.py over a local log: seconds from submission
(DataflowRunner's command started) to the first output line, and from the job's creation (its createTime: the
service has it) to that line; then from appending a line to its output, then from the drain request to
JOB_STATE_DRAINED. Prints figures (median and max); asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "tests" / "pipelines" / "streaming_counts.py"
PROJECT, REGION = "bench", "us-central1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what: str, predicate, timeout: float = 180) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if predicate():
            return time.perf_counter() - started
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def run_engine(engine: str, jobs: int, beam_flags: list[str]) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix=f"streaming-bench-{engine}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEAMPORT_FLINK_")}
    env["BEAMPORT_PRISM"] = "none"
    if engine == "flink":
        env.update({k: v for k, v in os.environ.items() if k.startswith("BEAMPORT_FLINK_")})
        if "BEAMPORT_FLINK_MASTER" not in env:
            sys.exit("flink: set BEAMPORT_FLINK_* (source DIR/endpoints.env after scripts/flink-cluster start DIR)")
    else:
        from beamport.config import EngineSettings

        binary = EngineSettings().prism  # as `beamport serve` finds it: BEAMPORT_PRISM, or the PATH and the like
        if binary is None:
            sys.exit("prism: no Prism binary (scripts/prism-build)")
        env["BEAMPORT_PRISM"] = str(binary)
    port = free_port()
    url = f"http://localhost:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beamport",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(work / "data"),
            "--allow-path",
            str(work),
            "--workers",
            "2",
            "--no-auth",
        ],  # Beam's --no_auth: no credentials
        env=env,
        stdout=open(work / "server.log", "wb"),
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    names = ("to first output", "created to output", "new line to output", "drain")
    figures: dict[str, list[float]] = {name: [] for name in names}
    try:
        wait("the server", lambda: _answers(url), 60)
        for n in range(jobs):
            log, out = work / f"in-{n}.log", work / f"out-{n}.txt"
            log.write_text("".join(f"k{i % 2},{i}\n" for i in range(4)))
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    str(PIPELINE),
                    "counts",
                    str(log),
                    str(out),
                    "--runner=DataflowRunner",
                    f"--dataflow_endpoint={url}",
                    "--no_auth",
                    f"--project={PROJECT}",
                    f"--region={REGION}",
                    f"--temp_location={work}",
                    f"--staging_location={work}",
                    f"--job_name=bench-{n}",
                    "--streaming",
                    *beam_flags,
                ],
                capture_output=True,
                text=True,
            )
            if done.returncode:
                sys.exit(done.stderr[-3000:])
            job_id = done.stdout.split("JOB_ID ", 1)[1].split()[0]
            wait("the first output", lambda out=out: lines(out) >= 4)
            figures["to first output"].append(time.perf_counter() - started)
            jobs_path = f"{url}/v1b3/projects/{PROJECT}/locations/{REGION}/jobs/{job_id}"
            created = datetime.fromisoformat(httpx.get(jobs_path).json()["createTime"].replace("Z", "+00:00"))
            figures["created to output"].append(time.time() - created.timestamp())
            with open(log, "a") as f:
                f.write("k0,4\n")
            figures["new line to output"].append(wait("the new line's output", lambda out=out: lines(out) >= 5))
            httpx.put(jobs_path, json={"requestedState": "JOB_STATE_DRAINED"}, timeout=30)
            figures["drain"].append(
                wait("the drain", lambda path=jobs_path: httpx.get(path).json()["currentState"] == "JOB_STATE_DRAINED")
            )
    finally:
        server.terminate()
        server.wait(30)
    return figures


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1b3/projects/{PROJECT}/locations/{REGION}/jobs", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--engine", action="append", choices=["prism", "flink"])
    parser.add_argument(
        "--beam-flag",
        action="append",
        default=[],
        help="a further flag for DataflowRunner, e.g. --beam-flag=--experiments=disable_logging_submission_environment",
    )
    args = parser.parse_args()
    for engine in args.engine or ["prism", "flink"]:
        figures = run_engine(engine, args.jobs, args.beam_flag)
        for name, values in figures.items():
            print(
                f"{engine:6} {name:20} median {statistics.median(values):6.1f} s   max {max(values):6.1f} s"
                f"   ({len(values)} jobs)"
            )


if __name__ == "__main__":
    main()
