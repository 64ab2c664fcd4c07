"""Beam Java jobs: what Beamport adds to a Java pipeline's own run time, and how soon a submitted Java job runs.

    python benchmarks/java_bench.py [--lines 400] [--runs 3] [--engine embedded|prism|flink]

tests/java's WordCount (built by scripts/java-pipelines) on the same generated text: (a) on Beam Java's DirectRunner,
(b) submitted by Beam Java's DataflowRunner to a Beamport server (runner v1 and v2), each --runs times, on the
embedded engine, (labelled `beamport_engine=prism`) on Prism (BEAMPORT_PRISM, or where scripts/prism-build puts it),
or (labelled `beamport_engine=flink`) on the Flink cluster that BEAMPORT_FLINK_* name (`source DIR/endpoints.env`
after `scripts/flink-cluster start DIR`). For (b): the submitting program's wall time (its own JVM and the jars'
upload included), and from the job's messages: jobs.create to RUNNING, RUNNING to the Java harness up (its JVM start),
jobs.create to DONE, and whether the harness ran in a JVM kept warm (engine/java_warm.py: by the server's one worker,
or on Flink by the cluster's SDK worker pool; every job after the first, when their jars are the same). Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
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
WORDS = ["apple", "banana", "cherry", "avocado", "blueberry", "coconut", "date", "elderberry", "fig", "grape"]


def java(class_path: str, *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        ["java", "-cp", class_path, "dev.beamport.pipelines.WordCount", *args], capture_output=True, text=True
    )
    if done.returncode != 0 or "FINAL_STATE DONE" not in done.stdout:
        sys.exit(f"failed: {' '.join(args)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engine", choices=("embedded", "prism", "flink"), default="embedded")
    args = parser.parse_args()
    engine_args: list[str] = []
    if args.engine == "prism":
        prism = os.environ.get("BEAMPORT_PRISM") or str(Path.home() / ".cache" / "beamport" / "bin" / "prism")
        engine_args = ["--prism", prism]
    elif args.engine == "flink":
        try:
            engine_args = [
                *("--flink-master", os.environ["BEAMPORT_FLINK_MASTER"]),
                *("--flink-job-server", os.environ["BEAMPORT_FLINK_JOB_SERVER"]),
                *("--flink-sdk-pool", os.environ["BEAMPORT_FLINK_SDK_POOL"]),
                *(["--flink-beam-on-cluster"] if os.environ.get("BEAMPORT_FLINK_BEAM_ON_CLUSTER") == "true" else []),
            ]
        except KeyError:
            sys.exit("flink: set BEAMPORT_FLINK_* (source DIR/endpoints.env after scripts/flink-cluster start DIR)")
    class_path_file = subprocess.run(
        [str(ROOT / "scripts" / "java-pipelines")], capture_output=True, text=True, check=True
    ).stdout.strip()
    class_path = Path(class_path_file).read_text().strip()
    base = Path(tempfile.mkdtemp(prefix="beamport-java-bench-"))
    text = base / "input.txt"
    text.write_text("\n".join(" ".join(WORDS[(i * 7 + j) % 10] for j in range(i % 6 + 1)) for i in range(args.lines)))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "beamport", "serve", "--port", str(port), "--data-dir", str(base / "data")]
        + ["--allow-path", str(base), "--no-auth", "--workers", "1", *engine_args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                httpx.get(f"{url}/v1b3/projects/{PROJECT}/locations/us-central1/jobs", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        direct = [java(class_path, f"--inputFile={text}", f"--output={base}/direct/out") for _ in range(args.runs)]
        print(f"DirectRunner: {statistics.median(direct):.1f} s (median of {args.runs}: {direct})")
        for path in ("v1", "v2"):
            rows = []
            for _ in range(args.runs):
                name = f"wc-{path}-{uuid.uuid4().hex[:6]}"
                wall = java(
                    class_path,
                    f"--inputFile={text}",
                    f"--output={base}/{name}/out",
                    "--runner=DataflowRunner",
                    f"--dataflowEndpoint={url}",
                    f"--project={PROJECT}",
                    "--region=us-central1",
                    f"--jobName={name}",
                    f"--tempLocation={base}/temp",
                    f"--stagingLocation={base}/staging",
                    "--pathValidatorClass=org.apache.beam.sdk.extensions.gcp.storage.NoopPathValidator",
                    "--credentialFactoryClass=org.apache.beam.sdk.extensions.gcp.auth.NoopCredentialFactory",
                    *(["--experiments=use_runner_v2"] if path == "v2" else []),
                    *([f'--labels={{"beamport_engine": "{args.engine}"}}'] if args.engine != "embedded" else []),
                )
                jobs = httpx.get(f"{url}/v1b3/projects/{PROJECT}/locations/us-central1/jobs").json()["jobs"]
                job = next(j for j in jobs if j["name"] == name)
                messages = httpx.get(
                    f"{url}/v1b3/projects/{PROJECT}/locations/us-central1/jobs/{job['id']}/messages",
                    params={"minimumImportance": "JOB_MESSAGE_DEBUG", "pageSize": 1000},
                ).json()["jobMessages"]

                def when(text: str, messages=messages) -> float:
                    return next(parse_time(m["time"]) for m in messages if text in m.get("messageText", ""))

                created = parse_time(job["createTime"])
                running = when("is running on")
                rows.append(
                    (
                        wall,
                        running - created,
                        when("Fn Harness started") - running,
                        parse_time(job["currentStateTime"]) - created,
                        any("started ahead of the job" in m.get("messageText", "") for m in messages),
                    )
                )
            for wall, to_running, harness, to_done, warm in rows:
                print(
                    f"{args.engine}, runner {path}: submitter {wall:.1f} s "
                    f"({wall / statistics.median(direct):.1f}x DirectRunner), "
                    f"create->RUNNING {to_running:.1f} s, harness up {harness:.1f} s on "
                    f"({'a warm JVM' if warm else 'a JVM of its own'}), create->DONE {to_done:.1f} s"
                )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
