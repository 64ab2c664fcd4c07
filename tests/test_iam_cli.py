"""The gcloud-like administration commands (docs/cli.md, "Identity and access"): `beamport iam service-accounts`
(and keys), `beamport projects|organizations *-iam-policy*`, `beamport logs audit`, `beamport console link`.

The real CLI, run as a user runs it (GOOGLE_APPLICATION_CREDENTIALS), against a real server with authentication
on, on both store backends: one server per backend for the module, each test in projects of its own.
"""

from __future__ import annotations

import json
import re
import stat
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import API_ONLY, Server, beamport_command, new_postgres_database

from beamport.cli import iam as iam_cli
from beamport.cli.client import ApiCallError, ClientError

DEVELOPER, VIEWER = "roles/dataflow.developer", "roles/dataflow.viewer"
EMAIL_DOMAIN = "iam.gserviceaccount.com"
ADMIN_EMAIL = f"beamport-admin@beamport.{EMAIL_DOMAIN}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def auth_server(request, tmp_path_factory) -> Server:
    url = new_postgres_database() if request.param == "postgres" else None
    data = tmp_path_factory.mktemp(f"iam-cli-{request.param}") / "data"
    srv = Server(data, database_url=url, extra_args=API_ONLY, auth=True).start()
    yield srv
    srv.stop()


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Cli:
    """`beamport ARGS --endpoint <server>` as one principal (a key file, or none)."""

    def __init__(self, server: Server, key: Path | None):
        self.server, self.key = server, key

    def __call__(self, *args: str, ok: bool = True):
        done = beamport_command(*args, "--endpoint", self.server.url, check=False, credentials=self.key)
        assert "Traceback" not in done.stderr, done.stderr
        if ok:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def refused(self, *args: str, status: str) -> str:
        """Run a command the server must refuse with `status`; its error message."""
        done = self(*args, ok=False)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"ERROR: ({status})" in done.stderr, done.stderr
        return done.stderr


@pytest.fixture
def admin(auth_server) -> Cli:
    return Cli(auth_server, auth_server.admin_key)


def new_account(admin: Cli, project: str, name: str, directory: Path, role: str | None = None) -> tuple[str, Path]:
    """A service account of the project, a key file of it and, with `role`, that role on the project."""
    admin("iam", "service-accounts", "create", name, "--project", project)
    email = f"{name}@{project}.{EMAIL_DOMAIN}"
    key = directory / f"{name}.json"
    admin("iam", "service-accounts", "keys", "create", str(key), "--iam-account", email)
    if role:
        admin("projects", "add-iam-policy-binding", project, "--member", f"serviceAccount:{email}", "--role", role)
    return email, key


def policy_members(cli: Cli, group: str, *target: str) -> dict[str, list[str]]:
    """role -> members of a policy, read with `beamport projects|organizations get-iam-policy --format json`."""
    policy = json.loads(cli(group, "get-iam-policy", *target, "--format", "json").stdout)
    assert policy["etag"] and policy["version"] == 1
    return {b["role"]: b["members"] for b in policy.get("bindings", [])}


# -- service accounts, keys, project roles ---------------------------------------------------------------


