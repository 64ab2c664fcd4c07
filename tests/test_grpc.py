"""Dataflow's gRPC services (`beamport serve --grpc-port`), driven by google-cloud-dataflow-client's GAPIC clients
over gRPC, sync and async, against real servers; and the conformance checks: the same API calls through the same
GAPIC clients over REST and over gRPC answer the same, errors included (status and message)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from conftest import API_ONLY, Server, beamport_command, free_port, new_postgres_database
from google.api_core import exceptions as gexc
from google.auth.credentials import Credentials
from google.cloud import dataflow_v1beta3 as dataflow
from google.cloud.dataflow_v1beta3.services.flex_templates_service.transports import FlexTemplatesServiceGrpcTransport
from google.cloud.dataflow_v1beta3.services.jobs_v1_beta3.transports import (
    JobsV1Beta3GrpcAsyncIOTransport,
    JobsV1Beta3GrpcTransport,
)
from google.cloud.dataflow_v1beta3.services.messages_v1_beta3.transports import (
    MessagesV1Beta3GrpcAsyncIOTransport,
    MessagesV1Beta3GrpcTransport,
)
from google.cloud.dataflow_v1beta3.services.metrics_v1_beta3.transports import (
    MetricsV1Beta3GrpcAsyncIOTransport,
    MetricsV1Beta3GrpcTransport,
)
from google.cloud.dataflow_v1beta3.services.snapshots_v1_beta3.transports import SnapshotsV1Beta3GrpcTransport
from google.cloud.dataflow_v1beta3.services.templates_service.transports import TemplatesServiceGrpcTransport
from google.protobuf.descriptor import FieldDescriptor
from test_auth import DEVELOPER, VIEWER, Admin, bearer
from test_running_jobs import read_output
from test_templates import YAML_PIPELINE

REGION = "us-central1"
TRANSPORTS = ["rest", "grpc"]
UNKNOWN_JOB = "2020-01-01_00_00_00-1"


class GrpcServer(Server):
    """A `beamport serve` with --grpc-port."""

    def __init__(self, data_dir: Path, *, auth: bool = False, database_url: str | None = None, extra=API_ONLY):
        self.grpc_port = free_port()
        super().__init__(data_dir, database_url, (*extra, "--grpc-port", str(self.grpc_port)), auth)

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request, tmp_path_factory) -> GrpcServer:
    url = new_postgres_database() if request.param == "postgres" else None
    srv = GrpcServer(tmp_path_factory.mktemp(f"grpc-{request.param}") / "data", database_url=url).start()
    yield srv
    srv.stop()


@dataclass
class Clients:
    """google-cloud-dataflow-client's six clients over one transport, and the metadata every call carries."""

    kind: str
    jobs: dataflow.JobsV1Beta3Client
    messages: dataflow.MessagesV1Beta3Client
    metrics: dataflow.MetricsV1Beta3Client
    snapshots: dataflow.SnapshotsV1Beta3Client
    templates: dataflow.TemplatesServiceClient
    flex: dataflow.FlexTemplatesServiceClient
    metadata: tuple[tuple[str, str], ...] = ()


class MetadataOnly(Credentials):
    """No credentials of its own: the calls carry theirs in their metadata (AnonymousCredentials would be asked to
    refresh on a 401, which it refuses to do, so the REST client would never report the refusal)."""

    def refresh(self, request) -> None:
        pass

    def before_request(self, request, method, url, headers) -> None:
        pass


