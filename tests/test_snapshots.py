"""Snapshots (jobs.snapshot, snapshots.get/list/delete, jobs.snapshots.list, projects.deleteSnapshots, the
location-less twins), over HTTP with google-cloud-dataflow-client (GAPIC, REST) and google-api-python-client,
and the `beamport snapshots` commands, on SQLite and PostgreSQL.

The API servers here have no streaming engine, so every snapshot they are asked for is refused. READY
snapshots need a streaming job running on Flink: the Flink end-to-end tests take them. The expiry and delete
logic of READY snapshots is tested below on the service over a real store (see `Savepoints`).
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from urllib.parse import urlparse

import httpx
import orjson
import pytest
from conftest import beamport_command, discovery_client, new_postgres_database
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import dataflow_v1beta3 as dataflow
from google.protobuf.duration_pb2 import Duration
from googleapiclient.errors import HttpError

REGION = "us-central1"


def snapshots_client(url: str) -> dataflow.SnapshotsV1Beta3Client:
    return dataflow.SnapshotsV1Beta3Client(
        transport="rest", client_options={"api_endpoint": url}, credentials=AnonymousCredentials()
    )


def jobs_client(url: str) -> dataflow.JobsV1Beta3Client:
    return dataflow.JobsV1Beta3Client(
        transport="rest", client_options={"api_endpoint": url}, credentials=AnonymousCredentials()
    )


def snapshot_request(project: str, job_id: str, location: str | None = REGION, **fields):
    if location is not None:
        fields["location"] = location
    return dataflow.SnapshotJobRequest(project_id=project, job_id=job_id, **fields)


def gapic_status(refused: pytest.ExceptionInfo) -> str:
    """The Google status of a GAPIC error (it picks its exception class by HTTP code: 400 is BadRequest for both
    INVALID_ARGUMENT and FAILED_PRECONDITION, as against Dataflow)."""
    return refused.value.response.json()["error"]["status"]


def error_of(refused: pytest.ExceptionInfo) -> tuple[int, str]:
    """(HTTP status, message) of a discovery client's HttpError."""
    body = orjson.loads(refused.value.content)
    return refused.value.resp.status, body["error"]["message"]


def all_snapshots(server, project: str) -> list:
    """Every snapshot of the project in the region, through each list call."""
    client = snapshots_client(server.url)
    found = list(client.list_snapshots(request={"project_id": project, "location": REGION}).snapshots)
    found += list(client.list_snapshots(request={"project_id": project}).snapshots)
    return found


# -- jobs.snapshot ------------------------------------------------------------------------------


def test_snapshot_of_an_unknown_job_is_not_found(server, project):
    jobs = jobs_client(server.url)
    with pytest.raises(gexc.NotFound) as refused:
        jobs.snapshot_job(request=snapshot_request(project, "2026-01-01_00_00_00-1"))
    assert "2026-01-01_00_00_00-1" in refused.value.message
    with pytest.raises(gexc.NotFound):  # the location-less twin
        jobs.snapshot_job(request=snapshot_request(project, "no-such-job", location=None))
    disc = discovery_client(server.url).projects()
    with pytest.raises(HttpError) as refused:
        disc.locations().jobs().snapshot(projectId=project, location=REGION, jobId="no-such-job", body={}).execute()
    assert error_of(refused)[0] == 404


def test_a_batch_job_cannot_be_snapshotted(server, api):
    job = api.create("batchy", type="JOB_TYPE_BATCH")
    with pytest.raises(gexc.BadRequest) as refused:
        jobs_client(server.url).snapshot_job(request=snapshot_request(api.project, job["id"]))
    assert gapic_status(refused) == "FAILED_PRECONDITION"
    assert f"Job {job['id']} is a batch job: only streaming jobs can be snapshotted" in refused.value.message
    disc = discovery_client(server.url).projects()
    with pytest.raises(HttpError) as refused:
        disc.jobs().snapshot(projectId=api.project, jobId=job["id"], body={"location": REGION}).execute()
    status, message = error_of(refused)
    assert status == 400 and "batch job" in message
    assert all_snapshots(server, api.project) == []