@pytest.mark.slow
def test_an_account_with_a_key_file_gets_what_its_project_role_allows(admin, auth_server, tmp_path):
    project, other = new_id("team-a"), new_id("team-b")
    name = new_id("dev")
    email = f"{name}@{project}.{EMAIL_DOMAIN}"
    created = admin(
        "iam",
        "service-accounts",
        "create",
        name,
        "--project",
        project,
        "--display-name",
        "Nightly ETL",
        "--description",
        "runs the nightly jobs",
    )
    assert f"Created service account [{name}]." in created.stderr
    assert f"email: {email}" in created.stdout
    listed = admin("iam", "service-accounts", "list", "--project", project).stdout.splitlines()
    assert listed[0].split() == ["EMAIL", "DISPLAY_NAME", "DESCRIPTION"]
    assert listed[1].split() == [email, "Nightly", "ETL", "runs", "the", "nightly", "jobs"]
    described = json.loads(admin("iam", "service-accounts", "describe", email, "--format", "json").stdout)
    assert described["name"] == f"projects/{project}/serviceAccounts/{email}"
    assert described["displayName"] == "Nightly ETL" and described["projectId"] == project

    key = tmp_path / "dev-key.json"
    done = admin("iam", "service-accounts", "keys", "create", str(key), "--iam-account", email)
    key_id = re.fullmatch(
        rf"created key \[([0-9a-f]{{40}})\] of type \[json\] as \[{re.escape(str(key))}\] for \[{re.escape(email)}\]\n",
        done.stderr,
    ).group(1)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["dev-key.json"]  # no temporary file left over
    key_file = json.loads(key.read_text())
    assert key_file["type"] == "service_account" and key_file["client_email"] == email
    assert key_file["private_key_id"] == key_id and key_file["token_uri"] == f"{auth_server.url}/token"
    dev = Cli(auth_server, key)

    # Authenticated, but no role anywhere yet.
    assert "'dataflow.jobs.list'" in dev.refused("jobs", "list", "--project", project, status="PERMISSION_DENIED")

    member = f"serviceAccount:{email}"
    bound = admin("projects", "add-iam-policy-binding", project, "--member", member, "--role", DEVELOPER)
    assert f"Updated IAM policy for project [{project}]." in bound.stderr
    assert f"- role: {DEVELOPER}" in bound.stdout and f'- "{member}"' in bound.stdout
    assert "Listed 0 items." in dev("jobs", "list", "--project", project).stderr
    refused = dev.refused("jobs", "list", "--project", other, status="PERMISSION_DENIED")
    assert f"Permission 'dataflow.jobs.list' denied on project '{other}' for {email}" in refused
    assert policy_members(admin, "projects", project) == {DEVELOPER: [member]}
    assert policy_members(admin, "projects", other) == {}

    removed = admin("projects", "remove-iam-policy-binding", project, "--member", member, "--role", DEVELOPER)
    assert f"Updated IAM policy for project [{project}]." in removed.stderr
    assert "bindings" not in removed.stdout
    assert "'dataflow.jobs.list'" in dev.refused("jobs", "list", "--project", project, status="PERMISSION_DENIED")
    again = admin("projects", "remove-iam-policy-binding", project, "--member", member, "--role", DEVELOPER, ok=False)
    assert again.returncode == 1
    assert (
        f"Policy binding with the member [{member}] and the role [{DEVELOPER}] not found on project [{project}]"
        in again.stderr
    )
    bare = admin("projects", "remove-iam-policy-binding", project, "--member", email, "--role", DEVELOPER, ok=False)
    assert bare.returncode == 2 and "serviceAccount:" in bare.stderr  # a usage error, before any call


@pytest.mark.slow
def test_a_deleted_key_stops_working_at_once(admin, auth_server, tmp_path):
    project = new_id("keys")
    email, key = new_account(admin, project, new_id("ci"), tmp_path, DEVELOPER)
    key_id = json.loads(key.read_text())["private_key_id"]
    second = tmp_path / "second.json"
    admin("iam", "service-accounts", "keys", "create", str(second), "--iam-account", email)
    listed = admin("iam", "service-accounts", "keys", "list", "--iam-account", email).stdout.splitlines()
    assert listed[0].split() == ["KEY_ID", "CREATED_AT", "(UTC)", "EXPIRES_AT", "(UTC)"]
    rows = {line.split()[0]: line.split() for line in listed[1:]}
    assert set(rows) == {key_id, json.loads(second.read_text())["private_key_id"]}
    assert rows[key_id][-1] == "never"
    dev = Cli(auth_server, key)
    dev("jobs", "list", "--project", project)

    deleted = admin("iam", "service-accounts", "keys", "delete", key_id, "--iam-account", email)
    assert f"Deleted key [{key_id}] for service account [{email}]." in deleted.stderr
    refused = dev("jobs", "list", "--project", project, ok=False)
    assert refused.returncode == 1
    # The key is refused where the CLI trades it for an access token (the key's token_uri).
    assert "UNAUTHENTICATED" in refused.stderr and f"key {key_id} does not exist" in refused.stderr, refused.stderr
    Cli(auth_server, second)("jobs", "list", "--project", project)  # the account's other key still works
    listed = admin("iam", "service-accounts", "keys", "list", "--iam-account", email, "--format", "json").stdout
    listed = json.loads(listed)
    assert [k["name"].rsplit("/", 1)[1] for k in listed] == [json.loads(second.read_text())["private_key_id"]]

    admin("iam", "service-accounts", "delete", email)
    admin.refused("iam", "service-accounts", "describe", email, status="NOT_FOUND")
    assert "Listed 0 items." in admin("iam", "service-accounts", "list", "--project", project).stderr