def clients(kind: str, srv: GrpcServer, token: str | None = None) -> Clients:
    """REST: the clients pointed at the server's URL; gRPC: the clients on an insecure channel to its gRPC port, as
    a user makes them. Either way the credentials go in the `authorization` metadata (a bearer token)."""
    classes = (
        dataflow.JobsV1Beta3Client,
        dataflow.MessagesV1Beta3Client,
        dataflow.MetricsV1Beta3Client,
        dataflow.SnapshotsV1Beta3Client,
        dataflow.TemplatesServiceClient,
        dataflow.FlexTemplatesServiceClient,
    )
    if kind == "rest":
        kwargs = dict(transport="rest", client_options={"api_endpoint": srv.url}, credentials=MetadataOnly())
        made = [cls(**kwargs) for cls in classes]
    else:
        channel = grpc.insecure_channel(srv.grpc_address)
        transports = (
            JobsV1Beta3GrpcTransport,
            MessagesV1Beta3GrpcTransport,
            MetricsV1Beta3GrpcTransport,
            SnapshotsV1Beta3GrpcTransport,
            TemplatesServiceGrpcTransport,
            FlexTemplatesServiceGrpcTransport,
        )
        made = [cls(transport=transport(channel=channel)) for cls, transport in zip(classes, transports, strict=True)]
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    return Clients(kind, *made, metadata=metadata)


def refusal(call) -> tuple[str, str]:
    """The status name and message of a refused call, whichever the transport: REST's message is prefixed with
    the request's method and URL by the client, and its exception class is the HTTP status's (400: BadRequest)."""
    with pytest.raises(gexc.GoogleAPICallError) as raised:
        call()
    error = raised.value
    if error.response is not None and hasattr(error.response, "json"):  # REST: the error document
        answer = error.response.json()["error"]
        return answer["status"], answer["message"]
    return error.grpc_status_code.name, error.message


# -- the conformance checks: each runs over both transports --------------------------------------------------------


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_a_job_is_created_read_listed_updated_cancelled_and_its_messages_and_metrics_read(served, project, kind):
    c = clients(kind, served)
    md = c.metadata
    created = c.jobs.create_job(
        request=dataflow.CreateJobRequest(
            project_id=project,
            location=REGION,
            job=dataflow.Job(
                name="conformance", type_=dataflow.JobType.JOB_TYPE_BATCH, client_request_id="r1", labels={"a": "b"}
            ),
        ),
        metadata=md,
    )
    assert created.current_state == dataflow.JobState.JOB_STATE_PENDING and created.client_request_id == "r1"
    assert created.project_id == project and created.location == REGION and created.labels == {"a": "b"}
    # The same name again while the job is active: the active job, unchanged (its clientRequestId tells the
    # client that the job already exists).
    again = c.jobs.create_job(
        request={"project_id": project, "location": REGION, "job": {"name": "conformance", "client_request_id": "r2"}},
        metadata=md,
    )
    assert again.id == created.id and again.client_request_id == "r1"

    got = c.jobs.get_job(
        request={"project_id": project, "location": REGION, "job_id": created.id, "view": "JOB_VIEW_ALL"}, metadata=md
    )
    assert got.name == "conformance" and got.type_ == dataflow.JobType.JOB_TYPE_BATCH
    listed = list(c.jobs.list_jobs(request={"project_id": project, "location": REGION}, metadata=md))
    assert [j.id for j in listed] == [created.id]
    aggregated = list(c.jobs.aggregated_list_jobs(request={"project_id": project}, metadata=md))
    assert [j.id for j in aggregated] == [created.id]
    named = c.jobs.list_jobs(
        request={"project_id": project, "location": REGION, "name": "other", "filter": "ACTIVE"}, metadata=md
    )
    assert list(named) == []

    relabelled = c.jobs.update_job(
        request={
            "project_id": project,
            "location": REGION,
            "job_id": created.id,
            "job": {"labels": {"a": "c"}},
            "update_mask": {"paths": ["labels"]},
        },
        metadata=md,
    )
    assert relabelled.labels == {"a": "c"}
    status, message = refusal(
        lambda: c.jobs.update_job(
            request={
                "project_id": project,
                "location": REGION,
                "job_id": created.id,
                "job": {"requested_state": "JOB_STATE_DRAINED"},
            },
            metadata=md,
        )
    )
    assert status == "FAILED_PRECONDITION" and "batch jobs cannot be drained" in message
    status, message = refusal(
        lambda: c.jobs.snapshot_job(
            request={"project_id": project, "location": REGION, "job_id": created.id}, metadata=md
        )
    )
    assert status == "FAILED_PRECONDITION" and "only streaming jobs can be snapshotted" in message

    cancel = {
        "project_id": project,
        "location": REGION,
        "job_id": created.id,
        "job": {"requested_state": "JOB_STATE_CANCELLED"},
    }
    cancelled = c.jobs.update_job(request=cancel, metadata=md)
    assert cancelled.current_state == dataflow.JobState.JOB_STATE_CANCELLED
    status, message = refusal(lambda: c.jobs.update_job(request=cancel, metadata=md))
    assert status == "FAILED_PRECONDITION" and "terminal state" in message

    where = {"project_id": project, "location": REGION, "job_id": created.id}
    texts = [m.message_text for m in c.messages.list_job_messages(request=where, metadata=md)]
    assert any("Cancel request" in text for text in texts)
    warnings = c.messages.list_job_messages(request={**where, "minimum_importance": "JOB_MESSAGE_ERROR"}, metadata=md)
    assert all(m.message_importance == dataflow.JobMessageImportance.JOB_MESSAGE_ERROR for m in warnings)
    metrics = c.metrics.get_job_metrics(request=where, metadata=md)
    assert metrics.metric_time.year >= 2026
    details = c.metrics.get_job_execution_details(request=where, metadata=md)
    assert list(details) == []
    status, message = refusal(
        lambda: c.metrics.get_stage_execution_details(request={**where, "stage_id": "F9"}, metadata=md)
    )
    assert (status, message) == ("NOT_FOUND", f"Job {created.id} has no stage 'F9'.")

    # Snapshots: none of this job's; the location's list is empty too.
    assert list(c.snapshots.list_snapshots(request=where, metadata=md).snapshots) == []
    listed_snapshots = c.snapshots.list_snapshots(request={"project_id": project, "location": REGION}, metadata=md)
    assert list(listed_snapshots.snapshots) == []


