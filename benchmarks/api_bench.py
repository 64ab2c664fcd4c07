"""Benchmark of jobs.get and jobs.list against a real `beamport serve` with 100,000 stored jobs.

1. Seeds the jobs into a fresh SQLite data dir, in-process, through the store
   (beamport.store.open_store + Write batches), each job built from a job
   document shaped like what Beam's DataflowRunner submits.
2. Starts `python -m beamport serve` on a free loopback port.
3. Runs benchmarks/loadgen.py, a separate process, once per scenario: C
   keep-alive connections, warm-up, then a measured window.
4. Prints requests/s and latency percentiles, and the targets.

Authentication (`--auth`): `off` (the default) starts the server with --no-auth, as the figures of the
first sections of benchmarks/README.md were measured; `on` starts it with authentication and sends every
request with `Authorization: Bearer TOKEN`, an access token obtained from the server's admin key through
google-auth as a client does; `compare` starts both servers on the same seeded data and runs each scenario
(default: get only) in alternating rounds, off and on, then one round (`--jwt-rounds`) with a self-signed
JWT as the bearer (what google-cloud-dataflow-client's REST transport sends), and prints the ratio on/off
against the target (>= 90%).

    .venv/bin/python benchmarks/api_bench.py --repeat 3          # as recorded in benchmarks/README.md
    .venv/bin/python benchmarks/api_bench.py --repeat 3 --pin    # server on CPU 0, load on CPU 1
    .venv/bin/python benchmarks/api_bench.py --data-dir /tmp/bp-bench --reuse   # keep the seeded DB
    .venv/bin/python benchmarks/api_bench.py --auth compare --repeat 5 --data-dir /tmp/bp-bench --reuse

Exit status: 0 if every run was free of errors (whether or not targets were met), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from beamport import wire  # noqa: E402
from beamport.service import model  # noqa: E402

try:  # where the service keeps it (it moved from service.jobs to service.documents)
    from beamport.service.documents import record_from_document  # noqa: E402
except ImportError:  # pragma: no cover
    from beamport.service.jobs import _record_from_document as record_from_document  # noqa: E402

from bench_common import free_port  # noqa: E402

from beamport.store import open_store  # noqa: E402
from beamport.store.base import Write  # noqa: E402

try:  # a pending batch job has its work waiting for a worker (servers with an execution engine)
    from beamport.store.work_items import WorkItemRecord  # noqa: E402
except ImportError:  # pragma: no cover
    WorkItemRecord = None

PROJECT = "bench-project"
LOCATION = "us-central1"
# (project, location, share of the jobs): most jobs are in the one the benchmark queries.
PLACES = [(PROJECT, LOCATION, 0.90), (PROJECT, "europe-west1", 0.05), ("other-project", LOCATION, 0.05)]
TARGET_GET_RPS = 1500.0
TARGET_LIST_P99_MS = 25.0
TARGET_AUTH_RATIO = 0.90  # jobs.get with authentication keeps this share of its throughput without
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
AUTH_ENV = "BEAMPORT_BENCH_AUTHORIZATION"  # how the load generator gets the Authorization header's value
# How the server is called: without authentication, or with a bearer token of the admin key.
MODES = {"off": "auth off", "token": "auth on, access token", "jwt": "auth on, self-signed JWT"}
META_FILE = "bench-meta.json"
IDS_FILE = "bench-ids.txt"
SEED_FORMAT = 3  # bump when the seeded documents change, so --reuse re-seeds


# -- seeding ----------------------------------------------------------------

TEAMS = ["data-eng", "analytics", "ml-platform", "billing", "search", "ads-quality"]
PIPELINES = ["daily-etl", "sessionize", "dedupe-events", "export-bq", "feature-gen", "wordcount", "backfill"]
USERS = ["alice", "bob", "carol", "dave", "erin"]
SPAN_US = 180 * 86400 * 1_000_000  # jobs were created over the last 180 days


def _environment(rng: random.Random, project: str, location: str, name: str, bucket: str, stamp: str) -> dict:
    staging = f"gs://{bucket}/staging/{name}.{stamp}"
    staged = f"storage.googleapis.com/{bucket}/staging/{name}.{stamp}"
    experiments = ["use_runner_v2", "use_portable_job_submission", "use_multiple_sdk_containers", "beam_fn_api"]
    if rng.random() < 0.3:
        experiments.append("enable_prime")
    py = rng.choice(["3.10", "3.11", "3.12"])
    return {
        "tempStoragePrefix": f"storage.googleapis.com/{bucket}/temp",
        "clusterManagerApiService": "compute.googleapis.com",
        "experiments": experiments,
        "userAgent": {"name": f"Apache Beam Python {py} SDK", "version": "2.77.0"},
        "version": {"job_type": "FNAPI_BATCH", "major": "8"},
        "dataset": "bigquery.googleapis.com/cloud_dataflow",
        "sdkPipelineOptions": {
            "options": {
                "project": project,
                "region": location,
                "job_name": name,
                "runner": "DataflowRunner",
                "temp_location": f"gs://{bucket}/temp",
                "staging_location": f"gs://{bucket}/staging",
                "experiments": experiments,
                "save_main_session": rng.random() < 0.5,
                "sdk_location": "container",
                "pipeline_type_check": True,
                "beam_services": {},
                "dataflow_endpoint": "https://dataflow.googleapis.com",
                "no_auth": False,
                "labels": [],
                "machine_type": rng.choice(["n1-standard-4", "n2-standard-8", "e2-standard-4"]),
                "max_num_workers": float(rng.choice([10, 20, 50, 100])),
                "pipelineUrl": f"{staging}/pipeline.pb",
            },
            "display_data": [
                {
                    "key": "runner",
                    "namespace": "apache_beam.options.pipeline_options.StandardOptions",
                    "type": "STRING",
                    "value": "DataflowRunner",
                },
                {
                    "key": "project",
                    "namespace": "apache_beam.options.pipeline_options.GoogleCloudOptions",
                    "type": "STRING",
                    "value": project,
                },
                {
                    "key": "job_name",
                    "namespace": "apache_beam.options.pipeline_options.GoogleCloudOptions",
                    "type": "STRING",
                    "value": name,
                },
                {
                    "key": "temp_location",
                    "namespace": "apache_beam.options.pipeline_options.GoogleCloudOptions",
                    "type": "STRING",
                    "value": f"gs://{bucket}/temp",
                },
                {
                    "key": "region",
                    "namespace": "apache_beam.options.pipeline_options.GoogleCloudOptions",
                    "type": "STRING",
                    "value": location,
                },
                {
                    "key": "sdk_location",
                    "namespace": "apache_beam.options.pipeline_options.SetupOptions",
                    "type": "STRING",
                    "value": "container",
                },
            ],
        },
        "workerPools": [
            {
                "kind": "harness",
                "packages": [
                    {"name": "pipeline.pb", "location": f"{staged}/pipeline.pb"},
                    {
                        "name": "submission_environment_dependencies.txt",
                        "location": f"{staged}/submission_environment_dependencies.txt",
                    },
                ],
                "taskrunnerSettings": {
                    "parallelWorkerSettings": {
                        "baseUrl": "https://dataflow.googleapis.com",
                        "servicePath": "https://dataflow.googleapis.com",
                    }
                },
                "autoscalingSettings": {"algorithm": "AUTOSCALING_ALGORITHM_BASIC", "maxNumWorkers": 20},
                "sdkHarnessContainerImages": [
                    {
                        "containerImage": f"gcr.io/cloud-dataflow/v1beta3/beam_python{py}_sdk:2.77.0",
                        "environmentId": "ref_Environment_default_environment_1",
                        "capabilities": [
                            "beam:coder:bytes:v1",
                            "beam:coder:bool:v1",
                            "beam:coder:varint:v1",
                            "beam:coder:string_utf8:v1",
                            "beam:coder:iterable:v1",
                            "beam:coder:kv:v1",
                            "beam:protocol:progress_reporting:v1",
                            "beam:protocol:worker_status:v1",
                            "beam:transform:sdf_truncate_sized_restrictions:v1",
                            f"beam:version:sdk_base:apache/beam_python{py}_sdk:2.77.0",
                        ],
                    }
                ],
            }
        ],
    }


def _job_document(rng: random.Random, i: int, project: str, location: str, create_us: int, pending: bool) -> dict:
    team = rng.choice(TEAMS)
    created = datetime.fromtimestamp(create_us / 1e6, UTC)
    if rng.random() < 0.6:  # Beam's default name
        name = f"beamapp-{rng.choice(USERS)}-{created:%m%d%H%M%S}-{created:%f}-{rng.getrandbits(32):08x}"
    else:
        name = f"{rng.choice(PIPELINES)}-{team}-{created:%Y%m%d-%H%M%S}-{i}"
    stamp = f"{created:%m%d%H%M%S}.{i}"
    created_s = wire.format_timestamp_us(create_us)
    doc = {
        "id": model.new_job_id(create_us),
        "projectId": project,
        "name": name,
        "type": "JOB_TYPE_BATCH",
        "environment": _environment(rng, project, location, name, f"{team}-dataflow", stamp),
        "currentState": model.PENDING,
        "currentStateTime": created_s,
        "createTime": created_s,
        "location": location,
        "labels": {"team": team, "env": rng.choice(["prod", "staging", "dev"]), "owner": rng.choice(USERS)},
        "clientRequestId": f"{created:%Y%m%d%H%M%S%f}-{rng.randrange(1000, 10000)}",
        "startTime": created_s,
    }
    if not pending:
        r = rng.random()
        state = model.DONE if r < 0.85 else model.FAILED if r < 0.93 else model.CANCELLED
        doc["currentState"] = state
        doc["currentStateTime"] = wire.format_timestamp_us(create_us + rng.randrange(60, 4 * 3600) * 1_000_000)
        if state == model.CANCELLED:
            doc["requestedState"] = model.CANCELLED
    return doc


def _check_wire_form(doc: dict) -> None:
    """The seeded documents must be what the server itself would store (Google's JSON form of a Job)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # protobuf's, from json_format
        normal = wire.to_dict(wire.parse_message(doc, model.JobPb, "job"))
    if normal != doc:
        raise SystemExit(
            f"seed document is not in wire form:\n{json.dumps(doc, indent=1)}\n!=\n{json.dumps(normal, indent=1)}"
        )


def seed(data_dir: Path, jobs: int, seed_value: int, batch: int) -> tuple[list[str], float, int]:
    """Write `jobs` jobs; return the ids in PROJECT/LOCATION, the seconds it took and the DB size."""
    rng = random.Random(seed_value)
    started = time.perf_counter()
    store = open_store(None, data_dir)
    now = wire.now_us()
    first = now - SPAN_US
    places = [p[:2] for p in PLACES]
    weights = [p[2] for p in PLACES]
    pending_from = int(jobs * 0.995)  # the newest 0.5% are still pending, the rest have ended
    ids: list[str] = []
    batch_records, work_batch = [], []
    for i in range(jobs):
        project, location = rng.choices(places, weights)[0]
        create_us = first + (SPAN_US * i) // jobs + rng.randrange(1_000_000)
        doc = _job_document(rng, i, project, location, create_us, pending=i >= pending_from or rng.random() < 0.002)
        if i < 3:
            _check_wire_form(doc)
        record = record_from_document(doc)
        batch_records.append(record)
        if record.active and WorkItemRecord is not None:
            work_batch.append(WorkItemRecord(job_id=record.id))
        if (project, location) == (PROJECT, LOCATION):
            ids.append(doc["id"])
        if len(batch_records) >= batch or i == jobs - 1:
            extra = {"new_work_items": work_batch} if work_batch else {}
            store.write(Write(new_jobs=batch_records, **extra))
            batch_records, work_batch = [], []
    # Leave a checkpointed database, as a server that has been running a while would.
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    size = sum(f.stat().st_size for f in data_dir.iterdir() if f.name.startswith("beamport.db"))
    return ids, time.perf_counter() - started, size


def seeded(data_dir: Path, jobs: int, seed_value: int, batch: int, reuse: bool) -> tuple[float, int, bool]:
    """The jobs seeded in data_dir (their ids in IDS_FILE): seeded now, or earlier with the same parameters
    when `reuse`. Returns the seconds seeding took, the database's size and whether it was reused. Raises
    FileExistsError if data_dir holds something else and not `reuse`."""
    meta_path, ids_path = data_dir / META_FILE, data_dir / IDS_FILE
    wanted = {"jobs": jobs, "seed": seed_value, "format": SEED_FORMAT}
    if reuse and meta_path.exists() and ids_path.exists():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in wanted} == wanted:
            print(f"reusing the {jobs:,} jobs seeded earlier in {data_dir} (seeding took {meta['seed_s']:.1f} s then)")
            return meta["seed_s"], meta["db_bytes"], True
    if data_dir.exists() and any(data_dir.iterdir()):
        if not reuse:
            raise FileExistsError(f"{data_dir} is not empty: pass --reuse to use it, or remove it")
        shutil.rmtree(data_dir)  # --reuse, but seeded with other parameters
    print(f"seeding {jobs:,} jobs into {data_dir} ...", flush=True)
    ids, seed_s, db_bytes = seed(data_dir, jobs, seed_value, batch)
    ids_path.write_text("\n".join(ids) + "\n")
    meta_path.write_text(json.dumps({**wanted, "seed_s": seed_s, "db_bytes": db_bytes}))
    print(
        f"seeded {jobs:,} jobs in {seed_s:.1f} s ({jobs / seed_s:,.0f} jobs/s), "
        f"{len(ids):,} of them in {PROJECT}/{LOCATION}; database {db_bytes / 2**20:.0f} MiB"
    )
    return seed_s, db_bytes, False