@pytest.mark.slow
def test_a_viewer_cannot_grant_roles_and_the_audit_log_names_who_tried(admin, auth_server, tmp_path):
    project = new_id("audited")
    viewer_email, viewer_key = new_account(admin, project, new_id("viewer"), tmp_path, VIEWER)
    viewer = Cli(auth_server, viewer_key)
    viewer("jobs", "list", "--project", project)
    # add-iam-policy-binding reads the policy first (as gcloud does), and Dataflow's viewer role may not.
    refused = viewer.refused(
        "projects",
        "add-iam-policy-binding",
        project,
        "--member",
        f"serviceAccount:{viewer_email}",
        "--role",
        "roles/dataflow.admin",
        status="PERMISSION_DENIED",
    )
    assert f"Permission 'resourcemanager.projects.getIamPolicy' denied on project '{project}'" in refused
    viewer.refused("jobs", "cancel", "2026-01-01_00_00_00-1", "--project", project, status="PERMISSION_DENIED")

    table = admin("logs", "audit", "--project", project).stdout.splitlines()
    assert table[0].split() == ["TIME", "(UTC)", "PRINCIPAL", "METHOD", "RESOURCE", "STATUS"]
    rows = [line.split()[2:] for line in table[1:]]  # after the date and time
    setter = [ADMIN_EMAIL, "resourcemanager.projects.setIamPolicy", f"/v1/projects/{project}:setIamPolicy", "OK"]
    assert setter in rows
    assert [
        viewer_email,
        "resourcemanager.projects.getIamPolicy",
        f"/v1/projects/{project}:getIamPolicy",
        "PERMISSION_DENIED",
    ] in rows
    assert [
        viewer_email,
        "dataflow.jobs.update",
        f"/v1b3/projects/{project}/locations/us-central1/jobs/2026-01-01_00_00_00-1",
        "PERMISSION_DENIED",
    ] in rows
    assert rows.index(
        [
            viewer_email,
            "dataflow.jobs.update",
            f"/v1b3/projects/{project}/locations/us-central1/jobs/2026-01-01_00_00_00-1",
            "PERMISSION_DENIED",
        ]
    ) < rows.index(setter)  # newest first
    assert {row[0] for row in rows} == {ADMIN_EMAIL, viewer_email}

    # --limit follows the pages up to it; JSON has the entries as the API returns them.
    entries = json.loads(admin("logs", "audit", "--project", project, "--limit", "2", "--format", "json").stdout)
    assert len(entries) == 2
    newest = entries[0]
    assert newest["logName"] == f"projects/{project}/logs/cloudaudit.googleapis.com%2Factivity"
    assert newest["protoPayload"]["authenticationInfo"]["principalEmail"] == viewer_email
    assert newest["protoPayload"]["status"]["code"] == 7  # PERMISSION_DENIED
    # The viewer may not read the audit log; the policy is as the admin left it.
    assert "'logging.logEntries.list'" in viewer.refused(
        "logs", "audit", "--project", project, status="PERMISSION_DENIED"
    )
    assert policy_members(admin, "projects", project) == {VIEWER: [f"serviceAccount:{viewer_email}"]}


@pytest.mark.slow
def test_organization_bindings_hold_on_every_project(admin, auth_server, tmp_path):
    project = new_id("home")
    email, key = new_account(admin, project, new_id("org-viewer"), tmp_path)
    member = f"serviceAccount:{email}"
    anywhere = new_id("anywhere")
    account = Cli(auth_server, key)
    account.refused("jobs", "list", "--project", anywhere, status="PERMISSION_DENIED")
    done = admin("organizations", "add-iam-policy-binding", "--member", member, "--role", VIEWER)
    assert "Updated IAM policy for organization [beamport]." in done.stderr
    account("jobs", "list", "--project", anywhere)
    members = policy_members(admin, "organizations", "organizations/beamport")
    assert member in members[VIEWER] and f"serviceAccount:{ADMIN_EMAIL}" in members["roles/dataflow.admin"]
    admin("organizations", "remove-iam-policy-binding", "beamport", "--member", member, "--role", VIEWER)
    account.refused("jobs", "list", "--project", anywhere, status="PERMISSION_DENIED")
    admin.refused("organizations", "get-iam-policy", "elsewhere", status="INVALID_ARGUMENT")