def _bad_calls(c: Clients, project: str) -> dict[str, object]:
    """Calls every transport must refuse alike: name -> a call of no arguments."""
    md = c.metadata
    at = {"project_id": project, "location": REGION}
    return {
        "unknown job": lambda: c.jobs.get_job(request={**at, "job_id": UNKNOWN_JOB}, metadata=md),
        "bad project": lambda: c.jobs.get_job(
            request={"project_id": "Bad_Project", "location": REGION, "job_id": UNKNOWN_JOB}, metadata=md
        ),
        "bad location": lambda: c.jobs.list_jobs(
            request={"project_id": project, "location": "Mars-1"}, metadata=md
        ).pages.__next__(),
        "bad job name": lambda: c.jobs.create_job(request={**at, "job": {"name": "Not A Name"}}, metadata=md),
        "nothing to update": lambda: c.jobs.update_job(request={**at, "job_id": UNKNOWN_JOB, "job": {}}, metadata=md),
        "update of an unknown job": lambda: c.jobs.update_job(
            request={**at, "job_id": UNKNOWN_JOB, "job": {"requested_state": "JOB_STATE_CANCELLED"}}, metadata=md
        ),
        "bad mask": lambda: c.jobs.update_job(
            request={**at, "job_id": UNKNOWN_JOB, "job": {}, "update_mask": {"paths": ["name"]}}, metadata=md
        ),
        "messages of an unknown job": lambda: c.messages.list_job_messages(
            request={**at, "job_id": UNKNOWN_JOB}, metadata=md
        ).pages.__next__(),
        "metrics of an unknown job": lambda: c.metrics.get_job_metrics(
            request={**at, "job_id": UNKNOWN_JOB}, metadata=md
        ),
        "unknown snapshot": lambda: c.snapshots.get_snapshot(
            request={**at, "snapshot_id": "6a0f8e5c-unknown"}, metadata=md
        ),
        "delete of an unknown snapshot": lambda: c.snapshots.delete_snapshot(
            request={**at, "snapshot_id": "6a0f8e5c-unknown"}, metadata=md
        ),
        "snapshot of an unknown job": lambda: c.jobs.snapshot_job(request={**at, "job_id": UNKNOWN_JOB}, metadata=md),
        "template with no path": lambda: c.templates.get_template(request=at, metadata=md),
        "template that is not there": lambda: c.templates.get_template(
            request={**at, "gcs_path": "/tmp/no-such-template-anywhere"}, metadata=md
        ),
        "dynamic template": lambda: c.templates.launch_template(
            request={**at, "dynamic_template": {"gcs_path": "gs://b/t", "staging_location": "gs://b/s"}}, metadata=md
        ),
        "flex launch with no job name": lambda: c.flex.launch_flex_template(
            request={**at, "launch_parameter": {"container_spec_gcs_path": "/tmp/nothing.json"}}, metadata=md
        ),
        "built-in template with bad parameters": lambda: c.templates.launch_template(
            request={
                **at,
                "gcs_path": "builtin://Word_Count",
                "launch_parameters": {"job_name": "wc", "parameters": {"nope": "1"}},
            },
            metadata=md,
        ),
    }