# -- server -----------------------------------------------------------------


def start_server(
    data_dir: Path, port: int, log_path: Path, extra: list[str], cpu: int | None, auth: bool = False
) -> subprocess.Popen:
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
        *extra,
    ]  # API only: no workers
    if not auth:
        args.append("--no-auth")
    log = open(log_path, "ab")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, preexec_fn=_pinned(cpu))
    url = f"http://127.0.0.1:{port}/v1b3/projects/{PROJECT}/locations/{LOCATION}/jobs?pageSize=1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"beamport serve exited early:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process
        except urllib.error.HTTPError as error:  # it answers: 401 from a server with authentication
            if auth and error.code == 401:
                return process
            time.sleep(0.1)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"beamport serve did not answer in 60 s:\n{log_path.read_text()}")


def bearer_token(data_dir: Path, port: int, private_dir: Path, jwt: bool = False) -> str:
    """A bearer token of the server's admin key (DATA_DIR/admin-key.json), obtained through google-auth as a
    client does: an access token from the key's token_uri, or (jwt) a JWT self-signed with the key, as
    google-cloud-dataflow-client's REST transport sends (with_always_use_jwt_access)."""
    import google.auth.transport.requests
    from google.oauth2 import service_account

    key_file = data_dir / "admin-key.json"
    info = json.loads(key_file.read_text())
    token_uri = f"http://127.0.0.1:{port}/token"
    if info.get("token_uri") != token_uri:
        # The key was written by the first server started on this data dir (--reuse), on another port.
        info["token_uri"] = token_uri
        key_file = private_dir / "admin-key.json"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(info, handle)
    credentials = service_account.Credentials.from_service_account_file(str(key_file), scopes=SCOPES)
    if jwt:
        credentials = credentials.with_always_use_jwt_access(True)
    credentials.refresh(google.auth.transport.requests.Request())
    token = credentials.token
    if jwt != (token.count(".") == 2):
        wanted = "a self-signed JWT" if jwt else "an access token"
        raise SystemExit(f"expected {wanted} from google-auth, got {token[:20]}...")
    return token


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def wait_until_idle(pid: int, limit_s: float = 60.0) -> float:
    """Wait for the server to finish starting up (it imports Beam in the background once it answers):
    until it uses under 5% of a core for a second. Returns the seconds waited (Linux; elsewhere 0)."""
    started = time.monotonic()
    last = _cpu_seconds(pid)
    while last is not None and time.monotonic() - started < limit_s:
        time.sleep(1.0)
        now = _cpu_seconds(pid)
        if now is None or now - last < 0.05:
            break
        last = now
    return time.monotonic() - started


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _pinned(cpu: int | None):
    """preexec_fn pinning a child (and every thread it starts) to one CPU; None: no pinning."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def run_load(
    args, port: int, scenario: str, ids_file: Path, server_pid: int, connections: int, token: str | None = None
) -> dict:
    command = [
        sys.executable,
        str(HERE / "loadgen.py"),
        "--port",
        str(port),
        "--scenario",
        scenario,
        "--project",
        PROJECT,
        "--location",
        LOCATION,
        "--ids-file",
        str(ids_file),
        "--connections",
        str(connections),
        "--duration",
        str(args.duration),
        "--warmup",
        str(args.warmup),
        "--seed",
        str(args.seed),
        "--server-pid",
        str(server_pid),
    ]
    env = dict(os.environ)
    env.pop(AUTH_ENV, None)
    if token is not None:
        command += ["--authorization-env", AUTH_ENV]
        env[AUTH_ENV] = f"Bearer {token}"
    load = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=_pinned(1 if args.pin else None)
    )
    try:
        out, _ = load.communicate(timeout=args.warmup + args.duration + 120)
    except subprocess.TimeoutExpired:
        load.kill()
        load.communicate()
        raise SystemExit(f"load generator for {scenario} did not finish in time") from None
    if load.returncode != 0:
        raise SystemExit(f"load generator for {scenario} failed (exit {load.returncode}):\n{out}")
    return json.loads(out.strip().splitlines()[-1])


# -- main -------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs to store")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before measuring")
    parser.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections")
    parser.add_argument("--scenarios", help="comma-separated: get, list (default: get,list; with --auth compare: get)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per scenario (targets use the median); with --auth compare: rounds, each one run off and one on",
    )
    parser.add_argument(
        "--auth",
        choices=["off", "on", "compare"],
        default="off",
        help="off: server with --no-auth (default); on: authentication, requests with an access token of the "
        "admin key; compare: both servers on the same data, alternating rounds, and a self-signed JWT round",
    )
    parser.add_argument("--jwt-rounds", type=int, default=1, help="with --auth compare: runs with a self-signed JWT")
    parser.add_argument(
        "--list-latency-connections",
        default="1,4",
        help="extra list runs at these (lower) connection counts, to show latency below saturation; '' for none",
    )
    parser.add_argument("--data-dir", type=Path, help="where to seed (default: a temporary directory, removed after)")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse a DB seeded earlier in --data-dir with the same --jobs/--seed"
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (documents, request mix)")
    parser.add_argument("--batch", type=int, default=2000, help="jobs per store write when seeding")
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the server to CPU 0 and the load generator to CPU 1 (default: the scheduler places them)",
    )
    args = parser.parse_args(argv)
    if args.scenarios is None:
        args.scenarios = "get" if args.auth == "compare" else "get,list"
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not scenarios or set(scenarios) - {"get", "list"}:
        parser.error("--scenarios: a comma-separated list of get, list")
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat must be within 1..20")
    if args.jobs < 1000 or args.jobs > 10_000_000:
        parser.error("--jobs must be within 1,000..10,000,000")
    if not 0 <= args.jwt_rounds <= 20:
        parser.error("--jwt-rounds must be within 0..20")
    extra_list_connections = [int(c) for c in args.list_latency_connections.split(",") if c.strip()]
    if args.auth == "compare":
        extra_list_connections = []  # the comparison is at --connections only

    temp = None
    if args.data_dir is None:
        if args.reuse:
            parser.error("--reuse needs --data-dir")
        temp = Path(tempfile.mkdtemp(prefix="beamport-bench-"))
        data_dir = temp / "data"
    else:
        data_dir = args.data_dir.resolve()
    ids_path = data_dir / IDS_FILE
    log_path = data_dir.parent / f"{data_dir.name}-server.log"
    private_dir = Path(tempfile.mkdtemp(prefix="beamport-bench-key-"))  # a copy of the admin key, if needed

    try:
        try:
            seed_s, db_bytes, reused = seeded(data_dir, args.jobs, args.seed, args.batch, args.reuse)
        except FileExistsError as exc:
            parser.error(str(exc))

        # The servers: mode -> (port, process). With --auth compare, both run on the same database (one
        # at a time under load; the other idles).
        wanted_servers = {"off": ["off"], "on": ["on"], "compare": ["on", "off"]}[args.auth]
        servers: dict[str, tuple[int, subprocess.Popen]] = {}
        runs = []
        try:
            for which in wanted_servers:  # the one with authentication first: it creates the admin key
                port = args.port if (args.port and not servers) else free_port()
                server = start_server(data_dir, port, log_path, [], 0 if args.pin else None, auth=which == "on")
                servers[which] = (port, server)
                print(
                    f"beamport serve (auth {which}) pid {server.pid} on 127.0.0.1:{port}; server log {log_path}",
                    flush=True,
                )
            for which, (_port, server) in servers.items():
                print(
                    f"server (auth {which}) idle (start-up done) after {wait_until_idle(server.pid):.1f} s more",
                    flush=True,
                )
            tokens: dict[str, str | None] = {"off": None}
            if "on" in servers:
                started = time.perf_counter()
                tokens["token"] = bearer_token(data_dir, servers["on"][0], private_dir)
                got_token = time.perf_counter() - started
                tokens["jwt"] = bearer_token(data_dir, servers["on"][0], private_dir, jwt=True)
                print(
                    f"access token from the admin key through google-auth in {got_token:.2f} s; self-signed JWT made",
                    flush=True,
                )
            main_mode = {"off": "off", "on": "token", "compare": "off"}[args.auth]
            plan = []
            for i in range(args.repeat):
                for s in scenarios:
                    if args.auth == "compare":  # alternate which goes first, so neither always follows the other
                        order = ("off", "token") if i % 2 == 0 else ("token", "off")
                        plan += [(s, args.connections, m) for m in order]
                    else:
                        plan.append((s, args.connections, main_mode))
            if args.auth == "compare":
                plan += [(s, args.connections, "jwt") for _ in range(args.jwt_rounds) for s in scenarios]
            if "list" in scenarios:
                plan += [("list", c, main_mode) for c in extra_list_connections if c != args.connections]
            for scenario, connections, mode in plan:
                port, server = servers["off" if mode == "off" else "on"]
                print(
                    f"running {scenario} ({MODES[mode]}) with {connections} connections: {args.warmup:g} s "
                    f"warm-up + {args.duration:g} s measured ...",
                    flush=True,
                )
                result = run_load(args, port, scenario, ids_path, server.pid, connections, tokens[mode])
                result["auth"] = mode
                runs.append(result)
                print(
                    f"  {result['requests_per_s']:>9,.0f} req/s  p50 {_ms(result['p50_ms'])} ms  "
                    f"p90 {_ms(result['p90_ms'])} ms  p99 {_ms(result['p99_ms'])} ms  max {_ms(result['max_ms'])} ms  "
                    f"errors {result['errors']}  CPU: server {_fmt_pct(result.get('server_cpu_pct'))} "
                    f"loadgen {_fmt_pct(result.get('loadgen_cpu_pct'))} "
                    f"machine {_fmt_pct(result.get('machine_cpu_pct'))}",
                    flush=True,
                )
        finally:
            for _, server in servers.values():
                stop_server(server)

        summary = report(args, runs, seed_s, db_bytes, reused)
        if args.json:
            args.json.write_text(json.dumps(summary, indent=2) + "\n")
        return 0 if all(r["errors"] == 0 for r in runs) else 1
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _ms(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _server_ms(r: dict) -> float | None:
    """Server CPU time per request, in ms."""
    if r.get("server_cpu_pct") is None or not r["requests_per_s"]:
        return None
    return 10 * r["server_cpu_pct"] / r["requests_per_s"]


def _cpu_per_request(r: dict) -> str:
    value = _server_ms(r)
    return "?" if value is None else f"{value:.2f}"


def _fmt_pct(value) -> str:
    return "?" if value is None else f"{value:.0f}%"


def report(args, runs: list[dict], seed_s: float, db_bytes: int, reused: bool) -> dict:
    def of_mode(scenario, mode):
        return [
            r for r in runs if r["scenario"] == scenario and r["connections"] == args.connections and r["auth"] == mode
        ]

    def median(scenario, key, mode):
        values = [r[key] for r in of_mode(scenario, mode)]
        if not values:
            return None
        return statistics.median(float("inf") if v is None else v for v in values)

    def clean(scenario, *modes):
        return all(r["errors"] == 0 for r in runs if r["scenario"] == scenario and r["auth"] in modes)

    checks = []
    # The API targets are judged on the runs with authentication when there are any (it is on by default).
    main_mode = "off" if args.auth == "off" else "token"
    get_rps, list_p99 = median("get", "requests_per_s", main_mode), median("list", "p99_ms", main_mode)
    of = f" (median of {args.repeat})" if args.repeat > 1 else ""
    auth_note = f", {MODES[main_mode]}" if args.auth != "off" else ""
    if get_rps is not None:
        checks.append(
            (
                f"jobs.get requests/s{auth_note}",
                f">= {TARGET_GET_RPS:,.0f}",
                f"{get_rps:,.0f}{of}",
                get_rps >= TARGET_GET_RPS and clean("get", main_mode),
            )
        )
    if list_p99 is not None:
        checks.append(
            (
                f"jobs.list p99{auth_note}",
                f"<= {TARGET_LIST_P99_MS:g} ms",
                f"{_ms(list_p99)} ms{of}",
                list_p99 <= TARGET_LIST_P99_MS and clean("list", main_mode),
            )
        )
    comparison = []
    if args.auth == "compare":
        for scenario in dict.fromkeys(r["scenario"] for r in runs):
            off_rps = median(scenario, "requests_per_s", "off")
            rows = []
            for mode in MODES:
                n = len(of_mode(scenario, mode))
                if n:
                    rps = median(scenario, "requests_per_s", mode)
                    cpu = [_server_ms(r) for r in of_mode(scenario, mode) if _server_ms(r) is not None]
                    rows.append(
                        (
                            mode,
                            n,
                            rps,
                            median(scenario, "p50_ms", mode),
                            median(scenario, "p99_ms", mode),
                            rps / off_rps if off_rps else None,
                            statistics.median(cpu) if cpu else None,
                        )
                    )
            # Each round's own ratio: its on run against its off run (they ran one after the other).
            pairs = [
                r
                for r in runs
                if r["scenario"] == scenario and r["connections"] == args.connections and r["auth"] in ("off", "token")
            ]
            per_round = []
            for a, b in zip(pairs[::2], pairs[1::2], strict=False):
                on, off = (a, b) if a["auth"] == "token" else (b, a)
                per_round.append(on["requests_per_s"] / off["requests_per_s"] if off["requests_per_s"] else None)
            comparison.append((scenario, rows, per_round))
            name = {"get": "jobs.get", "list": "jobs.list"}[scenario]
            for mode, n, _, _, _, ratio, _ in rows:
                if mode != "off" and ratio is not None:
                    runs_of = f"median of {n} / median of {len(of_mode(scenario, 'off'))}"
                    checks.append(
                        (
                            f"{name} req/s on/off, {'JWT' if mode == 'jwt' else 'access token'}",
                            f">= {TARGET_AUTH_RATIO:.0%}",
                            f"{ratio:.1%} ({runs_of})",
                            ratio >= TARGET_AUTH_RATIO and clean(scenario, "off", mode),
                        )
                    )

    width = 118
    print()
    print("=" * width)
    print(
        f"Beamport API benchmark  {datetime.now(UTC):%Y-%m-%d %H:%M UTC}  "
        f"{platform.node()}  {os.cpu_count()} CPUs  Python {platform.python_version()}"
    )
    print(
        f"{args.jobs:,} jobs stored (SQLite, WAL); seeding {'(earlier) ' if reused else ''}took {seed_s:.1f} s; "
        f"database {db_bytes / 2**20:.0f} MiB"
    )
    placement = "server pinned to CPU 0, load to CPU 1" if args.pin else "CPU placement left to the scheduler"
    print(
        f"load: separate process, HTTP/1.1 keep-alive over 127.0.0.1, closed loop; "
        f"{args.warmup:g} s warm-up, {args.duration:g} s measured per run; {placement}"
    )
    print("-" * width)
    print(
        f"{'scenario':<10}{'auth':<7}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'errors':>8}{'resp B':>8}{'server':>9}{'loadgen':>9}{'machine':>9}{'srv ms/req':>11}"
    )
    disturbed = False
    for r in runs:
        print(
            f"{r['scenario']:<10}{r['auth']:<7}{r['connections']:>6}{r['requests_per_s']:>10,.0f}"
            f"{_ms(r['p50_ms']):>9}{_ms(r['p90_ms']):>9}{_ms(r['p99_ms']):>9}{_ms(r['max_ms']):>9}{r['errors']:>8}"
            f"{r['mean_response_bytes']:>8}{_fmt_pct(r.get('server_cpu_pct')):>9}"
            f"{_fmt_pct(r.get('loadgen_cpu_pct')):>9}{_fmt_pct(r.get('machine_cpu_pct')):>9}"
            f"{_cpu_per_request(r):>11}"
        )
        if r["errors"]:
            print(
                f"  !! {r['scenario']} had errors (statuses {r['statuses']}, failures {r['failures']}): "
                "this run is not a valid figure"
            )
        parts = [r.get("machine_cpu_pct"), r.get("server_cpu_pct"), r.get("loadgen_cpu_pct")]
        if None not in parts and parts[0] - parts[1] - parts[2] > 25:
            disturbed = True
    print(
        "CPU columns: % of one core during the measured window (machine: all processes, "
        f"{100 * (os.cpu_count() or 1)}% = every core busy); srv ms/req: server CPU time per request"
    )
    if disturbed:
        print(
            "note: other processes used more than a quarter of a core during some runs; "
            "those figures are disturbed (either way: see benchmarks/README.md)"
        )
    if args.auth != "off":
        print(
            "auth: off = server with --no-auth; token = Authorization: Bearer ACCESS_TOKEN (from the admin key "
            "through google-auth); jwt = Authorization: Bearer SELF_SIGNED_JWT"
        )
    for scenario, rows, per_round in comparison:
        print("-" * width)
        print(
            f"{scenario}: authentication on vs off, {args.connections} connections, same server data, "
            "alternating rounds (medians)"
        )
        for mode, n, rps, p50, p99, ratio, cpu in rows:
            print(
                f"  {MODES[mode]:<26} {n:>2} runs {rps:>9,.0f} req/s  p50 {_ms(p50):>6} ms  p99 {_ms(p99):>6} ms  "
                f"server CPU {'?' if cpu is None else f'{cpu:.3f}'} ms/req   "
                f"{'' if ratio is None else f'req/s {ratio:.1%} of off'}"
            )
        if per_round:
            ratios = ", ".join("?" if x is None else f"{x:.1%}" for x in per_round)
            print(f"  each round's on/off req/s ratio: {ratios}")
        cpu = {row[0]: row[6] for row in rows}
        for mode in ("token", "jwt"):
            if cpu.get(mode) is not None and cpu.get("off"):
                print(
                    f"  server CPU per request, {MODES[mode]} / off: {cpu[mode] / cpu['off']:.1%} "
                    "(less disturbed by other load than req/s)"
                )
    print("-" * width)
    print(f"targets (at {args.connections} connections):")
    for what, target, got, ok in checks:
        print(f"  {what:<42} target {target:<10} got {got:<32} {'MET' if ok else 'NOT MET'}")
    print("=" * width)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "pinned": args.pin,
        "auth": args.auth,
        "comparison": [
            {
                "scenario": s,
                "modes": [
                    dict(
                        zip(
                            (
                                "auth",
                                "runs",
                                "requests_per_s",
                                "p50_ms",
                                "p99_ms",
                                "ratio_to_off",
                                "server_cpu_ms_per_request",
                            ),
                            row,
                            strict=False,
                        )
                    )
                    for row in rows
                ],
                "per_round_ratio": per_round,
            }
            for s, rows, per_round in comparison
        ],
        "seed_s": seed_s,
        "db_bytes": db_bytes,
        "runs": runs,
        "targets": [{"what": w, "target": t, "got": g, "met": ok} for w, t, g, ok in checks],
    }


if __name__ == "__main__":
    sys.exit(main())
