"""Test fixtures: real `beamport serve` processes on free ports, and the real client libraries."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("BEAMPORT_TEST_POSTGRES_URL")
CREDENTIALS = "GOOGLE_APPLICATION_CREDENTIALS"


def required_path(variable: str, what: str) -> Path:
    """The path a variable names, which scripts/test sets up (a tool, a build): the test is skipped without it,
    and fails under CI, where nothing may be skipped."""
    value = os.environ.get(variable)
    if not value or not Path(value).exists():
        message = f"{variable} is not set: run the suite with scripts/test, which {what}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return Path(value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `beamport serve` subprocess; start() again after stop() reuses the same state."""

    running: ClassVar[set[Server]] = set()  # whose logs' ends a failed test's report shows

    def __init__(
        self,
        data_dir: Path,
        database_url: str | None = None,
        extra_args: tuple[str, ...] = (),
        auth: bool = False,
        python_args: tuple[str, ...] = ("-m", "beamport"),
    ):
        """`auth`: authentication on, as `beamport serve` runs by default (test_auth.py). The other tests drive
        the API itself and run their servers with --no-auth (on loopback, the only bind it is allowed on).
        `python_args`: what the interpreter runs, given `serve` and the server's arguments after them."""
        self.data_dir = data_dir
        self.python_args = python_args
        self.database_url = database_url
        self.extra_args = extra_args
        self.auth = auth
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        data_dir.parent.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_key(self) -> Path:
        """The key `beamport serve` wrote for its admin account on its first start (auth on)."""
        return self.data_dir / "admin-key.json"

    def start(self) -> Server:
        args = [sys.executable, *self.python_args, "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        args += list(self.extra_args)
        if not self.auth:
            args.append("--no-auth")
        log = open(self.log_path, "ab")
        # Streaming engines only where a test asks for one (its extra args): Prism may be on this machine.
        env = {k: v for k, v in os.environ.items() if not k.startswith("BEAMPORT_FLINK_") and k != CREDENTIALS}
        env.setdefault("BEAMPORT_PRISM", "none")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir.parent, env=env)
        deadline = time.monotonic() + 60
        # One client for every try: each httpx.get makes a client, and its TLS context costs 35-50 ms of CPU here;
        # tried every 50 ms through a server's start, that was seconds of CPU per server the suite starts.
        with httpx.Client(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"beamport serve exited early:\n{self.log_path.read_text()}")
                try:
                    client.get(self.url + "/v1b3/projects/ready-check/locations/us-central1/jobs")
                    self.started = time.monotonic()
                    Server.running.add(self)
                    return self
                except httpx.TransportError:
                    time.sleep(0.05)
        raise RuntimeError(f"beamport serve did not answer in 60 s:\n{self.log_path.read_text()}")

    def job_ids(self) -> set[str]:
        """The ids of every job in this server's SQLite store, running or stopped (for cleaning up after it)."""
        assert self.database_url is None, "a server on SQLite"
        with contextlib.closing(sqlite3.connect(self.data_dir / "beamport.db")) as db:
            return {row[0] for row in db.execute("SELECT id FROM jobs")}

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        Server.running.discard(self)
        self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.process = None
        return code


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report ends with the last lines of the servers' logs (its engines' and workers' words):
    what a CI run's failure needs to be understood without running it again."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        for server in list(Server.running):
            lines = server.log_path.read_text(errors="replace").splitlines()[-40:]
            report.sections.append((f"the end of {server.log_path.name}", "\n".join(line[:300] for line in lines)))