def test_refusals_are_the_same_over_rest_and_grpc(served, project):
    answers = {}
    for kind in TRANSPORTS:
        answers[kind] = {name: refusal(call) for name, call in _bad_calls(clients(kind, served), project).items()}
    assert answers["grpc"] == answers["rest"]
    statuses = {name: status for name, (status, _) in answers["grpc"].items()}
    assert statuses["unknown job"] == "NOT_FOUND" and statuses["bad project"] == "INVALID_ARGUMENT"
    assert statuses["dynamic template"] == "UNIMPLEMENTED"
    assert set(statuses.values()) == {"NOT_FOUND", "INVALID_ARGUMENT", "UNIMPLEMENTED"}, answers["grpc"]


# -- gRPC's own: the async clients, what REST has no counterpart for, bad bytes -------------------------------------


def test_the_async_clients_over_grpc_aio(served, project):
    async def scenario() -> None:
        channel = grpc.aio.insecure_channel(served.grpc_address)
        jobs = dataflow.JobsV1Beta3AsyncClient(transport=JobsV1Beta3GrpcAsyncIOTransport(channel=channel))
        messages = dataflow.MessagesV1Beta3AsyncClient(transport=MessagesV1Beta3GrpcAsyncIOTransport(channel=channel))
        metrics = dataflow.MetricsV1Beta3AsyncClient(transport=MetricsV1Beta3GrpcAsyncIOTransport(channel=channel))
        at = {"project_id": project, "location": REGION}
        created = await jobs.create_job(request={**at, "job": {"name": "async-job"}})
        assert (await jobs.get_job(request={**at, "job_id": created.id})).name == "async-job"
        assert [j.id async for j in await jobs.list_jobs(request=at)] == [created.id]
        assert (await jobs.check_active_jobs(request={"project_id": project})).active_jobs_exist
        cancelled = await jobs.update_job(
            request={**at, "job_id": created.id, "job": {"requested_state": "JOB_STATE_CANCELLED"}}
        )
        assert cancelled.current_state == dataflow.JobState.JOB_STATE_CANCELLED
        assert not (await jobs.check_active_jobs(request={"project_id": project})).active_jobs_exist
        texts = [m.message_text async for m in await messages.list_job_messages(request={**at, "job_id": created.id})]
        assert any("Cancel request" in text for text in texts)
        assert (await metrics.get_job_metrics(request={**at, "job_id": created.id})).metric_time.year >= 2026
        with pytest.raises(gexc.NotFound):
            await jobs.get_job(request={**at, "job_id": UNKNOWN_JOB})
        await channel.close()

    asyncio.run(scenario())


