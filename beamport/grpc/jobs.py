"""JobsV1Beta3 (create, get, list, aggregated, update, checkActiveJobs, snapshot) and MessagesV1Beta3 -> JobService,
SnapshotService; the same calls as http/jobs.py and http/snapshots.py make."""

from __future__ import annotations

from google.cloud import dataflow_v1beta3 as dataflow

from beamport.errors import invalid_argument
from beamport.grpc.rpc import Method, body, job_id, location, location_or_none, project, timestamp_us
from beamport.service import model
from beamport.service.quotas import MAX_JOB_REQUEST_BYTES

_ACTIVE = model.ListJobsFilter.values_by_name["ACTIVE"].number


def create_job(services, request, caller) -> dict:
    # Dataflow's limit on a job request, as REST refuses a body over it (service/quotas.py).
    if request.ByteSize() > MAX_JOB_REQUEST_BYTES:
        raise invalid_argument(f"Request payload size exceeds the limit: {MAX_JOB_REQUEST_BYTES} bytes.")
    return services.jobs.create_job(
        project(request), location(request), body(request.job), request.replace_job_id or None, request.view
    )


def get_job(services, request, caller) -> dict:
    return services.jobs.get_job(project(request), location(request), job_id(request), request.view)


def _list_jobs(services, request, where: str | None) -> dict:
    return services.jobs.list_jobs(
        project(request),
        where,
        filter=request.filter,
        view=request.view,
        name=request.name or None,
        page_size_=request.page_size,
        page_token=request.page_token or None,
    )


def list_jobs(services, request, caller) -> dict:
    return _list_jobs(services, request, location(request))


def aggregated_list_jobs(services, request, caller) -> dict:
    """The project's jobs in every location."""
    return _list_jobs(services, request, None)


def check_active_jobs(services, request, caller) -> dict:
    """Whether the project has an active job in any location (a list of one active job)."""
    found = services.jobs.list_jobs(project(request), None, filter=_ACTIVE, page_size_=1)
    return {"activeJobsExist": bool(found.get("jobs"))}


def update_job(services, request, caller) -> dict:
    mask = ",".join(request.update_mask.paths) if request.HasField("update_mask") else None
    return services.jobs.update_job(project(request), location(request), job_id(request), body(request.job), mask)


def snapshot_job(services, request, caller) -> dict:
    # No location: the service reads the request's own (it is a field of the body REST sends), else us-central1.
    return services.snapshots.snapshot_job(project(request), location_or_none(request), job_id(request), body(request))


def list_job_messages(services, request, caller) -> dict:
    return services.jobs.list_messages(
        project(request),
        location(request),
        job_id(request),
        minimum_importance=request.minimum_importance,
        start_us=timestamp_us(request, "start_time"),
        end_us=timestamp_us(request, "end_time"),
        page_size_=request.page_size,
        page_token=request.page_token or None,
    )


JOBS = "JobsV1Beta3"
JOBS_METHODS = [
    Method(
        "CreateJob", dataflow.CreateJobRequest, dataflow.Job, "dataflow.jobs.create", create_job, changes_state=True
    ),
    Method("GetJob", dataflow.GetJobRequest, dataflow.Job, "dataflow.jobs.get", get_job),
    Method(
        "UpdateJob", dataflow.UpdateJobRequest, dataflow.Job, "dataflow.jobs.update", update_job, changes_state=True
    ),
    Method("ListJobs", dataflow.ListJobsRequest, dataflow.ListJobsResponse, "dataflow.jobs.list", list_jobs),
    Method(
        "AggregatedListJobs",
        dataflow.ListJobsRequest,
        dataflow.ListJobsResponse,
        "dataflow.jobs.list",
        aggregated_list_jobs,
    ),
    Method(
        "CheckActiveJobs",
        dataflow.CheckActiveJobsRequest,
        dataflow.CheckActiveJobsResponse,
        "dataflow.jobs.list",
        check_active_jobs,
    ),
    Method(
        "SnapshotJob",
        dataflow.SnapshotJobRequest,
        dataflow.Snapshot,
        "dataflow.jobs.snapshot",
        snapshot_job,
        changes_state=True,
    ),
]

MESSAGES = "MessagesV1Beta3"
MESSAGES_METHODS = [
    Method(
        "ListJobMessages",
        dataflow.ListJobMessagesRequest,
        dataflow.ListJobMessagesResponse,
        "dataflow.messages.list",
        list_job_messages,
    ),
]
