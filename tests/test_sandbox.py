"""User code runs in a sandbox (docs/security.md): a pipeline's DoFn, run by the server's own workers with
authentication on, sees an unprivileged uid with no capabilities, a read-only system and Beamport, none of
the server's keys, database or environment, writes only where the operator allows, and stays within the
operator's memory limit. A worker's executor holds a token good for its own job only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import Server, free_port
from test_auth import Admin, error_of
from test_running_jobs import PIPELINES, dataflow_flags, wait_state

import beamport
from beamport.sandbox import WARM_JARS

pytestmark = pytest.mark.slow
REGION = "us-central1"


def require_bwrap():
    from beamport.sandbox import Sandbox

    reason = Sandbox().unavailable
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"no sandbox under CI: {reason} (scripts/test installs bubblewrap)")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    require_bwrap()
    base = tmp_path_factory.mktemp("sandbox")
    env_secret = {"BEAMPORT_TEST_SECRET": "the server's own"}
    os.environ.update(env_secret)  # the server inherits it; user code must not
    try:
        srv = Server(
            base / "data", extra_args=("--allow-path", str(base), "--workers", "1", "--job-memory", "3G"), auth=True
        ).start()
    finally:
        os.environ.pop("BEAMPORT_TEST_SECRET")
    yield srv, base
    srv.stop()


@pytest.fixture
def another_jobs_jar():
    """A file among the copies of Java jobs' jars that warm JVMs run over (sandbox.WARM_JARS)."""
    WARM_JARS.mkdir(parents=True, exist_ok=True)
    copy = WARM_JARS / f"{os.urandom(32).hex()}.jar"
    copy.write_text("another job's code")
    yield copy
    copy.unlink()