def beamport_command(*args: str, check: bool = True, credentials: Path | None = None) -> subprocess.CompletedProcess:
    """Run `beamport ARGS` (the CLI, as a user does), with GOOGLE_APPLICATION_CREDENTIALS set to `credentials`
    (none by default); with check, it must exit 0."""
    env = {k: v for k, v in os.environ.items() if k != CREDENTIALS}
    if credentials is not None:
        env[CREDENTIALS] = str(credentials)
    done = subprocess.run(
        [sys.executable, "-m", "beamport", *args], capture_output=True, text=True, timeout=300, env=env
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def new_postgres_database() -> str:
    """A fresh, empty database on the test PostgreSQL server."""
    import psycopg

    if not POSTGRES_URL:
        message = "BEAMPORT_TEST_POSTGRES_URL is not set: run the suite with .ci/run, which starts PostgreSQL"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    name = f"beamport_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = POSTGRES_URL.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_under_the_runs_directory(tmp_path_factory) -> None:
    """The test processes' own temporary files go under pytest's directory of the run, which it deletes a few runs
    later: Beam's Pipeline makes a directory that only its run() removes, and Beam's job servers one each, so the
    tests that build pipelines without running them left a few dozen in /tmp per run, for good."""
    tempfile.tempdir = str(tmp_path_factory.mktemp("tmp"))


@pytest.fixture(autouse=True)
def _kept_with_its_group(request) -> None:
    """scripts/test runs `--dist loadgroup`: each xdist_group's tests in one process (the Flink tests share one
    cluster, and their fixtures cancel what is left on it). pytest-xdist groups a test by renaming it "...@group";
    pytest 9.2 ignores that rename and the groups then run side by side, each cancelling the other's jobs. Fail
    such a test at once rather than let it flake."""
    item = request.node
    if getattr(request.config.option, "loadgroup", False) and item.get_closest_marker("xdist_group"):
        if "@" not in item.nodeid:
            pytest.fail("--dist loadgroup did not keep this test with its xdist_group (see pytest's pin)")


# The API tests' servers run no workers: their jobs stay as the API leaves them (nothing leases their work).
API_ONLY = ("--workers", "0", "--allow-path", "/tmp", "--max-active-jobs", "0", "--max-jobs-per-minute", "0")


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(request, tmp_path_factory) -> Server:
    """A server per store backend, shared by the tests that only need isolation by project."""
    url = new_postgres_database() if request.param == "postgres" else None
    data = tmp_path_factory.mktemp(f"shared-{request.param}") / "data"
    srv = Server(data, database_url=url, extra_args=API_ONLY).start()
    yield srv
    srv.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def backend_server(request, tmp_path):
    """A server of its own, on each store backend, for tests that restart or load it."""
    url = new_postgres_database() if request.param == "postgres" else None
    srv = Server(tmp_path / "data", database_url=url, extra_args=API_ONLY).start()
    yield srv
    if srv.process is not None:
        srv.stop()


@pytest.fixture
def project() -> str:
    """A project id of the test's own, so tests sharing a server never see each other's jobs."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def region() -> str:
    return "us-central1"


def discovery_client(url: str):
    from google.auth.credentials import AnonymousCredentials
    from googleapiclient.discovery import build

    return build(
        "dataflow",
        "v1b3",
        client_options={"api_endpoint": url},
        credentials=AnonymousCredentials(),
        static_discovery=True,
        cache_discovery=False,
    )


def gapic_clients(url: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import dataflow_v1beta3 as dataflow

    kwargs = dict(transport="rest", client_options={"api_endpoint": url}, credentials=AnonymousCredentials())
    return (
        dataflow.JobsV1Beta3Client(**kwargs),
        dataflow.MessagesV1Beta3Client(**kwargs),
        dataflow.MetricsV1Beta3Client(**kwargs),
    )


class Api:
    """Raw HTTP access, for checks of the wire format itself."""

    def __init__(self, url: str, project: str, region: str = "us-central1"):
        self.client = httpx.Client(base_url=url, timeout=30)
        self.project = project
        self.region = region

    @property
    def jobs_path(self) -> str:
        return f"/v1b3/projects/{self.project}/locations/{self.region}/jobs"

    def create(self, name: str, **fields) -> dict:
        response = self.client.post(self.jobs_path, json={"name": name, **fields})
        assert response.status_code == 200, response.text
        return response.json()

    def get(self, job_id: str, **params) -> httpx.Response:
        return self.client.get(f"{self.jobs_path}/{job_id}", params=params)

    def update(self, job_id: str, body: dict, **params) -> httpx.Response:
        return self.client.put(f"{self.jobs_path}/{job_id}", json=body, params=params)

    def list(self, **params) -> httpx.Response:
        return self.client.get(self.jobs_path, params=params)

    def all_jobs(self, **params) -> list[dict]:
        jobs, token = [], None
        while True:
            page = self.list(**params, **({"pageToken": token} if token else {})).json()
            jobs += page.get("jobs", [])
            token = page.get("nextPageToken")
            if not token:
                return jobs

    def messages(self, job_id: str, **params) -> httpx.Response:
        return self.client.get(f"{self.jobs_path}/{job_id}/messages", params=params)


@pytest.fixture
def api(server, project) -> Api:
    return Api(server.url, project)
