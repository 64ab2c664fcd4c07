"""Trust (docs/security.md): every call authenticated with Google's own credentials and authorised by project
roles, no way in from a web page, an audit log. Real servers with authentication on (as `beamport serve`
runs by default), real clients: Beam's DataflowRunner, google-api-python-client (access tokens from the
key's token_uri), google-cloud-dataflow-client (self-signed JWTs), the CLI, `beamport worker`."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import Server, beamport_command, free_port, new_postgres_database
from test_running_jobs import dataflow_flags, read_output

pytestmark = pytest.mark.slow
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
REGION = "us-central1"
DEVELOPER, VIEWER, WORKER = "roles/dataflow.developer", "roles/dataflow.viewer", "roles/dataflow.worker"
TEXT = "to be or not to be that is the question\n"


def credentials(key: Path, self_signed: bool = False):
    """google-auth's credentials from a key file, as Google's client libraries make them."""
    from google.oauth2 import service_account

    creds = service_account.Credentials.from_service_account_file(str(key), scopes=SCOPES)
    return creds.with_always_use_jwt_access(True) if self_signed else creds


def bearer(key: Path, self_signed: bool = False) -> dict:
    """The Authorization header a client sends: an access token from the key's token_uri, or a self-signed JWT."""
    import google.auth.transport.requests

    creds = credentials(key, self_signed)
    creds.refresh(google.auth.transport.requests.Request())
    return {"Authorization": f"Bearer {creds.token}"}


