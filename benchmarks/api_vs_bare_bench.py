"""jobs.get through Beamport against a bare Starlette + uvicorn app serving the same documents from memory
(issue 16, point 6: Beamport's API should answer at >= 50% of the bare app's requests/s).

1. Seeds 100,000 jobs (benchmarks/api_bench.py's data: same seed, same documents), or reuses them.
2. Reads every queried job's answer (JOB_VIEW_SUMMARY, rendered by the service's own render_job) into a
   JSON file for the bare app (benchmarks/bare_app.py).
3. Starts three servers side by side: `beamport serve --workers 0` as a user runs it (authentication on),
   `beamport serve --workers 0 --no-auth` on the same data, and the bare app; checks that the three answer
   the same ids with the same bytes.
4. Runs jobs.get (benchmarks/loadgen.py: 16 keep-alive connections, ids drawn at random) in `--rounds`
   rounds, one run against each server per round, the order rotating so that none always runs first or
   last. Requests to the server with authentication carry `Authorization: Bearer ACCESS_TOKEN`, an access
   token got from the admin key through google-auth, as a client does.
5. Prints every run, each server's medians, Beamport's req/s as a share of the bare app's (medians, and
   each round's own), and the target.

    .venv/bin/python benchmarks/api_vs_bare_bench.py --rounds 3 --data-dir /tmp/bp-bench --reuse

Exit status: 0 if every run was free of errors (whether or not the target was met), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import api_bench  # noqa: E402
from api_bench import IDS_FILE, LOCATION, PROJECT  # noqa: E402

TARGET_SHARE = 0.50  # of the bare app's requests/s
# How each server is called, in the order of the first round.
MODES = {
    "token": "Beamport, auth on (access token)",
    "off": "Beamport, --no-auth",
    "bare": "bare Starlette + uvicorn",
}


def write_documents(data_dir: Path, path: Path) -> int:
    """Every job of PROJECT/LOCATION as jobs.get answers it (JOB_VIEW_SUMMARY), into a JSON file
    {id: document} for the bare app. Returns how many."""
    import orjson

    from beamport.service import model
    from beamport.service.documents import render_job
    from beamport.store import open_store
    from beamport.store.jobs import JobQuery

    store = open_store(None, data_dir)
    documents, before = {}, None
    try:
        while page := store.jobs.list(JobQuery(PROJECT, LOCATION, before_seq=before, limit=1000)):
            for record in page:
                documents[record.id] = render_job(record, model.VIEW_SUMMARY)
            before = page[-1].seq
    finally:
        store.close()
    path.write_bytes(orjson.dumps(documents))
    return len(documents)


def start_bare(documents: Path, port: int, log_path: Path, cpu: int | None) -> subprocess.Popen:
    log = open(log_path, "ab")
    process = subprocess.Popen(
        [sys.executable, str(HERE / "bare_app.py"), "--port", str(port), "--documents", str(documents)],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=api_bench._pinned(cpu),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the bare app exited early:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2):
                pass
        except urllib.error.HTTPError:  # 404: it answers
            return process
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"the bare app did not answer in 60 s:\n{log_path.read_text()}")


def get_body(port: int, job_id: str, token: str | None) -> bytes:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs/{job_id}"
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs to store")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each one run against every server")
    parser.add_argument("--modes", default=",".join(MODES), help=f"servers to run against: {', '.join(MODES)}")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--data-dir", type=Path, help="where to seed (default: a temporary directory, removed after)")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse a DB seeded earlier in --data-dir with the same --jobs/--seed"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (documents, request mix)")
    parser.add_argument("--batch", type=int, default=2000, help="jobs per store write when seeding")
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    parser.add_argument("--pin", action="store_true", help="pin every server to CPU 0 and the load generator to CPU 1")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES) or "bare" not in modes:
        parser.error(f"--modes: a comma-separated list of {', '.join(MODES)}, with bare")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be within 1..20")

    temp = Path(tempfile.mkdtemp(prefix="beamport-bare-bench-"))
    data_dir = args.data_dir.resolve() if args.data_dir else temp / "data"
    if args.reuse and not args.data_dir:
        parser.error("--reuse needs --data-dir")
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    servers: dict[str, tuple[int, subprocess.Popen]] = {}
    runs: list[dict] = []
    try:
        try:
            seed_s, db_bytes, reused = api_bench.seeded(data_dir, args.jobs, args.seed, args.batch, args.reuse)
        except FileExistsError as exc:
            parser.error(str(exc))
        documents = temp / "documents.json"
        started = time.perf_counter()
        count = write_documents(data_dir, documents)
        print(f"{count:,} documents for the bare app in {time.perf_counter() - started:.1f} s", flush=True)

        cpu = 0 if args.pin else None
        # Authentication on first: its first start writes the admin key.
        for mode in sorted(modes, key=lambda m: m != "token"):
            port = api_bench.free_port()
            if mode == "bare":
                process = start_bare(documents, port, log_path, cpu)
            else:
                process = api_bench.start_server(data_dir, port, log_path, [], cpu, auth=mode == "token")
            servers[mode] = (port, process)
            print(f"{MODES[mode]}: pid {process.pid} on 127.0.0.1:{port}; log {log_path}", flush=True)
        for mode, (_, process) in servers.items():
            print(f"{MODES[mode]}: idle after {api_bench.wait_until_idle(process.pid):.1f} s more", flush=True)
        tokens = {m: None for m in modes}
        if "token" in servers:
            private = temp / "key"
            private.mkdir()
            tokens["token"] = api_bench.bearer_token(data_dir, servers["token"][0], private)

        ids = (data_dir / IDS_FILE).read_text().split()
        for job_id in ids[:: max(1, len(ids) // 20)]:  # the same answer, byte for byte, from every server
            bodies = {m: get_body(port, job_id, tokens[m]) for m, (port, _) in servers.items()}
            if len(set(bodies.values())) != 1:
                raise SystemExit(f"the servers answer {job_id} differently: {bodies}")
        print("the servers answer the same bytes (checked on 20 ids)", flush=True)

        for i in range(args.rounds):
            order = modes[i % len(modes) :] + modes[: i % len(modes)]
            for mode in order:
                port, process = servers[mode]
                print(f"round {i + 1}: {MODES[mode]} ...", flush=True)
                result = api_bench.run_load(
                    args, port, "get", data_dir / IDS_FILE, process.pid, args.connections, tokens[mode]
                )
                result.update(mode=mode, round=i + 1)
                runs.append(result)
                print(
                    f"  {result['requests_per_s']:>9,.0f} req/s  p50 {result['p50_ms']:.2f} ms  "
                    f"p99 {result['p99_ms']:.2f} ms  errors {result['errors']}  CPU: server "
                    f"{api_bench._fmt_pct(result.get('server_cpu_pct'))} "
                    f"loadgen {api_bench._fmt_pct(result.get('loadgen_cpu_pct'))} "
                    f"machine {api_bench._fmt_pct(result.get('machine_cpu_pct'))}",
                    flush=True,
                )
    finally:
        for _, process in servers.values():
            api_bench.stop_server(process)
        shutil.rmtree(temp, ignore_errors=True)  # the documents, the key's copy (and the data, unless --data-dir)

    summary = report(args, modes, runs, seed_s, db_bytes, reused)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if all(r["errors"] == 0 for r in runs) else 1


def report(args, modes: list[str], runs: list[dict], seed_s: float, db_bytes: int, reused: bool) -> dict:
    def median(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["mode"] == mode)

    def cpu_ms(mode: str) -> float | None:
        values = [api_bench._server_ms(r) for r in runs if r["mode"] == mode]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    width = 118
    print()
    print("=" * width)
    print(
        f"jobs.get: Beamport vs a bare Starlette + uvicorn app  {datetime.now(UTC):%Y-%m-%d %H:%M UTC}  "
        f"{platform.node()}  {os.cpu_count()} CPUs  Python {platform.python_version()}"
    )
    print(
        f"{args.jobs:,} jobs stored (SQLite, WAL; seeding {'(earlier) ' if reused else ''}took {seed_s:.1f} s, "
        f"{db_bytes / 2**20:.0f} MiB); {args.connections} connections, {args.warmup:g} s warm-up + "
        f"{args.duration:g} s measured per run; {args.rounds} rounds, servers in rotating order; "
        f"{'servers on CPU 0, load on CPU 1' if args.pin else 'CPU placement left to the scheduler'}"
    )
    print("-" * width)
    print(
        f"{'round':<6}{'server':<36}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}"
        f"{'server':>8}{'loadgen':>9}{'machine':>9}{'srv ms/req':>11}"
    )
    for r in runs:
        print(
            f"{r['round']:<6}{MODES[r['mode']]:<36}{r['requests_per_s']:>9,.0f}{r['p50_ms']:>9.2f}{r['p90_ms']:>9.2f}"
            f"{r['p99_ms']:>9.2f}{r['max_ms']:>9.2f}{r['errors']:>8}{api_bench._fmt_pct(r.get('server_cpu_pct')):>8}"
            f"{api_bench._fmt_pct(r.get('loadgen_cpu_pct')):>9}{api_bench._fmt_pct(r.get('machine_cpu_pct')):>9}"
            f"{api_bench._cpu_per_request(r):>11}"
        )
    print("-" * width)
    bare_rps = median("bare", "requests_per_s")
    medians = {}
    for mode in modes:
        rps, cpu = median(mode, "requests_per_s"), cpu_ms(mode)
        per_round = []
        for i in range(1, args.rounds + 1):
            this = [r for r in runs if r["round"] == i and r["mode"] == mode]
            bare = [r for r in runs if r["round"] == i and r["mode"] == "bare"]
            if this and bare and bare[0]["requests_per_s"]:
                per_round.append(this[0]["requests_per_s"] / bare[0]["requests_per_s"])
        medians[mode] = {
            "requests_per_s": rps,
            "p50_ms": median(mode, "p50_ms"),
            "p99_ms": median(mode, "p99_ms"),
            "server_cpu_ms_per_request": cpu,
            "share_of_bare": rps / bare_rps if bare_rps else None,
            "share_of_bare_per_round": per_round,
        }
        share = "" if mode == "bare" else f"  {rps / bare_rps:.0%} of bare (rounds: "
        if mode != "bare":
            share += ", ".join(f"{x:.0%}" for x in per_round) + ")"
        print(
            f"  {MODES[mode]:<34} median {rps:>7,.0f} req/s  p50 {median(mode, 'p50_ms'):6.2f} ms  "
            f"p99 {median(mode, 'p99_ms'):6.2f} ms  server CPU {'?' if cpu is None else f'{cpu:.3f}'} ms/req{share}"
        )
    print("-" * width)
    targets = []
    for mode in (m for m in modes if m != "bare"):
        share = medians[mode]["share_of_bare"]
        met = share is not None and share >= TARGET_SHARE and all(r["errors"] == 0 for r in runs if r["mode"] == mode)
        targets.append({"server": mode, "target": TARGET_SHARE, "got": share, "met": met})
        print(
            f"target: {MODES[mode]} req/s >= {TARGET_SHARE:.0%} of bare: got {share:.1%} "
            f"{'MET' if met else 'NOT MET'}{'  (judged: authentication on, as shipped)' if mode == 'token' else ''}"
        )
    print("=" * width)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "connections": args.connections,
        "pinned": args.pin,
        "medians": medians,
        "runs": runs,
        "targets": targets,
    }


if __name__ == "__main__":
    sys.exit(main())