def test_a_server_without_a_streaming_engine_refuses_naming_what_would_work(server, api):
    job = api.create("streamy", type="JOB_TYPE_STREAMING")
    with pytest.raises(gexc.BadRequest) as refused:
        jobs_client(server.url).snapshot_job(
            request=snapshot_request(api.project, job["id"], ttl=Duration(seconds=3600), description="before v2")
        )
    assert gapic_status(refused) == "FAILED_PRECONDITION"
    message = refused.value.message
    assert job["id"] in message and "Flink" in message and "beamport serve --flink-master" in message
    assert "docs/engines.md" in message
    # The location-less twins: discovery's projects.jobs.snapshot (location in the body), GAPIC without location.
    disc = discovery_client(server.url).projects()
    with pytest.raises(HttpError) as refused:
        disc.jobs().snapshot(projectId=api.project, jobId=job["id"], body={"location": REGION, "ttl": "60s"}).execute()
    status, message = error_of(refused)
    assert status == 400 and "Flink" in message
    with pytest.raises(gexc.BadRequest) as refused:
        jobs_client(server.url).snapshot_job(request=snapshot_request(api.project, job["id"], location=None))
    assert gapic_status(refused) == "FAILED_PRECONDITION"
    assert all_snapshots(server, api.project) == []
    # Only in its own region.
    with pytest.raises(HttpError) as refused:
        disc.jobs().snapshot(projectId=api.project, jobId=job["id"], body={"location": "europe-west1"}).execute()
    assert error_of(refused)[0] == 404