def test_bad_bytes_and_oversized_requests_are_refused_not_crashed_on(tmp_path, project):
    srv = GrpcServer(tmp_path / "data", extra=(*API_ONLY, "--max-request-bytes", "100000")).start()
    try:
        channel = grpc.insecure_channel(srv.grpc_address)
        get_job = channel.unary_unary("/google.dataflow.v1beta3.JobsV1Beta3/GetJob")
        with pytest.raises(grpc.RpcError) as malformed:
            get_job(b"\x0a\xff\xff\xff")
        assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        huge = dataflow.GetJobRequest(project_id=project, job_id="x" * 200_000)
        with pytest.raises(grpc.RpcError) as too_large:
            get_job(dataflow.GetJobRequest.serialize(huge))
        assert too_large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        nul = dataflow.ListJobsRequest(project_id=project, location=REGION, page_token="a\x00b")
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary("/google.dataflow.v1beta3.JobsV1Beta3/ListJobs")(
                dataflow.ListJobsRequest.serialize(nul)
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "NUL" in refused.value.details()
        unknown_enum = dataflow.ListJobsRequest(project_id=project, location=REGION)._pb
        unknown_enum.filter = 99
        with pytest.raises(grpc.RpcError) as refused:
            channel.unary_unary("/google.dataflow.v1beta3.JobsV1Beta3/ListJobs")(unknown_enum.SerializeToString())
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'filter'" in refused.value.details()
        # The server is still there.
        jobs = dataflow.JobsV1Beta3Client(transport=JobsV1Beta3GrpcTransport(channel=channel))
        assert list(jobs.list_jobs(request={"project_id": project, "location": REGION})) == []
    finally:
        srv.stop()


JUNK_STRINGS = ["", "-", "x" * 300, "../../etc/passwd", "a\x00b", "Ünïcode", "2020-01-01_00_00_00-1", "gs://b/o"]


def _junk_request(message_class, rng: random.Random):
    """A request of the type with each top-level field set, or not, to a junk value of its type."""
    message = message_class()
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3 or field.is_repeated:
            continue
        if field.type == FieldDescriptor.TYPE_STRING:
            setattr(message, field.name, rng.choice(JUNK_STRINGS + ["test-junk", "us-central1"]))
        elif field.type == FieldDescriptor.TYPE_ENUM:
            setattr(message, field.name, rng.choice([0, 1, 2, 99, -1]))
        elif field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
            setattr(message, field.name, rng.choice([0, -1, 1, 2**31 - 1]))
        elif field.type == FieldDescriptor.TYPE_BOOL:
            setattr(message, field.name, rng.random() < 0.5)
        elif field.message_type.full_name == "google.protobuf.Timestamp":
            getattr(message, field.name).seconds = rng.choice([0, -62135596800, 253402300799, 1])
    return message


def test_junk_requests_to_every_method_are_answered_never_crashed_on(served):
    """Random bytes and junk field values: every method answers with a status of its own (never INTERNAL or
    UNKNOWN), and the server goes on answering."""
    from beamport.grpc.server import SERVICES

    rng = random.Random(17)
    channel = grpc.insecure_channel(served.grpc_address)
    seen = set()
    for service, methods in SERVICES:
        for method in methods:
            call = channel.unary_unary(f"/google.dataflow.v1beta3.{service}/{method.name}")
            requests = [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64))) for _ in range(5)]
            requests += [_junk_request(method.request.pb(), rng).SerializeToString() for _ in range(15)]
            for data in requests:
                try:
                    call(data, timeout=60)
                    seen.add("OK")
                except grpc.RpcError as error:
                    assert error.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
                        method.name,
                        data,
                        error.details(),
                    )
                    seen.add(error.code().name)
    assert {"INVALID_ARGUMENT", "OK"} <= seen
    jobs = dataflow.JobsV1Beta3Client(transport=JobsV1Beta3GrpcTransport(channel=channel))
    assert list(jobs.list_jobs(request={"project_id": "test-junk-after", "location": REGION})) == []