# -- the console link, no credentials -----------------------------------------------------------------------


@pytest.mark.slow
def test_console_link_signs_in_once(admin):
    done = admin("console", "link")
    url = done.stdout.strip()
    assert re.fullmatch(rf"{re.escape(admin.server.url)}/console/signin\?code=[-_A-Za-z0-9]+", url), done.stdout
    first = httpx.get(url, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/"
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower(), cookie
    assert httpx.get(url, follow_redirects=False).status_code == 401


@pytest.mark.slow
def test_without_credentials_the_server_says_unauthenticated(auth_server):
    anonymous = Cli(auth_server, None)
    anonymous.refused("jobs", "list", "--project", new_id("any"), status="UNAUTHENTICATED")
    anonymous.refused("console", "link", status="UNAUTHENTICATED")


# -- what a project's admin may not do ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project_admin(auth_server, tmp_path_factory) -> Cli:
    """A service account with roles/dataflow.admin on its own project only."""
    admin = Cli(auth_server, auth_server.admin_key)
    _, key = new_account(
        admin, new_id("own"), new_id("proj-admin"), tmp_path_factory.mktemp("keys"), "roles/dataflow.admin"
    )
    return Cli(auth_server, key)


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ("iam", "service-accounts", "keys", "list", "--iam-account", ADMIN_EMAIL),
        ("organizations", "get-iam-policy"),
        ("logs", "audit"),
    ],
    ids=["another-projects-account", "organization-policy", "every-projects-audit-log"],
)
def test_a_project_admin_is_confined_to_its_project(project_admin, command):
    project_admin.refused(*command, status="PERMISSION_DENIED")


# -- the read-modify-write of a policy, without a server ------------------------------------------------------


class FakePolicies:
    """get/set_iam_policy as the server answers them, with `conflicts` writes refused as concurrent."""

    def __init__(self, conflicts: int):
        bindings = [{"role": VIEWER, "members": ["allAuthenticatedUsers"]}]
        self.policy = {"version": 1, "etag": "djE=", "bindings": bindings}
        self.conflicts = conflicts
        self.reads = 0

    def get_iam_policy(self, resource):
        self.reads += 1
        return json.loads(json.dumps(self.policy))

    def set_iam_policy(self, resource, policy):
        if self.conflicts:
            self.conflicts -= 1
            raise ApiCallError("ABORTED", "There were concurrent policy changes", 409)
        assert policy["etag"] == self.policy["etag"]
        self.policy = {**policy, "etag": "djI="}
        return self.policy


class FakeSession:
    def __init__(self, client):
        self.client = client


def test_policy_changes_are_retried_after_concurrent_ones(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)  # tenacity sleeps with time.sleep
    member = "serviceAccount:a-robot@p.iam.gserviceaccount.com"

    def grant(policy: dict) -> dict:
        return iam_cli.with_binding(policy, member, DEVELOPER)

    client = FakePolicies(conflicts=2)
    policy = iam_cli.update_policy(FakeSession(client), "projects/p", grant)
    assert client.reads == 3
    assert policy["bindings"] == [
        {"role": VIEWER, "members": ["allAuthenticatedUsers"]},
        {"role": DEVELOPER, "members": [member]},
    ]

    client = FakePolicies(conflicts=iam_cli.POLICY_ATTEMPTS)
    with pytest.raises(ApiCallError, match="concurrent"):
        iam_cli.update_policy(FakeSession(client), "projects/p", grant)
    assert client.reads == iam_cli.POLICY_ATTEMPTS


def test_bindings_are_added_once_and_removed_with_their_role():
    policy = {"etag": "x", "bindings": [{"role": VIEWER, "members": ["allAuthenticatedUsers"]}]}
    added = iam_cli.with_binding(policy, "allAuthenticatedUsers", VIEWER)
    assert added == policy and added is not policy
    removed = iam_cli.without_binding(policy, "allAuthenticatedUsers", VIEWER, "project [p]")
    assert removed == {"etag": "x", "bindings": []}
    assert policy["bindings"][0]["members"] == ["allAuthenticatedUsers"]  # not changed in place
    with pytest.raises(ClientError, match=r"member \[allAuthenticatedUsers\] and the role \[roles/dataflow.admin\]"):
        iam_cli.without_binding(policy, "allAuthenticatedUsers", "roles/dataflow.admin", "project [p]")
