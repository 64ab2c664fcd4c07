"""Load generator for benchmarks/api_bench.py: a separate process that drives a Beamport server.

A small HTTP/1.1 keep-alive client on asyncio streams (no dependencies beyond the
standard library; uvloop is used if importable, as it is in Beamport's venv).
C connections each send one request at a time (a closed loop) for a warm-up and
then a measured window; every request's latency (request written -> whole body
read) is recorded. Only loopback addresses are accepted.

Scenarios:
  get   GET .../jobs/{jobId}                 random ids from --ids-file
  list  GET .../jobs?pageSize=50[&filter=..][&pageToken=..]
        a mix of first pages (no filter, ACTIVE, TERMINATED) and later pages
        reached with tokens the server handed out (collected before warm-up)

With --authorization-env NAME, every request carries `Authorization: <value of $NAME>` (e.g. `Bearer TOKEN`);
the value is passed in the environment, not on the command line, so that `ps` does not show it.

Prints one JSON object (the result) as the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import random
import resource
import sys
import time
from urllib.parse import quote

PAGE_SIZE = 50
REQUEST_TIMEOUT_S = 10.0
MAX_BODY_BYTES = 64 * 1024 * 1024


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; request() returns (status, body)."""

    def __init__(self, host: str, port: int, extra_headers: str = ""):
        self.host, self.port = host, port
        self.extra_headers = extra_headers  # whole header lines, each ending in \r\n
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None

    async def request(self, path: str) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAccept: application/json\r\n"
            f"User-Agent: beamport-loadgen\r\n{self.extra_headers}\r\n".encode()
        )
        reader = self.reader
        status_line = await reader.readline()
        if not status_line:
            raise HttpError("connection closed by server")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"bad status line {status_line!r}")
        status = int(parts[1])
        length = None
        chunked = False
        keep_alive = True
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise HttpError("connection closed in headers")
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and value.strip().lower() == b"close":
                keep_alive = False
        if chunked:
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(chunks)
        elif length is not None:
            if length > MAX_BODY_BYTES:
                raise HttpError(f"body too large: {length}")
            body = await reader.readexactly(length)
        else:
            raise HttpError("response without Content-Length or chunked body")
        if not keep_alive:
            self.close()
        return status, body


def _jobs_path(project: str, location: str) -> str:
    return f"/v1b3/projects/{quote(project)}/locations/{quote(location)}/jobs"


async def _collect_tokens(conn: Connection, base: str, max_requests: int) -> list[str]:
    """Page tokens the server hands out: the first pages at pageSize=50, then positions across the
    whole project/region (a walk at pageSize=1000); a token is a position, valid at any page size."""
    tokens: list[str] = []
    requests = 0
    for page_size, pages in ((PAGE_SIZE, 40), (1000, max_requests)):
        token = None
        for _ in range(pages):
            if requests >= max_requests:
                return tokens
            path = f"{base}?pageSize={page_size}" + (f"&pageToken={token}" if token else "")
            status, body = await conn.request(path)
            requests += 1
            if status != 200:
                raise SystemExit(f"token collection: HTTP {status} for {path}: {body[:300]!r}")
            token = json.loads(body).get("nextPageToken")
            if not token:
                break
            tokens.append(token)
    return tokens


class Recorder:
    def __init__(self, start: float, stop: float):
        self.start, self.stop = start, stop
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.failures: dict[str, int] = {}
        self.bytes = 0
        self.warmup_requests = 0

    def fail(self, what: str) -> None:
        self.failures[what] = self.failures.get(what, 0) + 1


async def _worker(host, port, headers, next_request, rec: Recorder, deadline: float, rng: random.Random) -> None:
    conn = Connection(host, port, headers)
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline:
                return
            path, check = next_request(rng)
            t0 = time.perf_counter()
            try:
                status, body = await asyncio.wait_for(conn.request(path), REQUEST_TIMEOUT_S)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, HttpError, ValueError) as exc:
                conn.close()
                if rec.start <= t0 < rec.stop:
                    rec.fail(type(exc).__name__)
                await asyncio.sleep(0.01)
                continue
            t1 = time.perf_counter()
            if t1 < rec.start:
                rec.warmup_requests += 1
                continue
            if t1 >= rec.stop:
                continue  # completed after the window closed: not counted
            rec.latencies.append(t1 - t0)
            rec.statuses[status] = rec.statuses.get(status, 0) + 1
            rec.bytes += len(body)
            if status == 200 and not check(body):
                rec.fail("unexpected body")
    finally:
        conn.close()


def _percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]  # nearest-rank