def test_every_rpc_of_the_clients_is_served():
    """Every RPC google-cloud-dataflow-client's gRPC clients call has a method here (gapic_metadata.json)."""
    import google.cloud.dataflow_v1beta3 as package

    from beamport.grpc.server import SERVICES

    declared = json.loads((Path(package.__file__).parent / "gapic_metadata.json").read_text())["services"]
    wanted = {(service, rpc) for service, spec in declared.items() for rpc in spec["clients"]["grpc"]["rpcs"]}
    served = {(service, method.name) for service, methods in SERVICES for method in methods}
    assert served == wanted


# -- security, as REST: the same credentials, permissions, audit ------------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    base = tmp_path_factory.mktemp("grpc-auth")
    srv = GrpcServer(base / "data", auth=True, extra=("--workers", "0", "--allow-path", str(base))).start()
    yield srv, base, Admin(srv)
    srv.stop()


def _token(key: Path) -> str:
    return bearer(key)["Authorization"].removeprefix("Bearer ")


def test_authentication_and_permissions_are_the_same_over_rest_and_grpc(secured, project):
    srv, base, admin = secured
    _, viewer_key = admin.account(project, "grpc-viewer", VIEWER, base)
    _, developer_key = admin.account(project, "grpc-developer", DEVELOPER, base)
    viewer, developer = _token(viewer_key), _token(developer_key)
    answers = {}
    for kind in TRANSPORTS:
        job = admin.job(project, f"watched-{kind}")
        where = {"project_id": project, "location": REGION, "job_id": job["id"]}
        cancel = {**where, "job": {"requested_state": "JOB_STATE_CANCELLED"}}
        nobody, bad, looker = clients(kind, srv), clients(kind, srv, "not-a-token"), clients(kind, srv, viewer)
        answers[kind] = [
            refusal(lambda c=nobody, w=where: c.jobs.get_job(request=w, metadata=c.metadata)),
            refusal(lambda c=bad, w=where: c.jobs.get_job(request=w, metadata=c.metadata)),
            refusal(lambda c=looker, r=cancel: c.jobs.update_job(request=r, metadata=c.metadata)),
            refusal(
                lambda c=looker: c.jobs.create_job(
                    request={"project_id": project, "location": REGION, "job": {"name": "nope"}}, metadata=c.metadata
                )
            ),
            refusal(
                lambda c=looker, w=where: c.jobs.get_job(
                    request={**w, "project_id": project + "-other"}, metadata=c.metadata
                )
            ),
        ]
        # The viewer reads; the developer cancels.
        assert looker.jobs.get_job(request=where, metadata=looker.metadata).name == f"watched-{kind}"
        dev = clients(kind, srv, developer)
        cancelled = dev.jobs.update_job(request=cancel, metadata=dev.metadata)
        assert cancelled.current_state == dataflow.JobState.JOB_STATE_CANCELLED
    assert answers["grpc"] == answers["rest"]
    assert [status for status, _ in answers["grpc"]] == [
        "UNAUTHENTICATED",
        "UNAUTHENTICATED",
        "PERMISSION_DENIED",
        "PERMISSION_DENIED",
        "PERMISSION_DENIED",
    ]
    assert "dataflow.jobs.update" in answers["grpc"][2][1] and "dataflow.jobs.create" in answers["grpc"][3][1]
    # Audited as REST audits: refusals, and changes with their caller.
    entries = [e["protoPayload"] for e in admin.audit(project)]
    grpc_entries = [e for e in entries if not e["resourceName"].startswith("/")]
    assert {(e["methodName"], e["status"].get("code")) for e in grpc_entries} >= {
        ("dataflow.jobs.update", 7),  # the viewer's cancel: PERMISSION_DENIED
        ("dataflow.jobs.get", 16),  # no credentials: UNAUTHENTICATED
        ("dataflow.jobs.update", None),  # the developer's cancel: OK
    }
    watched = next(e for e in grpc_entries if e["methodName"] == "dataflow.jobs.update" and not e["status"])
    assert watched["resourceName"].startswith(f"projects/{project}/locations/{REGION}/jobs/")
    assert watched["authenticationInfo"]["principalEmail"].startswith("grpc-developer@")
    assert watched["requestMetadata"]["callerIp"] == "127.0.0.1"