@pytest.mark.parametrize(
    "ttl, says",
    [
        ("0s", "must be positive"),
        ("-60s", "must be positive"),
        ("2592001s", "at most 30 days"),
        ("3600", "ttl"),  # no unit
        ("an hour", "ttl"),
        (3600, "ttl"),  # not a string
    ],
)
def test_a_bad_ttl_is_invalid_and_stores_nothing(server, api, ttl, says):
    job = api.create("ttl-check", type="JOB_TYPE_STREAMING")
    path = f"{api.jobs_path}/{job['id']}:snapshot"
    response = api.client.post(path, json={"ttl": ttl, "description": "x"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["status"] == "INVALID_ARGUMENT" and says in error["message"], error
    assert all_snapshots(server, api.project) == []


def test_a_ttl_over_30_days_is_refused_through_gapic(server, api):
    job = api.create("ttl-gapic", type="JOB_TYPE_STREAMING")
    with pytest.raises(gexc.BadRequest) as refused:
        jobs_client(server.url).snapshot_job(
            request=snapshot_request(api.project, job["id"], ttl=Duration(seconds=31 * 86400))
        )
    assert gapic_status(refused) == "INVALID_ARGUMENT"
    assert "at most 30 days" in refused.value.message


# -- snapshots.get / list / delete, projects.deleteSnapshots ---------------------------------------


def test_unknown_snapshots_are_not_found_everywhere(server, project):
    client = snapshots_client(server.url)
    snapshot_id = str(uuid.uuid4())
    for request in (
        {"project_id": project, "location": REGION, "snapshot_id": snapshot_id},
        {"project_id": project, "snapshot_id": snapshot_id},
    ):
        with pytest.raises(gexc.NotFound) as refused:
            client.get_snapshot(request=request)
        assert snapshot_id in refused.value.message
        with pytest.raises(gexc.NotFound):  # with a location: snapshots.delete; without: projects.deleteSnapshots
            client.delete_snapshot(request=request)
    disc = discovery_client(server.url).projects()
    calls = [
        disc.locations().snapshots().get(projectId=project, location=REGION, snapshotId=snapshot_id),
        disc.locations().snapshots().delete(projectId=project, location=REGION, snapshotId=snapshot_id),
        disc.snapshots().get(projectId=project, snapshotId=snapshot_id, location="europe-west1"),
        disc.snapshots().get(projectId=project, snapshotId=snapshot_id),
        disc.deleteSnapshots(projectId=project, snapshotId=snapshot_id, location=REGION),
        disc.deleteSnapshots(projectId=project, snapshotId=snapshot_id),
    ]
    for call in calls:
        with pytest.raises(HttpError) as refused:
            call.execute()
        status, message = error_of(refused)
        assert status == 404 and snapshot_id in message


def test_lists_are_empty_without_snapshots(server, api):
    job = api.create("listed", type="JOB_TYPE_STREAMING")
    client = snapshots_client(server.url)
    for request in (
        {"project_id": api.project, "location": REGION, "job_id": job["id"]},  # jobs.snapshots.list
        {"project_id": api.project, "location": REGION},  # snapshots.list
        {"project_id": api.project, "job_id": job["id"]},  # projects.snapshots.list
        {"project_id": api.project},
    ):
        assert list(client.list_snapshots(request=request).snapshots) == []
    disc = discovery_client(server.url).projects()
    assert disc.locations().snapshots().list(projectId=api.project, location=REGION).execute() == {}
    assert disc.locations().snapshots().list(projectId=api.project, location=REGION, jobId=job["id"]).execute() == {}
    assert (
        disc.locations().jobs().snapshots().list(projectId=api.project, location=REGION, jobId=job["id"]).execute()
        == {}
    )
    assert disc.snapshots().list(projectId=api.project, jobId=job["id"], location="europe-west1").execute() == {}
    assert disc.snapshots().list(projectId=api.project).execute() == {}


def test_bad_parameters_are_invalid(server, project):
    base = f"{server.url}/v1b3/projects/{project}"
    for method, path, params in [
        ("DELETE", "/snapshots", {}),  # deleteSnapshots needs a snapshotId
        ("DELETE", "/snapshots", {"snapshotId": "a/b"}),
        ("GET", "/snapshots", {"location": "Not_A_Region"}),
        ("GET", "/snapshots/abc", {"location": "../x"}),
        ("GET", "/snapshots", {"jobId": "-bad"}),
    ]:
        response = httpx.request(method, base + path, params=params)
        assert response.status_code == 400, (method, path, params, response.text)
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


# -- the CLI ----------------------------------------------------------------------------------------


def test_cli_commands_show_the_api_errors(server, api):
    job = api.create("cli-stream", type="JOB_TYPE_STREAMING")
    common = ("--endpoint", server.url, "--project", api.project)

    created = beamport_command(
        "snapshots", "create", job["id"], "--ttl", "1h", "--description", "v1", *common, check=False
    )
    assert created.returncode == 1
    assert "ERROR: (FAILED_PRECONDITION)" in created.stderr and "Flink" in created.stderr

    batch = api.create("cli-batch")
    created = beamport_command("snapshots", "create", batch["id"], *common, check=False)
    assert created.returncode == 1 and "batch job" in created.stderr

    bad_ttl = beamport_command("snapshots", "create", job["id"], "--ttl", "soon", *common, check=False)
    assert bad_ttl.returncode == 2 and "--ttl" in bad_ttl.stderr
    too_long = beamport_command("snapshots", "create", job["id"], "--ttl", "31d", *common, check=False)
    assert too_long.returncode == 1 and "(INVALID_ARGUMENT)" in too_long.stderr and "30 days" in too_long.stderr

    listed = beamport_command("snapshots", "list", *common)
    assert listed.stdout == "" and "Listed 0 items." in listed.stderr
    listed = beamport_command("snapshots", "list", "--job", job["id"], "--format", "json", *common)
    assert orjson.loads(listed.stdout) == []

    missing = str(uuid.uuid4())
    for command in ("describe", "delete"):
        done = beamport_command("snapshots", command, missing, *common, check=False)
        assert done.returncode == 1 and "ERROR: (NOT_FOUND)" in done.stderr and missing in done.stderr
    done = beamport_command("jobs", "run", "--from-snapshot", missing, *common, check=False)
    assert done.returncode == 1 and "ERROR: (NOT_FOUND)" in done.stderr and missing in done.stderr
    assert all_snapshots(server, api.project) == []


# -- expiry and deletion of READY snapshots: the service over a real store --------------------------
#
# READY snapshots need an engine that saves a running job's state. Over HTTP that is Flink (its end-to-end
# tests). For the logic that follows a savepoint (expiry, deletion, what a restored job may rely on), the
# service runs here over a real store (SQLite, PostgreSQL) with `Savepoints`, a StreamingControl that writes
# real files where the service asks and removes them when told: a stand-in used for that logic only.

from beamport.engine.base import EngineError, Savepoint, StreamingControl  # noqa: E402
from beamport.errors import ApiError  # noqa: E402
from beamport.service.documents import document, record_from_document, timestamp  # noqa: E402
from beamport.service.jobs import JobService  # noqa: E402
from beamport.service.snapshots import INTERRUPTED_AFTER_US, SnapshotService  # noqa: E402
from beamport.store import open_store  # noqa: E402
from beamport.store.base import Write  # noqa: E402
from beamport.store.jobs import JobChange  # noqa: E402
from beamport.store.snapshots import SNAPSHOT_RUNNING, SnapshotRecord  # noqa: E402

HOUR_US = 3600 * 1_000_000


class Savepoints(StreamingControl):
    """Writes a savepoint's files under the directory the service gives, and names them with a file: URI (as
    Flink does); discard removes them."""

    name = "test"

    def __init__(self, fail_with: str | None = None):
        self.fail_with = fail_with
        self.discarded: list[str] = []

    def stop(self, job_id: str) -> None:
        pass  # no job runs: the service's own logic is under test

    def savepoint(self, job_id: str, directory: Path, stop: bool = False) -> Savepoint:
        if self.fail_with:
            raise EngineError(self.fail_with)
        data = directory / "savepoint-1"
        data.mkdir(parents=True)
        (data / "_metadata").write_bytes(job_id.encode())
        (data / "state-0").write_bytes(b"s" * 4096)
        return Savepoint(data.as_uri(), sum(f.stat().st_size for f in data.iterdir()))

    def discard(self, location: str) -> None:
        self.discarded.append(location)
        shutil.rmtree(urlparse(location).path, ignore_errors=True)


class Clock:
    def __init__(self, now_us: int = 1_800_000_000_000_000):
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    url = new_postgres_database() if request.param == "postgres" else None
    opened = open_store(url, tmp_path / "db")
    yield opened
    opened.close()


@pytest.fixture
def world(store, tmp_path):
    """A clock, the job service and a snapshot service with Savepoints, over one store."""
    clock = Clock()
    jobs = JobService(store, clock=clock)
    control = Savepoints()
    snapshots = SnapshotService(store, tmp_path / "data", control, clock=clock, wait_s=30)
    return clock, jobs, snapshots, control


def change_job(store, job_id: str, state: str | None = None, **fields) -> None:
    record = store.jobs.get(None, job_id)
    doc = document(record)
    doc.update(fields)
    if state:  # set as the scenario needs, as a run would leave it (not through the state machine's actors)
        doc.update(currentState=state, currentStateTime=timestamp(record.create_us + 1))
    expected = record.version
    store.write(Write(changed_jobs=[JobChange(record_from_document(doc, record), expected)]))


def move_job(store, job_id: str, state: str) -> None:
    change_job(store, job_id, state)


def running_streaming_job(jobs: JobService, name: str = "stream") -> str:
    job = jobs.create_job("p", REGION, {"name": name, "type": "JOB_TYPE_STREAMING"})
    move_job(jobs.store, job["id"], "JOB_STATE_RUNNING")
    return job["id"]


def texts(jobs: JobService, job_id: str) -> list[str]:
    return [m["messageText"] for m in jobs.list_messages("p", REGION, job_id).get("jobMessages", [])]


def test_a_ready_snapshot_is_deleted_with_its_data(world, tmp_path):
    clock, jobs, snapshots, control = world
    job_id = running_streaming_job(jobs)
    snapshot = snapshots.snapshot_job("p", REGION, job_id, {"ttl": "3600s", "description": "before v2"})
    assert snapshot["state"] == "READY" and snapshot["sourceJobId"] == job_id and snapshot["region"] == REGION
    assert snapshot["ttl"] == "3600s" and snapshot["description"] == "before v2"
    assert int(snapshot["diskSizeBytes"]) == 4096 + len(job_id)
    location = snapshots.restore_location("p", REGION, snapshot["id"])
    data = Path(urlparse(location).path)
    assert data.is_relative_to(tmp_path / "data" / "snapshots" / snapshot["id"]) and (data / "_metadata").exists()
    assert any(f"Snapshot {snapshot['id']} created" in t for t in texts(jobs, job_id))

    with pytest.raises(ApiError) as refused:  # only in its own location
        snapshots.delete_snapshot("p", "europe-west1", snapshot["id"])
    assert refused.value.status == "NOT_FOUND" and data.exists()
    assert snapshots.delete_snapshot("p", REGION, snapshot["id"]) == {}
    assert control.discarded == [location] and not (tmp_path / "data" / "snapshots" / snapshot["id"]).exists()
    with pytest.raises(ApiError) as refused:
        snapshots.get_snapshot("p", REGION, snapshot["id"])
    assert refused.value.status == "NOT_FOUND"
    assert snapshots.list_snapshots("p", REGION) == {}


def test_snapshots_expire_after_their_ttl(world, tmp_path):
    clock, jobs, snapshots, control = world
    job_id = running_streaming_job(jobs)
    short = snapshots.snapshot_job("p", REGION, job_id, {"ttl": "3600s"})
    clock.now_us += 1
    default = snapshots.snapshot_job("p", REGION, job_id, {})  # 7 days, Dataflow's default
    assert default["ttl"] == "604800s"
    listed = snapshots.list_snapshots("p", REGION, job_id)["snapshots"]
    assert [s["id"] for s in listed] == [default["id"], short["id"]]  # newest first

    assert snapshots.expire(clock.now_us + HOUR_US - 2) == 0
    assert snapshots.expire(clock.now_us + HOUR_US) == 1
    assert [s["id"] for s in snapshots.list_snapshots("p", REGION)["snapshots"]] == [default["id"]]
    assert not (tmp_path / "data" / "snapshots" / short["id"]).exists()
    assert (tmp_path / "data" / "snapshots" / default["id"]).exists()

    # A server without a streaming engine still deletes expired data: the directory it gave the engine.
    engineless = SnapshotService(snapshots.store, tmp_path / "data", None, clock=clock)
    assert engineless.expire(clock.now_us + 7 * 24 * HOUR_US) == 1
    assert not (tmp_path / "data" / "snapshots" / default["id"]).exists()
    assert snapshots.list_snapshots("p", REGION) == {}


def test_a_snapshot_a_job_has_yet_to_start_from_is_kept(world, tmp_path):
    clock, jobs, snapshots, control = world
    source = running_streaming_job(jobs, "source")
    snapshot = snapshots.snapshot_job("p", REGION, source, {"ttl": "60s"})
    # A job created from the snapshot, not started yet (the job service's own checks at create are not this
    # test's business: the job is stored as it would be once they passed).
    restored = jobs.create_job("p", REGION, {"name": "restored", "type": "JOB_TYPE_STREAMING"})
    change_job(jobs.store, restored["id"], createdFromSnapshotId=snapshot["id"])
    assert restored["currentState"] == "JOB_STATE_PENDING"
    with pytest.raises(ApiError) as refused:
        snapshots.delete_snapshot("p", REGION, snapshot["id"])
    assert refused.value.status == "FAILED_PRECONDITION" and restored["id"] in refused.value.message
    assert snapshots.expire(clock.now_us + HOUR_US) == 0  # expired, but its job has not started
    assert (tmp_path / "data" / "snapshots" / snapshot["id"]).exists()

    move_job(jobs.store, restored["id"], "JOB_STATE_RUNNING")  # the job restored; it saves its own state now
    assert snapshots.expire(clock.now_us + HOUR_US) == 1
    assert not (tmp_path / "data" / "snapshots" / snapshot["id"]).exists()


def test_a_failed_savepoint_is_failed_and_cannot_be_restored(world, store, tmp_path):
    clock, jobs, _, _ = world
    snapshots = SnapshotService(
        store, tmp_path / "data", Savepoints(fail_with="job is not running on Flink"), clock=clock
    )
    job_id = running_streaming_job(jobs)
    snapshot = snapshots.snapshot_job("p", REGION, job_id, {})
    assert snapshot["state"] == "FAILED" and "diskSizeBytes" not in snapshot
    assert any(f"Snapshot {snapshot['id']} failed: job is not running on Flink" in t for t in texts(jobs, job_id))
    with pytest.raises(ApiError) as refused:
        snapshots.restore_location("p", REGION, snapshot["id"])
    assert refused.value.status == "FAILED_PRECONDITION" and "not running on Flink" in refused.value.message
    with pytest.raises(ApiError) as refused:
        snapshots.restore_location("p", REGION, "no-such-snapshot")
    assert refused.value.status == "NOT_FOUND"
    assert snapshots.delete_snapshot("p", REGION, snapshot["id"]) == {}


def test_a_snapshot_left_running_by_a_stopped_server_fails(world, store):
    clock, jobs, snapshots, _ = world
    job_id = running_streaming_job(jobs)
    store.snapshots.add(
        SnapshotRecord(
            id=str(uuid.uuid4()),
            project_id="p",
            location=REGION,
            source_job_id=job_id,
            state=SNAPSHOT_RUNNING,
            create_us=clock.now_us,
            ttl_us=HOUR_US,
            expire_us=clock.now_us + HOUR_US,
        )
    )
    snapshots.expire(clock.now_us + INTERRUPTED_AFTER_US - 1)
    assert snapshots.list_snapshots("p", REGION)["snapshots"][0]["state"] == "RUNNING"
    snapshots.expire(clock.now_us + INTERRUPTED_AFTER_US + 1)
    assert snapshots.list_snapshots("p", REGION)["snapshots"][0]["state"] == "FAILED"
    assert any("interrupted" in t for t in texts(jobs, job_id))