async def run(args) -> dict:
    base = _jobs_path(args.project, args.location)
    headers = ""
    if args.authorization_env:
        value = os.environ.get(args.authorization_env, "")
        if not value or "\r" in value or "\n" in value:
            raise SystemExit(f"${args.authorization_env} must hold one Authorization header value")
        headers = f"Authorization: {value}\r\n"
    rng = random.Random(args.seed)
    prep_started = time.perf_counter()

    if args.scenario == "get":
        with open(args.ids_file) as f:
            ids = [line.strip() for line in f if line.strip()]
        if not ids:
            raise SystemExit(f"no job ids in {args.ids_file}")

        def next_request(r: random.Random):
            job_id = ids[r.randrange(len(ids))]
            return f"{base}/{job_id}", lambda body, j=job_id.encode(): j in body

    else:
        conn = Connection(args.host, args.port, headers)
        tokens = await _collect_tokens(conn, base, args.max_token_requests)
        conn.close()
        if not tokens:
            raise SystemExit("list: the server handed out no page tokens; is the store seeded?")
        first_pages = [
            f"{base}?pageSize={PAGE_SIZE}",
            f"{base}?pageSize={PAGE_SIZE}&filter=ACTIVE",
            f"{base}?pageSize={PAGE_SIZE}&filter=TERMINATED",
        ]
        token_pages = [f"{base}?pageSize={PAGE_SIZE}&pageToken={t}" for t in tokens]

        def next_request(r: random.Random):
            # One request in four is a first page, the rest are later pages.
            if r.random() < 0.25:
                return first_pages[r.randrange(len(first_pages))], _list_check
            return token_pages[r.randrange(len(token_pages))], _list_check

    prep_s = time.perf_counter() - prep_started
    start = time.perf_counter() + args.warmup
    cpu_marks = asyncio.ensure_future(_cpu_marks(start, start + args.duration, args.server_pid))
    stop = start + args.duration
    rec = Recorder(start, stop)
    workers = [
        _worker(args.host, args.port, headers, next_request, rec, stop, random.Random(rng.random()))
        for _ in range(args.connections)
    ]
    await asyncio.wait_for(asyncio.gather(*workers), args.warmup + args.duration + REQUEST_TIMEOUT_S + 5)

    cpu_start, cpu_stop = await cpu_marks
    lat = sorted(rec.latencies)
    count = len(lat)
    non_200 = sum(n for s, n in rec.statuses.items() if s != 200)
    ms = lambda seconds: None if seconds is None else round(seconds * 1000, 3)  # noqa: E731
    return {
        "scenario": args.scenario,
        "authorization": bool(headers),
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "prep_s": round(prep_s, 2),
        "requests": count,
        "requests_per_s": round(count / args.duration, 1),
        "p50_ms": ms(_percentile(lat, 50)),
        "p90_ms": ms(_percentile(lat, 90)),
        "p99_ms": ms(_percentile(lat, 99)),
        "max_ms": ms(lat[-1]) if lat else None,
        "mean_ms": ms(sum(lat) / count) if count else None,
        "mean_response_bytes": round(rec.bytes / count) if count else 0,
        "statuses": {str(k): v for k, v in sorted(rec.statuses.items())},
        "errors": non_200 + sum(rec.failures.values()),
        "failures": rec.failures,
        "list_tokens": len(token_pages) if args.scenario == "list" else None,
        # CPU use during the measured window, in % of one core: this process, and the whole machine.
        "loadgen_cpu_pct": round(100 * (cpu_stop[0] - cpu_start[0]) / args.duration, 1),
        "machine_cpu_pct": _machine_pct(cpu_start[1], cpu_stop[1]),
        "server_cpu_pct": (
            round(100 * (cpu_stop[2] - cpu_start[2]) / args.duration, 1) if cpu_start[2] is not None else None
        ),
    }


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs, from /proc/stat (Linux); None elsewhere."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def _machine_pct(start, stop) -> float | None:
    """Busy time of the whole machine in % of one core (200% = both cores of a 2-core machine busy)."""
    if start is None or stop is None or stop[1] == start[1]:
        return None
    return round(100 * (os.cpu_count() or 1) * (stop[0] - start[0]) / (stop[1] - start[1]), 1)


def _process_cpu(pid: int | None) -> float | None:
    """User+system CPU seconds of another process (all its threads), from /proc (Linux)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


async def _cpu_marks(start: float, stop: float, server_pid: int | None):
    await asyncio.sleep(max(0.0, start - time.perf_counter()))
    first = (_self_cpu(), _machine_ticks(), _process_cpu(server_pid))
    await asyncio.sleep(max(0.0, stop - time.perf_counter()))
    return first, (_self_cpu(), _machine_ticks(), _process_cpu(server_pid))


def _list_check(body: bytes) -> bool:
    return b'"jobs"' in body


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=["get", "list"], required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--location", required=True)
    parser.add_argument("--ids-file", help="job ids for the get scenario, one a line")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server-pid", type=int, help="server process, to report its CPU use (Linux)")
    parser.add_argument(
        "--authorization-env",
        metavar="NAME",
        help="send `Authorization: $NAME` (the variable's value, e.g. 'Bearer TOKEN') with every request",
    )
    parser.add_argument("--max-token-requests", type=int, default=200, help="bound on requests made to collect tokens")
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error("--host must be a loopback address")
    if args.scenario == "get" and not args.ids_file:
        parser.error("--ids-file is required for the get scenario")
    if not (1 <= args.connections <= 1024) or not (0 < args.duration <= 3600) or not (0 <= args.warmup <= 600):
        parser.error("--connections 1..1024, --duration 0..3600 s, --warmup 0..600 s")
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(run(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