# -- a real run ------------------------------------------------------------------------------------------------------


def _run_to_end(c: Clients, at: dict, job_id: str) -> dataflow.Job:
    """The job once it ended, followed over gRPC (asked again until then)."""
    terminal = {
        dataflow.JobState.JOB_STATE_DONE,
        dataflow.JobState.JOB_STATE_FAILED,
        dataflow.JobState.JOB_STATE_CANCELLED,
    }
    deadline = time.monotonic() + 300
    while (job := c.jobs.get_job(request={**at, "job_id": job_id})).current_state not in terminal:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    texts = [m.message_text for m in c.messages.list_job_messages(request={**at, "job_id": job_id})]
    assert job.current_state == dataflow.JobState.JOB_STATE_DONE, texts
    return job


@pytest.mark.slow
def test_templates_classic_and_flex_launched_over_grpc_run_to_done(tmp_path, project):
    srv = GrpcServer(tmp_path / "data", extra=("--workers", "1", "--allow-path", str(tmp_path))).start()
    try:
        (tmp_path / "words.txt").write_text("the cat and the hat\nthe end\n")
        c = clients("grpc", srv)
        at = {"project_id": project, "location": REGION}
        described = c.templates.get_template(request={**at, "gcs_path": "builtin://Word_Count"})
        assert [p.name for p in described.metadata.parameters] == ["inputFile", "output"]
        launched = c.templates.launch_template(
            request={
                **at,
                "gcs_path": "builtin://Word_Count",
                "launch_parameters": {
                    "job_name": "wc-over-grpc",
                    "parameters": {"inputFile": str(tmp_path / "words.txt"), "output": str(tmp_path / "counts")},
                },
            }
        )
        _run_to_end(c, at, launched.job.id)
        assert read_output(tmp_path / "counts") == sorted(["the: 3", "cat: 1", "and: 1", "hat: 1", "end: 1"])
        # What a run leaves, read back over gRPC: the whole job (steps, environment), metrics, execution details.
        ran = {**at, "job_id": launched.job.id}
        whole = c.jobs.get_job(request={**ran, "view": "JOB_VIEW_ALL"})
        assert whole.steps and whole.environment.sdk_pipeline_options
        assert c.metrics.get_job_metrics(request=ran).metrics
        stages = list(c.metrics.get_job_execution_details(request=ran))
        assert stages and all(stage.state for stage in stages)
        workers = c.metrics.get_stage_execution_details(request={**ran, "stage_id": stages[0].stage_id})
        assert list(workers)

        created = c.templates.create_job_from_template(
            request={
                **at,
                "gcs_path": "builtin://Word_Count",
                "job_name": "wc-created-over-grpc",
                "parameters": {"inputFile": str(tmp_path / "words.txt"), "output": str(tmp_path / "again")},
            }
        )
        _run_to_end(c, at, created.id)
        assert read_output(tmp_path / "again") == read_output(tmp_path / "counts")

        # A flex template (YAML) launched over gRPC: its launcher runs as the caller and submits the job.
        (tmp_path / "pipeline.yaml").write_text(YAML_PIPELINE)
        (tmp_path / "in.txt").write_text("world\nthere\n")
        spec = tmp_path / "yaml-spec.json"
        beamport_command("templates", "build-flex", str(spec), "--yaml-pipeline-file", str(tmp_path / "pipeline.yaml"))
        flex = c.flex.launch_flex_template(
            request={
                **at,
                "launch_parameter": {
                    "job_name": "yaml-over-grpc",
                    "container_spec_gcs_path": str(spec),
                    "parameters": {
                        "input": str(tmp_path / "in.txt"),
                        "output": str(tmp_path / "yaml" / "out"),
                        "greeting": "hey",
                    },
                },
            }
        )
        _run_to_end(c, at, flex.job.id)
        assert read_output(tmp_path / "yaml" / "out") == ["hey there", "hey world"]
    finally:
        srv.stop()
