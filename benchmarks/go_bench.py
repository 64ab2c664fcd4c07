"""Beam Go jobs: what Beamport adds to a Go pipeline's own run time, and how soon a submitted Go job runs.

    python benchmarks/go_bench.py [--lines 400] [--runs 3] [--engine embedded|prism ...] [--prism PATH]

tests/go/wordcount (built once, tests/go_programs.py) on the same generated text: (a) on Beam Go's direct
runner, (b) submitted by Beam Go's Dataflow runner to a Beamport server with Prism and `--emulators gcs,metadata`
(gs:// staging, default credentials from the metadata server), each --runs times on each --engine (the job's
label `beamport_engine`; embedded is a batch Go job's default). For (b): the submitting program's wall time, the
part of it spent staging the worker binary on the GCS endpoint (from the runner's own log lines), and from the
job: jobs.create to RUNNING (the engine's "is running on" message), jobs.create to DONE. Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from bench_common import free_port, parse_time

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "bench"
BUCKET = "bench"
WORDS = ["apple", "banana", "cherry", "avocado", "blueberry", "coconut", "date", "elderberry", "fig", "grape"]
_LOG_TIME = re.compile(r'^time=(\S+) level=\w+ msg="?(Staging worker binary|Staged worker binary)')


def run(binary: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([str(binary), *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stderr


def staging_seconds(log: str) -> float:
    """The time between the Go runner's "Staging worker binary" and "Staged worker binary" lines."""
    stamps = {m[2]: parse_time(m[1]) for m in (_LOG_TIME.match(line) for line in log.splitlines()) if m}
    return stamps["Staged worker binary"] - stamps["Staging worker binary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", action="append", choices=["embedded", "prism"], help="default: both")
    parser.add_argument("--prism", default=str(Path.home() / ".cache" / "beamport" / "bin" / "prism"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    import go_programs

    binary = go_programs.binary("wordcount")
    base = Path(tempfile.mkdtemp(prefix="beamport-go-bench-"))
    text = base / "input.txt"
    text.write_text("\n".join(" ".join(WORDS[(i * 7 + j) % 10] for j in range(i % 6 + 1)) for i in range(args.lines)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = base / "data"
    server = subprocess.Popen(
        [sys.executable, "-m", "beamport", "serve", "--port", str(port), "--data-dir", str(data)]
        + ["--allow-path", str(base), "--no-auth", "--prism", args.prism]
        + ["--emulators", "gcs,metadata", "--metadata-project", PROJECT],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (data / "emulators.env").is_file():
            time.sleep(0.2)
        env_lines = (data / "emulators.env").read_text().splitlines()
        env = dict(line.removeprefix("export ").split("=", 1) for line in env_lines if "=" in line)
        env["HOME"] = str(base)
        while True:
            try:
                httpx.get(f"{url}/v1b3/projects/{PROJECT}/locations/us-central1/jobs", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.storage import Client

        os.environ["STORAGE_EMULATOR_HOST"] = env["STORAGE_EMULATOR_HOST"]
        Client(project=PROJECT, credentials=AnonymousCredentials()).create_bucket(BUCKET)

        direct = [
            run(binary, env, "--runner=direct", f"--input={text}", f"--output={base}/direct.txt")[0]
            for _ in range(args.runs)
        ]
        print(f"Go direct runner: {statistics.median(direct):.2f} s (median of {args.runs}: {direct})")
        for engine in [engine for engine in args.engine or ["embedded", "prism"] for _ in range(args.runs)]:
            name = f"wc-{uuid.uuid4().hex[:6]}"
            wall, log = run(
                binary,
                env,
                "--runner=dataflow",
                f"--dataflow_endpoint={url}/",
                f"--project={PROJECT}",
                "--region=us-central1",
                f"--job_name={name}",
                f"--staging_location=gs://{BUCKET}/staging",
                f"--temp_location=gs://{BUCKET}/temp",
                f"--worker_binary={binary}",
                f"--input={text}",
                f"--output={base}/{name}.txt",
                f'--labels={{"beamport_engine": "{engine}"}}',
            )
            jobs = httpx.get(f"{url}/v1b3/projects/{PROJECT}/locations/us-central1/jobs").json()["jobs"]
            job = next(j for j in jobs if j["name"] == name)
            messages = httpx.get(
                f"{url}/v1b3/projects/{PROJECT}/locations/us-central1/jobs/{job['id']}/messages",
                params={"minimumImportance": "JOB_MESSAGE_DEBUG", "pageSize": 1000},
            ).json()["jobMessages"]
            created = parse_time(job["createTime"])
            running = next(parse_time(m["time"]) for m in messages if "is running on" in m.get("messageText", ""))
            print(
                f"Dataflow runner, {engine}: submitter {wall:.1f} s (staging the {binary.stat().st_size >> 20} MB "
                f"binary {staging_seconds(log):.1f} s), create->RUNNING {running - created:.1f} s, create->DONE "
                f"{parse_time(job['currentStateTime']) - created:.1f} s ({job['currentState']}; "
                f"{(parse_time(job['currentStateTime']) - created) / statistics.median(direct):.1f}x direct)"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