class Admin:
    """The server's admin, over HTTP with the key `beamport serve` wrote."""

    def __init__(self, srv: Server):
        self.srv = srv
        self.http = httpx.Client(base_url=srv.url, headers=bearer(srv.admin_key), timeout=60)

    def ok(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def account(self, project: str, name: str, role: str | None, where: Path) -> tuple[str, Path]:
        """A service account of the project with a key file, bound to the role on the project."""
        email = self.ok("POST", f"/v1/projects/{project}/serviceAccounts", json={"accountId": name})["email"]
        key = self.ok("POST", f"/v1/projects/-/serviceAccounts/{email}/keys", json={})
        path = where / f"{name}-{project}.json"
        path.write_bytes(base64.b64decode(key["privateKeyData"]))
        if role:
            self.bind(project, f"serviceAccount:{email}", role)
        return email, path

    def bind(self, project: str, member: str, role: str) -> None:
        policy = self.ok("POST", f"/v1/projects/{project}:getIamPolicy", json={})
        policy.setdefault("bindings", []).append({"role": role, "members": [member]})
        self.ok("POST", f"/v1/projects/{project}:setIamPolicy", json={"policy": policy})

    def job(self, project: str, name: str) -> dict:
        return self.ok("POST", f"/v1b3/projects/{project}/locations/{REGION}/jobs", json={"name": name})

    def jobs(self, project: str) -> list[dict]:
        return self.ok("GET", f"/v1b3/projects/{project}/locations/{REGION}/jobs").get("jobs", [])

    def audit(self, project: str) -> list[dict]:
        return self.ok("GET", f"/beamport/v1/projects/{project}/auditLogs", params={"pageSize": 1000}).get(
            "entries", []
        )


def error_of(response: httpx.Response, code: int, status: str) -> str:
    assert response.status_code == code, response.text
    assert response.json()["error"]["status"] == status, response.text
    return response.json()["error"]["message"]


def untouched(job: dict) -> None:
    """Nobody asked to cancel the job (the local worker fails a job created by hand, having no pipeline to run)."""
    assert job.get("requestedState") in (None, "JOB_STATE_UNKNOWN") and job["currentState"] != "JOB_STATE_CANCELLED", (
        job
    )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def secured(request, tmp_path_factory):
    """A server with authentication on and one local worker, as `beamport serve` runs by default."""
    url = new_postgres_database() if request.param == "postgres" else None
    base = tmp_path_factory.mktemp(f"auth-{request.param}")
    srv = Server(
        base / "data", database_url=url, extra_args=("--allow-path", str(base), "--workers", "1"), auth=True
    ).start()
    yield srv, base, Admin(srv)
    srv.stop()


@pytest.fixture
def project_pair(project):
    return project, project + "-b"


# -- the server's own credentials -------------------------------------------------------------------


def test_first_start_writes_an_admin_key_only_its_owner_reads_and_prints_how_to_use_it(secured):
    srv, _, admin = secured
    for key in (srv.admin_key, srv.data_dir / "auth" / "local-workers-key.json"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        data = json.loads(key.read_text())
        assert data["type"] == "service_account" and data["token_uri"] == f"{srv.url}/token"
        assert {"private_key", "private_key_id", "client_email", "project_id"} <= data.keys()
    assert f"export GOOGLE_APPLICATION_CREDENTIALS={srv.admin_key}" in srv.log_path.read_text()
    # The server keeps no private key: only public ones.
    email = json.loads(srv.admin_key.read_text())["client_email"]
    assert "privateKeyData" not in json.dumps(admin.ok("GET", f"/v1/projects/-/serviceAccounts/{email}/keys"))
    # Jobs, templates and tables cannot name the keys (they lie in the data dir, an allowed root).
    launch = admin.http.post(
        f"/v1b3/projects/p-keys/locations/{REGION}/templates:launch",
        params={"gcsPath": "builtin://Word_Count"},
        json={
            "jobName": "steal",
            "parameters": {"inputFile": str(srv.admin_key), "output": str(srv.data_dir / "stolen")},
        },
    )
    assert "Beamport's own files" in error_of(launch, 403, "PERMISSION_DENIED")
    table = admin.http.post(
        "/beamport/v1/projects/p-keys/sqlTables",
        json={"name": "k", "path": str(srv.data_dir / "admin-*.json"), "format": "jsonl"},
    )
    error_of(table, 403, "PERMISSION_DENIED")


def test_no_auth_is_refused_unless_the_bind_is_loopback(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "beamport",
            "serve",
            "--no-auth",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "--no-auth is refused" in done.stderr
    assert not (tmp_path / "data").exists()


# -- real clients with a developer's key ------------------------------------------------------------


def test_beam_dataflow_runner_wordcount_with_a_developer_key_and_no_no_auth(secured, project):
    srv, base, admin = secured
    _, key = admin.account(project, "wc-dev", DEVELOPER, base)
    (base / f"{project}.txt").write_text(TEXT * 3)
    out = base / project / "out"
    flags = [f for f in dataflow_flags(srv, project, base, "wordcount") if f != "--no_auth"]
    env = {**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": str(key)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "apache_beam.examples.wordcount",
            *flags,
            f"--input={base / f'{project}.txt'}",
            f"--output={out}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "JOB_STATE_DONE" in done.stderr
    assert sorted(read_output(out)) == sorted(
        ["to: 6", "be: 6", "or: 3", "not: 3", "that: 3", "is: 3", "the: 3", "question: 3"]
    )
    # The developer's create and the local worker's run are both in the audit log, by who did them.
    creates = [e for e in admin.audit(project) if e["protoPayload"]["methodName"] == "dataflow.jobs.create"]
    assert creates and creates[0]["protoPayload"]["authenticationInfo"]["principalEmail"].startswith("wc-dev@")


def test_google_clients_and_the_cli_with_a_key(secured, project):
    srv, base, admin = secured
    email, key = admin.account(project, "clients", DEVELOPER, base)
    from google.cloud import dataflow_v1beta3 as dataflow
    from googleapiclient.discovery import build

    # google-api-python-client: an access token from the key's token_uri.
    discovery = build(
        "dataflow",
        "v1b3",
        credentials=credentials(key),
        static_discovery=True,
        cache_discovery=False,
        client_options={"api_endpoint": srv.url},
    )
    jobs = discovery.projects().locations().jobs()
    created = jobs.create(projectId=project, location=REGION, body={"name": "by-discovery"}).execute()
    assert jobs.get(projectId=project, location=REGION, jobId=created["id"]).execute()["name"] == "by-discovery"
    # google-cloud-dataflow-client over REST: a self-signed JWT, no token call.
    gapic = dataflow.JobsV1Beta3Client(
        transport="rest", credentials=credentials(key), client_options={"api_endpoint": srv.url}
    )
    gapic.create_job(request={"project_id": project, "location": REGION, "job": {"name": "by-gapic"}})
    names = {j.name for j in gapic.list_jobs(request={"project_id": project, "location": REGION})}
    assert {"by-discovery", "by-gapic"} <= names
    # The CLI, with GOOGLE_APPLICATION_CREDENTIALS.
    listed = beamport_command(
        "jobs", "list", "--project", project, "--endpoint", srv.url, "--format", "json", credentials=key
    )
    assert {"by-discovery", "by-gapic"} <= {j["name"] for j in json.loads(listed.stdout)}
    refused = beamport_command("jobs", "list", "--project", project, "--endpoint", srv.url, check=False)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr + refused.stdout
    assert {e["protoPayload"]["authenticationInfo"].get("principalEmail") for e in admin.audit(project)} >= {email}


def test_a_yaml_flex_template_launched_by_a_developer_runs_as_the_developer(secured, project):
    srv, base, admin = secured
    email, key = admin.account(project, "flexer", DEVELOPER, base)
    (base / "greet.txt").write_text("world\n")
    spec = {
        "sdkInfo": {"language": "YAML"},
        "metadata": {
            "name": "greet",
            "yamlDefinition": (
                "pipeline:\n  type: chain\n  transforms:\n"
                "    - {type: ReadFromText, config: {path: '{{ input }}'}}\n"
                "    - {type: MapToFields, config: {language: python, fields: {line: \"'hi ' + line\"}}}\n"
                "    - {type: WriteToText, config: {path: '{{ output }}'}}\n"
            ),
        },
    }
    http = httpx.Client(base_url=srv.url, headers=bearer(key), timeout=300)
    launched = http.post(
        f"/v1b3/projects/{project}/locations/{REGION}/flexTemplates:launch",
        json={
            "launchParameter": {
                "jobName": "greet",
                "containerSpec": spec,
                "parameters": {"input": str(base / "greet.txt"), "output": str(base / project / "greet")},
            }
        },
    )
    assert launched.status_code == 200, launched.text
    job_id = launched.json()["job"]["id"]
    deadline = time.monotonic() + 180
    while (
        state := admin.ok("GET", f"/v1b3/projects/{project}/locations/{REGION}/jobs/{job_id}")["currentState"]
    ) not in ("JOB_STATE_DONE", "JOB_STATE_FAILED") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state == "JOB_STATE_DONE"
    assert read_output(base / project / "greet") == ["hi world"]
    creates = [e for e in admin.audit(project) if e["protoPayload"]["methodName"] == "dataflow.jobs.create"]
    assert {e["protoPayload"]["authenticationInfo"]["principalEmail"] for e in creates} == {email}
    # The launcher acted with a key of the developer's own that is gone once it exited.
    deadline = time.monotonic() + 60
    while len(admin.ok("GET", f"/v1/projects/-/serviceAccounts/{email}/keys")["keys"]) > 1:
        assert time.monotonic() < deadline, "the launcher's temporary key was not deleted"
        time.sleep(0.2)


# -- refusals ------------------------------------------------------------------------------------------


def test_without_credentials_every_route_group_answers_401_and_changes_nothing(secured, project):
    srv, base, admin = secured
    job = admin.job(project, "kept")
    j = f"/v1b3/projects/{project}/locations/{REGION}/jobs/{job['id']}"
    calls = [
        ("GET", f"/v1b3/projects/{project}/locations/{REGION}/jobs"),
        ("GET", f"/v1b3/projects/{project}/jobs"),
        ("GET", f"/v1b3/projects/{project}/jobs:aggregated"),
        ("GET", j),
        ("GET", j + "?view=JOB_VIEW_ALL"),
        ("POST", f"/v1b3/projects/{project}/locations/{REGION}/jobs"),
        ("PUT", j),
        ("GET", j + "/messages"),
        ("GET", j + "/metrics"),
        ("GET", j + "/executionDetails"),
        ("POST", j + ":snapshot"),
        ("POST", j + "/debug/getWorkerStacktraces"),
        ("POST", j + "/workItems:reportStatus"),
        ("POST", "/v1b3/projects/-/locations/-/jobs/-/workItems:lease"),
        ("POST", f"/v1b3/projects/{project}/locations/{REGION}/WorkerMessages"),
        ("GET", f"/v1b3/projects/{project}/locations/{REGION}/snapshots"),
        ("GET", f"/v1b3/projects/{project}/locations/{REGION}/templates:get?gcsPath=builtin://Word_Count"),
        ("POST", f"/v1b3/projects/{project}/locations/{REGION}/templates:launch?gcsPath=builtin://Word_Count"),
        ("POST", f"/v1b3/projects/{project}/locations/{REGION}/flexTemplates:launch"),
        ("GET", f"/v1b3/projects/{project}/locations/{REGION}/sql:validate?query=SELECT+1"),
        ("GET", f"/beamport/v1/projects/{project}/sqlTables"),
        ("POST", f"/beamport/v1/projects/{project}/sqlTables"),
        ("POST", f"/beamport/v1/projects/{project}/locations/{REGION}/sql:query"),
        ("GET", f"/beamport/v1/projects/{project}/locations/{REGION}/jobs/{job['id']}/pipeline"),
        ("GET", "/beamport/v1/workers"),
        ("GET", "/beamport/v1/workers/anyone"),
        ("GET", "/beamport/v1/projects"),
        ("GET", f"/v1/projects/{project}/serviceAccounts"),
        ("POST", f"/v1/projects/{project}/serviceAccounts"),
        ("POST", f"/v1/projects/{project}:setIamPolicy"),
        ("GET", f"/beamport/v1/projects/{project}/auditLogs"),
    ]
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic YWRtaW46YWRtaW4="}):
        for method, path in calls:
            body = {} if method in ("GET", "DELETE") else {"json": {"name": "intruder"}}
            response = httpx.request(method, srv.url + path, headers=headers, timeout=30, **body)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["status"] == "UNAUTHENTICATED"
    assert [j["name"] for j in admin.jobs(project)] == ["kept"]
    untouched(admin.ok("GET", j))
    refused = [e for e in admin.audit(project) if e["protoPayload"]["status"].get("code") == 16]
    assert any(e["protoPayload"]["methodName"] == "dataflow.jobs.create" for e in refused)


def test_a_viewer_reads_but_cannot_cancel(secured, project):
    srv, base, admin = secured
    _, key = admin.account(project, "looker", VIEWER, base)
    job = admin.job(project, "watched")
    viewer = httpx.Client(base_url=srv.url, headers=bearer(key), timeout=30)
    path = f"/v1b3/projects/{project}/locations/{REGION}/jobs/{job['id']}"
    assert viewer.get(path).status_code == 200
    message = error_of(viewer.put(path, json={"requestedState": "JOB_STATE_CANCELLED"}), 403, "PERMISSION_DENIED")
    assert "dataflow.jobs.update" in message
    assert "dataflow.jobs.create" in error_of(
        viewer.post(f"/v1b3/projects/{project}/locations/{REGION}/jobs", json={"name": "nope"}),
        403,
        "PERMISSION_DENIED",
    )
    untouched(admin.ok("GET", path))
    assert [j["name"] for j in admin.jobs(project)] == ["watched"]
    # A viewer is no administrator: no keys for others, no policy changes.
    error_of(viewer.post(f"/v1/projects/{project}:setIamPolicy", json={"policy": {}}), 403, "PERMISSION_DENIED")


def test_a_developer_of_one_project_is_denied_another(secured, project_pair):
    srv, base, admin = secured
    a, b = project_pair
    _, key = admin.account(a, "dev-of-a", DEVELOPER, base)
    b_job = admin.job(b, "theirs")
    dev = httpx.Client(base_url=srv.url, headers=bearer(key, self_signed=True), timeout=30)
    assert dev.post(f"/v1b3/projects/{a}/locations/{REGION}/jobs", json={"name": "mine"}).status_code == 200
    denied = {
        "dataflow.jobs.list": dev.get(f"/v1b3/projects/{b}/locations/{REGION}/jobs"),
        "dataflow.jobs.get": dev.get(f"/v1b3/projects/{b}/locations/{REGION}/jobs/{b_job['id']}"),
        "dataflow.jobs.create": dev.post(f"/v1b3/projects/{b}/locations/{REGION}/jobs", json={"name": "x"}),
        "dataflow.jobs.update": dev.put(
            f"/v1b3/projects/{b}/locations/{REGION}/jobs/{b_job['id']}", json={"requestedState": "JOB_STATE_CANCELLED"}
        ),
        "dataflow.templates.get": dev.get(
            f"/v1b3/projects/{b}/locations/{REGION}/templates:get", params={"gcsPath": "builtin://Word_Count"}
        ),
        "dataflow.snapshots.list": dev.get(f"/v1b3/projects/{b}/locations/{REGION}/snapshots"),
        "dataflow.sqlTables.create": dev.post(
            f"/beamport/v1/projects/{b}/sqlTables", json={"name": "t", "path": str(base / "x.csv"), "format": "csv"}
        ),
        "dataflow.sqlTables.list": dev.get(f"/beamport/v1/projects/{b}/sqlTables"),
        "dataflow.jobs.getPipeline": dev.get(
            f"/beamport/v1/projects/{b}/locations/{REGION}/jobs/{b_job['id']}/pipeline"
        ),
        "logging.logEntries.list": dev.get(f"/beamport/v1/projects/{a}/auditLogs"),
    }
    for permission, response in denied.items():
        assert permission in error_of(response, 403, "PERMISSION_DENIED"), permission
    assert [j["name"] for j in admin.jobs(b)] == ["theirs"]
    untouched(admin.ok("GET", f"/v1b3/projects/{b}/locations/{REGION}/jobs/{b_job['id']}"))
    assert dev.get(f"/beamport/v1/projects/{a}/sqlTables").status_code == 200
    assert (
        dev.get(
            f"/v1b3/projects/{a}/locations/{REGION}/templates:get", params={"gcsPath": "builtin://Word_Count"}
        ).status_code
        == 200
    )
    # Its view of the worker registry holds its own project's workers only.
    assert all(
        w["projectId"] == a for w in dev.get("/beamport/v1/workers", params={"all": "true"}).json().get("workers", [])
    )
    # The console's projects: only those it may list jobs in (b has jobs too, newer ones).
    admin.job(b, "newer")
    assert [p["projectId"] for p in dev.get("/beamport/v1/projects").json()["projects"]] == [a]
    everyone = admin.ok("GET", "/beamport/v1/projects")["projects"]
    assert [p["projectId"] for p in everyone][:2] == [b, a]


def test_a_deleted_key_stops_working_at_once(secured, project):
    srv, base, admin = secured
    email, key = admin.account(project, "short-lived", VIEWER, base)
    path = f"/v1b3/projects/{project}/locations/{REGION}/jobs"
    tokens = [bearer(key), bearer(key, self_signed=True)]
    for headers in tokens:
        assert httpx.get(srv.url + path, headers=headers).status_code == 200
    key_id = json.loads(key.read_text())["private_key_id"]
    admin.ok("DELETE", f"/v1/projects/-/serviceAccounts/{email}/keys/{key_id}")
    for headers in tokens:
        error_of(httpx.get(srv.url + path, headers=headers), 401, "UNAUTHENTICATED")
    # Nor can it get a new token.
    import google.auth.exceptions
    import google.auth.transport.requests

    with pytest.raises(google.auth.exceptions.RefreshError, match="invalid_grant"):
        credentials(key).refresh(google.auth.transport.requests.Request())


def test_expired_tampered_and_foreign_jwts_are_refused(secured, project):
    srv, base, admin = secured
    from google.auth import crypt, jwt

    email, key = admin.account(project, "forger", VIEWER, base)
    data = json.loads(key.read_text())
    signer = crypt.RSASigner.from_service_account_info(data)
    path = srv.url + f"/v1b3/projects/{project}/locations/{REGION}/jobs"
    now = int(time.time())

    def call(payload, signer=signer, **edit) -> httpx.Response:
        token = jwt.encode(signer, {**payload, **edit}).decode()
        return httpx.get(path, headers={"Authorization": f"Bearer {token}"})

    good = {"iss": email, "sub": email, "iat": now, "exp": now + 600, "scope": SCOPES[0]}
    assert call(good).status_code == 200
    error_of(call(good, iat=now - 7200, exp=now - 3600), 401, "UNAUTHENTICATED")  # expired
    error_of(call(good, exp=now + 86400), 401, "UNAUTHENTICATED")  # longer than an hour
    error_of(call(good, scope="https://www.googleapis.com/auth/devstorage.read_only"), 401, "UNAUTHENTICATED")
    admin_email = json.loads(srv.admin_key.read_text())["client_email"]
    error_of(call(good, iss=admin_email, sub=admin_email), 401, "UNAUTHENTICATED")  # someone else's name
    token = jwt.encode(signer, good).decode()
    head, body, sig = token.split(".")
    forged = (
        base64.urlsafe_b64encode(json.dumps({**good, "iss": admin_email, "sub": admin_email}).encode())
        .decode()
        .rstrip("=")
    )
    tampered = httpx.get(path, headers={"Authorization": f"Bearer {head}.{forged}.{sig}"})
    error_of(tampered, 401, "UNAUTHENTICATED")
    # A key of our own making that claims the real key's id.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    other = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    impostor = crypt.RSASigner.from_string(other, key_id=data["private_key_id"])
    error_of(call(good, signer=impostor), 401, "UNAUTHENTICATED")
    # The token endpoint refuses the same.
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer"}
    forged_assertion = jwt.encode(impostor, {**good, "aud": srv.url + "/token"}).decode()
    answer = httpx.post(srv.url + "/token", data={**grant, "assertion": forged_assertion})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    answer = httpx.post(srv.url + "/token", data={**grant, "assertion": jwt.encode(signer, good).decode()})
    assert answer.status_code == 400 and "audience" in answer.json()["error_description"]


def test_workers_lease_only_the_work_of_projects_they_are_bound_to(tmp_path, project_pair, request):
    a, b = project_pair
    srv = Server(tmp_path / "data", extra_args=("--workers", "0", "--allow-path", str(tmp_path)), auth=True).start()
    request.addfinalizer(srv.stop)
    admin = Admin(srv)
    b_job = admin.job(b, "first-in-line")  # older: a worker of any project would lease it first
    a_job = admin.job(a, "second")
    _, key = admin.account(a, "worker-a", WORKER, tmp_path)
    worker = httpx.Client(base_url=srv.url, headers=bearer(key), timeout=30)
    lease = {"workerId": "w-a", "workItemTypes": ["beamport.pipeline"], "requestedLeaseDuration": "60s"}
    path = "/v1b3/projects/{}/locations/{}/jobs/{}/workItems:lease"
    error_of(worker.post(path.format(b, REGION, b_job["id"]), json=lease), 403, "PERMISSION_DENIED")
    # A wildcard lease, as `beamport worker` makes: A's work, never B's.
    got = worker.post(path.format("-", "-", "-"), json=lease).json()
    assert [i["jobId"] for i in got.get("workItems", [])] == [a_job["id"]]
    assert worker.post(path.format("-", "-", "-"), json=lease).json() == {}
    report = f"/v1b3/projects/{b}/locations/{REGION}/jobs/{b_job['id']}/workItems:reportStatus"
    error_of(worker.post(report, json={"workerId": "w-a", "workItemStatuses": []}), 403, "PERMISSION_DENIED")
    # A worker's key cannot create jobs.
    error_of(worker.post(f"/v1b3/projects/{a}/locations/{REGION}/jobs", json={"name": "x"}), 403, "PERMISSION_DENIED")
    # `beamport worker --credentials KEY` of project B, run once: it takes B's job (which has no pipeline, so it
    # fails it, saying so) through the API with its own credentials.
    _, b_key = admin.account(b, "worker-b", WORKER, tmp_path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "beamport",
            "worker",
            "--endpoint",
            srv.url,
            "--credentials",
            str(b_key),
            "--once",
            "--data-dir",
            str(tmp_path / "wb"),
            "--worker-id",
            "w-b",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    b_state = admin.ok("GET", f"/v1b3/projects/{b}/locations/{REGION}/jobs/{b_job['id']}")["currentState"]
    assert b_state == "JOB_STATE_FAILED"


# -- no way in from a web page --------------------------------------------------------------------------


YAML_ATTACK = {
    "launchParameter": {
        "jobName": "csrf",
        "containerSpec": {
            "sdkInfo": {"language": "YAML"},
            "metadata": {
                "name": "x",
                "yamlDefinition": "pipeline:\n  type: chain\n  transforms:\n"
                "    - {type: Create, config: {elements: [1]}}\n"
                "    - {type: MapToFields, config: {language: python, "
                "fields: {x: \"__import__('os').system('touch MARKER')\"}}}\n",
            },
        },
    }
}


@pytest.mark.parametrize("auth", [True, False], ids=["auth", "no-auth"])
def test_cross_site_requests_and_dns_rebinding_are_refused_and_create_nothing(tmp_path, project, auth, request):
    srv = Server(tmp_path / "data", extra_args=("--workers", "0", "--allow-path", str(tmp_path)), auth=auth).start()
    request.addfinalizer(srv.stop)
    marker = tmp_path / "pwned"
    attack = json.dumps(YAML_ATTACK).replace("MARKER", str(marker))
    headers = bearer(srv.admin_key) if auth else {}  # even with credentials (a cookie would be sent alike)
    launch = f"{srv.url}/v1b3/projects/{project}/locations/{REGION}/flexTemplates:launch"
    create = f"{srv.url}/v1b3/projects/{project}/locations/{REGION}/jobs"
    refused = [
        # A page's fetch or form with a body type that needs no preflight.
        (launch, {"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403),
        (launch, {"Content-Type": "text/plain"}, 400),
        (create, {"Content-Type": "application/x-www-form-urlencoded"}, 400),
        # JSON from another origin, or another site (a dev server on another port is another site's page).
        (launch, {"Content-Type": "application/json", "Origin": "http://evil.example"}, 403),
        (launch, {"Content-Type": "application/json", "Origin": "null"}, 403),
        (launch, {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, 403),
        (launch, {"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"}, 403),
        # DNS rebinding: the page's own host name, re-pointed at 127.0.0.1.
        (launch, {"Content-Type": "application/json", "Host": f"evil.example:{srv.port}"}, 403),
    ]
    for url, extra, code in refused:
        response = httpx.post(url, content=attack, headers={**headers, **extra}, timeout=60)
        assert response.status_code == code, (extra, response.text)
        assert "access-control-allow-origin" not in response.headers
    rebound = httpx.get(create, headers={**headers, "Host": "evil.example"})
    assert rebound.status_code == 403
    # No CORS: a preflight grants nothing.
    preflight = httpx.options(
        create, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    time.sleep(1)
    assert not marker.exists()
    listing = httpx.get(create, headers=headers).json()
    assert listing.get("jobs", []) == []
    # The server's own origin, IP addresses and loopback names are fine.
    for host in (f"127.0.0.1:{srv.port}", f"localhost:{srv.port}"):
        ok = httpx.post(
            create,
            json={"name": f"fine-{host.split(':')[0].replace('.', '-')}"},
            headers={**headers, "Host": host, "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"},
        )
        assert ok.status_code == 200, ok.text


def test_console_sessions_sign_out_and_lapse_with_the_key_that_asked_for_them(secured, project):
    srv, base, admin = secured
    email, key = admin.account(project, "console-user", VIEWER, base)
    headers = bearer(key)

    def link() -> str:
        answer = httpx.post(srv.url + "/beamport/v1/session:link", headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()["url"]

    browser = httpx.Client(timeout=30)  # keeps cookies, as a browser does
    signed_in = browser.get(link(), follow_redirects=False)
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"]
    assert (
        f"beamport_session_{srv.port}=" in cookie
        and "httponly" in cookie.lower()
        and "samesite=strict" in cookie.lower()
    )
    session = browser.get(srv.url + "/beamport/v1/session").json()
    assert session["principal"] == email and session["csrfToken"]
    # Signing out is a state change: it needs the CSRF token.
    error_of(browser.delete(srv.url + "/beamport/v1/session"), 403, "PERMISSION_DENIED")
    assert (
        browser.delete(srv.url + "/beamport/v1/session", headers={"X-CSRF-Token": session["csrfToken"]}).status_code
        == 200
    )
    error_of(browser.get(srv.url + "/beamport/v1/session"), 401, "UNAUTHENTICATED")
    # A session, and a link not used yet, end with the key that asked for them.
    unused = link()
    browser = httpx.Client(timeout=30)
    browser.get(link(), follow_redirects=False)
    assert browser.get(srv.url + "/beamport/v1/session").status_code == 200
    key_id = json.loads(key.read_text())["private_key_id"]
    admin.ok("DELETE", f"/v1/projects/-/serviceAccounts/{email}/keys/{key_id}")
    error_of(browser.get(srv.url + "/beamport/v1/session"), 401, "UNAUTHENTICATED")
    assert httpx.get(unused, follow_redirects=False).status_code == 401
