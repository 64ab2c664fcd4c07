"""Worker messages under load: N simulated workers send batches of health and CPU messages.

    python benchmarks/worker_messages_bench.py [--workers 500] [--batch 100] [--connections 4]
        [--seconds 10] [--warmup 2] [--database-url postgresql://...]

Starts `beamport serve` (API only: no local workers) on a fresh data dir, creates one job per 50 simulated
workers, then a load process on loopback plays the workers: each request is a WorkerMessages batch of
`--batch` messages, half workerHealthReport and half workerMetrics (one CPU sample), for distinct workers,
sent by `--connections` keep-alive connections in a closed loop. Prints the sustained messages per second,
the request latency percentiles, and the server's CPU seconds per 1,000 messages. Target: >= 10,000
messages/s on the 2-core benchmark machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "bench-workers"
LOCATION = "us-central1"
TARGET_MESSAGES_PER_S = 10_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int, database_url: str | None) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "beamport",
        "serve",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--log-level",
        "warning",
        "--workers",
        "0",
        "--no-auth",
    ]  # the load is not about auth
    if database_url:
        args += ["--database-url", database_url]
    log = open(data_dir.parent / "server.log", "ab")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def _stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def batches(job_ids: list[str], workers: int, batch: int, count: int, seed: int) -> list[bytes]:
    """`count` request bodies: each `batch` messages, half health and half CPU, for distinct workers."""
    rng = random.Random(seed)
    now = time.time()
    bodies = []
    for _ in range(count):
        messages = []
        for w in rng.sample(range(workers), batch // 2):
            labels = {"JOB_ID": job_ids[w % len(job_ids)], "WORKER_ID": f"sim-{w}", "CONTAINER_TYPE": "beamport-worker"}
            messages.append(
                {
                    "labels": labels,
                    "time": _stamp(now),
                    "workerHealthReport": {
                        "vmIsHealthy": True,
                        "vmStartupTime": _stamp(now - 3600),
                        "reportInterval": "5s",
                        "pods": [{"name": "harness", "pid": 1000 + w}],
                    },
                }
            )
            messages.append(
                {
                    "labels": labels,
                    "time": _stamp(now),
                    "workerMetrics": {
                        "cpuTime": [
                            {
                                "timestamp": _stamp(now + rng.random()),
                                "totalMs": str(rng.randrange(10**6)),
                                "rate": rng.random(),
                            }
                        ]
                    },
                }
            )
        bodies.append(json.dumps({"workerMessages": messages, "location": LOCATION}).encode())
    return bodies


async def _connection(port: int, path: str, bodies: list[bytes], stop_at: float, measure_from: float, out: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = random.randrange(len(bodies))
    while time.monotonic() < stop_at:
        body = bodies[i % len(bodies)]
        i += 1
        started = time.monotonic()
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        if started >= measure_from:
            out.append((started, time.monotonic() - started))
    writer.close()


def load(port: int, bodies: list[bytes], connections: int, warmup: float, seconds: float, queue) -> None:
    """The load process: `connections` closed loops; puts (latencies, window) on the queue."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    path = f"/v1b3/projects/{PROJECT}/locations/{LOCATION}/WorkerMessages"
    latencies: list = []

    async def main():
        start = time.monotonic()
        measure_from, stop_at = start + warmup, start + warmup + seconds
        await asyncio.gather(
            *(_connection(port, path, bodies, stop_at, measure_from, latencies) for _ in range(connections))
        )

    asyncio.run(main())
    queue.put([latency for _, latency in latencies])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=500, help="simulated workers")
    parser.add_argument("--batch", type=int, default=100, help="messages per request")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--database-url", default=None, help="PostgreSQL instead of SQLite")
    args = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="beamport-wm-bench-"))
    port = free_port()
    server = start_server(base / "data", port, args.database_url)
    try:
        jobs_url = f"http://127.0.0.1:{port}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs"
        job_ids = [
            httpx.post(jobs_url, json={"name": f"bench-{i}"}).json()["id"] for i in range(max(1, args.workers // 50))
        ]
        bodies = batches(job_ids, args.workers, args.batch, 200, seed=1)
        queue = multiprocessing.get_context("spawn").Queue()
        loader = multiprocessing.get_context("spawn").Process(
            target=load, args=(port, bodies, args.connections, args.warmup, args.seconds, queue)
        )
        cpu_before = None
        loader.start()
        time.sleep(args.warmup)
        cpu_before = _cpu_seconds(server.pid)
        latencies = queue.get(timeout=args.warmup + args.seconds + 120)
        cpu = _cpu_seconds(server.pid) - cpu_before
        loader.join()
        registry = httpx.get(f"http://127.0.0.1:{port}/beamport/v1/workers", params={"all": "true"}).json()["workers"]
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(base, ignore_errors=True)

    latencies.sort()
    messages = len(latencies) * args.batch
    rate = messages / args.seconds

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    result = {
        "store": "postgresql" if args.database_url else "sqlite",
        "workers": args.workers,
        "batch": args.batch,
        "connections": args.connections,
        "requests": len(latencies),
        "messages_per_s": round(rate),
        "target_messages_per_s": TARGET_MESSAGES_PER_S,
        "ratio_to_target": round(rate / TARGET_MESSAGES_PER_S, 2),
        "latency_ms": {
            "p50": round(pct(50), 1),
            "p90": round(pct(90), 1),
            "p99": round(pct(99), 1),
            "max": round(latencies[-1] * 1000, 1),
        },
        "server_cpu_s_per_1000_messages": round(cpu / messages * 1000, 4) if messages else None,
        "workers_in_registry": len(registry),
    }
    print(
        f"{result['messages_per_s']:,} messages/s ({result['ratio_to_target']}x the {TARGET_MESSAGES_PER_S:,} target), "
        f"p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms per {args.batch}-message request, "
        f"{result['server_cpu_s_per_1000_messages']} server CPU s per 1,000 messages ({result['store']})"
    )
    print(json.dumps(result))
    return 0 if result["workers_in_registry"] == args.workers else 1


if __name__ == "__main__":
    sys.exit(main())