def submit(srv: Server, base: Path, project: str, name: str, probes: dict, *extra: str) -> subprocess.CompletedProcess:
    flags = [f for f in dataflow_flags(srv, project, base, name) if f != "--no_auth"]
    env = {**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": str(srv.admin_key)}
    return subprocess.run(
        [
            sys.executable,
            str(PIPELINES / "sandbox_probe.py"),
            str(base / project / name),
            json.dumps(probes),
            *extra,
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_a_dofn_sees_only_what_its_job_may(sandboxed, project, another_jobs_jar):
    srv, base = sandboxed
    data = srv.data_dir
    source = Path(beamport.__file__).parent / "server.py"
    probes = {
        "read": [
            str(srv.admin_key),
            str(data / "beamport.db"),
            str(data / "auth" / "local-workers-key.json"),
            str(another_jobs_jar),  # a copy of an earlier Java job's jar, kept for warm JVMs (engine/java_warm.py)
            str(base / "visible.txt"),
            str(source),
        ],
        "write": [str(base / "written.txt"), str(source.parent / "planted.py"), "/usr/planted", "/etc/planted"],
    }
    (base / "visible.txt").write_text("an input")
    done = submit(srv, base, project, "probe", probes)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads((base / project / "probe").read_text())
    assert seen["uid"] == 65534 and int(seen["capabilities"], 16) == 0
    for secret in probes["read"][:4]:
        assert not seen[secret].startswith("read"), (secret, seen[secret])
    assert seen[str(base / "visible.txt")] == "read 8 bytes"
    assert seen[str(source)].startswith("read")  # Beamport is readable, not writable
    assert seen[str(base / "written.txt")] == "written" and (base / "written.txt").read_text() == "written by user code"
    for planted in probes["write"][1:]:
        assert seen[planted] == "OSError" and not Path(planted).exists(), (planted, seen[planted])
    # Nothing of the server's environment: no credentials, no database URL, no secrets.
    assert "BEAMPORT_TEST_SECRET" not in seen["environment"]
    assert not {"GOOGLE_APPLICATION_CREDENTIALS", "BEAMPORT_DATABASE_URL"} & set(seen["environment"])
    # Its own PID namespace: only the run's processes.
    assert seen["processes"] < 20


def test_a_job_past_its_memory_limit_fails_and_says_so(sandboxed, project):
    srv, base = sandboxed
    done = submit(srv, base, project, "hog", {"read": [], "write": []}, "--allocate-gib", "6")
    assert done.returncode != 0
    assert "MemoryError" in done.stderr + done.stdout
    assert not (base / project / "hog").exists()


def test_an_executors_token_is_good_for_its_own_job_only(sandboxed, project):
    srv, base = sandboxed
    admin = Admin(srv)
    mine, theirs = admin.job(project, "mine"), admin.job(project + "-x", "theirs")
    worker_token = admin.http.headers["Authorization"].split()[1]  # the admin is a worker too (roles/dataflow.admin)
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": worker_token,
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "resource": f"projects/{project}/locations/{REGION}/jobs/{mine['id']}",
    }
    answer = httpx.post(srv.url + "/token", data=form)
    assert answer.status_code == 200, answer.text
    job_token = {"Authorization": f"Bearer {answer.json()['access_token']}"}
    own = f"/v1b3/projects/{project}/locations/{REGION}/jobs/{mine['id']}"
    assert httpx.get(srv.url + own, headers=job_token).status_code == 200
    for method, path in [
        ("GET", f"/v1b3/projects/{project}/locations/{REGION}/jobs"),
        ("GET", f"/v1b3/projects/{project}-x/locations/{REGION}/jobs/{theirs['id']}"),
        ("POST", "/v1b3/projects/-/locations/-/jobs/-/workItems:lease"),
        ("POST", f"/v1b3/projects/{project}/locations/{REGION}/jobs"),
        ("PUT", own),
    ]:
        error_of(httpx.request(method, srv.url + path, headers=job_token, json={}), 403, "PERMISSION_DENIED")
    # Nor can it be exchanged again, and once revoked it is gone.
    again = httpx.post(srv.url + "/token", data={**form, "subject_token": answer.json()["access_token"]})
    assert again.status_code == 400
    assert httpx.post(srv.url + "/revoke", data={"token": answer.json()["access_token"]}).status_code == 200
    error_of(httpx.get(srv.url + own, headers=job_token), 401, "UNAUTHENTICATED")
    # A job's workers ran with such tokens: the real wordcount jobs above reported through them.
    wait_state(_NoAuthApi(admin, project), mine["id"], {"JOB_STATE_FAILED", "JOB_STATE_DONE"}, timeout=120)


class _NoAuthApi:
    """wait_state's view of a job, through the admin's client."""

    def __init__(self, admin: Admin, project: str):
        self.admin, self.project = admin, project

    def get(self, job_id: str):
        return self.admin.http.get(f"/v1b3/projects/{self.project}/locations/{REGION}/jobs/{job_id}")


def test_sandbox_required_refuses_to_start_without_bubblewrap(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no bwrap on it
    for command in (
        ["serve", "--port", str(free_port()), "--data-dir", str(tmp_path / "data")],
        ["worker", "--endpoint", "http://127.0.0.1:1", "--data-dir", str(tmp_path / "w")],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "beamport", *command, "--sandbox", "required"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode != 0
        assert "bubblewrap is not installed" in done.stderr, done.stderr[-2000:]


def test_the_sdk_worker_pool_refuses_a_worker_id_that_names_another_directory(tmp_path):
    """Any process on the host reaches an SDK worker pool (the Flink cluster's), which starts a worker in a
    directory named after the worker's id, made outside the sandbox and bound writable inside it: an id with "/"
    in it would name any directory of the host (here one outside the pool's), and hand it to the worker's code.
    The pool refuses such an id, and so does the worker's boot program."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2, beam_fn_api_pb2_grpc, endpoints_pb2

    from beamport.engine import portable

    sdk = tmp_path / "pool" / "sdk"
    sdk.mkdir(parents=True)
    boot = sdk / "boot"
    boot.write_text(f'#!/bin/sh\nexec {sys.executable} -m beamport.engine.sdk_boot --semi_persist_dir={sdk} "$@"\n')
    boot.chmod(0o755)
    elsewhere = tmp_path / "elsewhere"
    # From the worker's directory (sdk/worker-x) up to / and down to `elsewhere`.
    worker_id = "x/" + "../" * len(sdk.parts) + str(elsewhere).lstrip("/")
    port = free_port()
    log = open(tmp_path / "pool.log", "wb")
    command = [sys.executable, "-m", "beamport.engine.worker_pool", f"--service_port={port}"]
    pool = subprocess.Popen([*command, f"--container_executable={boot}", "--spares=1", f"--spare_root={sdk}"],
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        with grpc.insecure_channel(f"localhost:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            nowhere = endpoints_pb2.ApiServiceDescriptor(url="localhost:1")
            for sdk_name in (portable.GO_SDK, "python"):  # a worker started for the request, and a spare
                answer = beam_fn_api_pb2_grpc.BeamFnExternalWorkerPoolStub(channel).StartWorker(
                    beam_fn_api_pb2.StartWorkerRequest(
                        worker_id=worker_id,
                        control_endpoint=nowhere,
                        logging_endpoint=nowhere,
                        artifact_endpoint=nowhere,
                        provision_endpoint=nowhere,
                        params={portable.SDK_PARAM: sdk_name},
                    ),
                    timeout=30,
                )
                assert "worker id" in answer.error, answer
        time.sleep(3)  # (a worker started would have made its directory by now)
        assert not elsewhere.exists(), "a worker's directory outside the pool's"
        # The boot program on its own (as Beam's own pool would start it) refuses the id too.
        done = subprocess.run([str(boot), f"--id={worker_id}", "--provision_endpoint=localhost:1"],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode != 0 and "worker id" in done.stderr, done.stderr[-2000:]
        assert not elsewhere.exists()
    finally:
        pool.kill()
        pool.wait()
