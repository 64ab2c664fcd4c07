"""Running jobs: what Beamport adds to a pipeline's own run time, and how soon a submitted job runs.

    python benchmarks/run_bench.py [--megabytes 50] [--latency-jobs 10]

(a) Beam's wordcount example on DirectRunner, (b) the same through Beamport with DataflowRunner, on the same
generated text, in the same run: wall times of both commands and b/a. Beam's DataflowRunner polls the
service every 5 s, so (b) also shows the job's own span (createTime to DONE) as the server recorded it.
Then submission to RUNNING: small jobs submitted one after another (each once the previous one runs), the
time from createTime to the "Workers have started" message. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_common import free_port, parse_time

PROJECT, REGION = "bench", "us-central1"
WORDS = [f"w{i}" for i in range(5000)] + ["the", "a", "of", "and", "to", "in"] * 200


def generate_text(path: Path, megabytes: float) -> None:
    rng = random.Random(42)
    target = int(megabytes * 1024 * 1024)
    with open(path, "w") as out:
        written = 0
        while written < target:
            line = " ".join(rng.choices(WORDS, k=12)) + "\n"
            out.write(line)
            written += len(line)


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(args)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=50)
    parser.add_argument("--latency-jobs", type=int, default=10)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="beamport-run-bench-"))
    text = work / "in.txt"
    generate_text(text, args.megabytes)
    print(f"input: {text.stat().st_size / 1e6:.1f} MB of generated text in {work}")

    port = free_port()
    log = open(work / "server.log", "wb")
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
            "--log-level",
            "warning",
            "--no-auth",
        ],  # Beam's --no_auth: no credentials
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    api = httpx.Client(base_url=url, timeout=30)
    jobs_path = f"/v1b3/projects/{PROJECT}/locations/{REGION}/jobs"
    for _ in range(300):
        try:
            api.get(jobs_path)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    flags = [
        "--runner=DataflowRunner",
        f"--dataflow_endpoint=http://localhost:{port}",
        "--no_auth",
        f"--project={PROJECT}",
        f"--region={REGION}",
        f"--temp_location={work}",
        f"--staging_location={work}",
    ]
    try:
        direct = timed(
            [
                "-m",
                "apache_beam.examples.wordcount",
                "--input",
                str(text),
                "--output",
                str(work / "direct" / "out"),
                "--runner=DirectRunner",
            ]
        )
        served = timed(
            [
                "-m",
                "apache_beam.examples.wordcount",
                "--input",
                str(text),
                "--output",
                str(work / "served" / "out"),
                *flags,
                "--job_name=wordcount",
            ]
        )
        (job,) = api.get(jobs_path).json()["jobs"]
        assert job["currentState"] == "JOB_STATE_DONE", job
        span = parse_time(job["currentStateTime"]) - parse_time(job["createTime"])
        same = sorted(_lines(work / "direct")) == sorted(_lines(work / "served"))

        waits = []
        for n in range(args.latency_jobs):
            script = work / "tiny.py"
            script.write_text(TINY)
            subprocess.run(
                [sys.executable, str(script), str(work / f"tiny{n}"), *flags, f"--job_name=tiny-{n}"],
                check=True,
                capture_output=True,
            )
            job_id = api.get(jobs_path, params={"name": f"tiny-{n}"}).json()["jobs"][0]["id"]
            started = None
            deadline = time.monotonic() + 60
            while started is None and time.monotonic() < deadline:
                messages = api.get(f"{jobs_path}/{job_id}/messages").json().get("jobMessages", [])
                started = next((m for m in messages if m["messageText"] == "Workers have started successfully."), None)
                time.sleep(0.05)
            created = api.get(f"{jobs_path}/{job_id}").json()["createTime"]
            waits.append(parse_time(started["time"]) - parse_time(created))
    finally:
        server.terminate()
        server.wait()

    print()
    print(f"(a) DirectRunner, in process:            {direct:7.2f} s wall")
    print(f"(b) Beamport via DataflowRunner:         {served:7.2f} s wall (includes Beam's 5 s polling)")
    print(f"    the job's own span, create to DONE:  {span:7.2f} s")
    print(f"    ratio b/a (wall):                    {served / direct:7.3f}   target <= 1.15")
    print(f"    ratio span/a:                        {span / direct:7.3f}")
    print(f"    outputs identical:                   {same}")
    waits.sort()
    print(
        f"submission to RUNNING over {len(waits)} jobs: p50 {statistics.median(waits):.2f} s, "
        f"max {waits[-1]:.2f} s   target p50 <= 1 s"
    )


def _lines(directory: Path) -> list[str]:
    return [line for f in sorted(directory.glob("out*")) for line in f.read_text().splitlines()]


TINY = """
import sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
p = beam.Pipeline(options=PipelineOptions(sys.argv[2:]))
p | beam.Create([1, 2, 3]) | beam.Map(str) | beam.io.WriteToText(sys.argv[1])
p.run()
"""

if __name__ == "__main__":
    main()
