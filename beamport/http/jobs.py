"""projects.[locations.]jobs: create, get, list, aggregated, update, messages.list, getMetrics."""

from __future__ import annotations

from functools import partial

from starlette.requests import Request
from starlette.responses import Response

from beamport import job_states, wire
from beamport.errors import ApiError, invalid_argument
from beamport.http.auth import principal_of
from beamport.http.protocol import (
    api,
    api_off_loop,
    call,
    error_response,
    id_param,
    int_param,
    location_param,
    project_param,
    read,
    read_json,
)
from beamport.service import model
from beamport.service.quotas import MAX_JOB_REQUEST_BYTES


def _service(request: Request):
    return request.app.state.jobs


def _view(request: Request) -> int:
    if not request.scope.get("query_string"):  # no parameters to parse (Starlette would parse an empty string)
        return model.VIEW_UNKNOWN
    return wire.parse_enum(request.query_params.get("view"), model.JobView, "view")


@api
async def create(request: Request) -> dict:
    project, location = project_param(request), location_param(request)
    view = _view(request)
    # Dataflow's limit on a job request, refused from its declared length before it is read (a chunked body is
    # read up to --max-request-bytes, and the job it makes checked against the limit: service/quotas.py).
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_JOB_REQUEST_BYTES:
        raise invalid_argument(f"Request payload size exceeds the limit: {MAX_JOB_REQUEST_BYTES} bytes.")
    body = await read_json(request)
    replace = request.query_params.get("replaceJobId")
    return await call(_service(request).create_job, project, location, body, replace, view)


@api_off_loop
async def get(request: Request):
    project, location = project_param(request), location_param(request)
    job_id = id_param(request, "jobId")
    view = _view(request)
    if view in (model.VIEW_ALL, model.VIEW_DESCRIPTION):  # the whole job (steps, environment): up to 20 MB
        return lambda: _service(request).get_job(project, location, job_id, view)
    # A summary is small (its fields are bounded: service/quotas.py): read on the event loop where reads never
    # wait (benchmarks/README.md: a thread per call halved jobs.get's throughput).
    return await read(request, _service(request).get_job, project, location, job_id, view)


def _list(request: Request, location: str | None):
    """A list of jobs: up to 1,000 summaries, read and rendered off the event loop (api_off_loop)."""
    q = request.query_params
    return partial(
        _service(request).list_jobs,
        project_param(request),
        location,
        filter=wire.parse_enum(q.get("filter"), model.ListJobsFilter, "filter"),
        view=_view(request),
        name=q.get("name"),
        page_size_=int_param(request, "pageSize"),
        page_token=q.get("pageToken"),
        create_from_us=wire.parse_timestamp_us(q.get("createTimeRange.startTime"), "createTimeRange.startTime"),
        create_to_us=wire.parse_timestamp_us(q.get("createTimeRange.endTime"), "createTimeRange.endTime"),
        end_from_us=wire.parse_timestamp_us(q.get("terminationTimeRange.startTime"), "terminationTimeRange.startTime"),
        end_to_us=wire.parse_timestamp_us(q.get("terminationTimeRange.endTime"), "terminationTimeRange.endTime"),
    )


@api_off_loop
async def list_(request: Request):
    return _list(request, location_param(request))


@api_off_loop
async def aggregated(request: Request):
    """jobs:aggregated lists the project's jobs in every location."""
    return _list(request, None)


@api
async def update(request: Request) -> dict:
    project, location = project_param(request), location_param(request)
    job_id = id_param(request, "jobId")
    body = await read_json(request)
    mask = request.query_params.get("updateMask")
    return await call(_service(request).update_job, project, location, job_id, body, mask)


@api_off_loop
async def list_messages(request: Request):
    q = request.query_params
    return partial(
        _service(request).list_messages,
        project_param(request),
        location_param(request),
        id_param(request, "jobId"),
        minimum_importance=wire.parse_enum(q.get("minimumImportance"), model.JobMessageImportance, "minimumImportance"),
        start_us=wire.parse_timestamp_us(q.get("startTime"), "startTime"),
        end_us=wire.parse_timestamp_us(q.get("endTime"), "endTime"),
        page_size_=int_param(request, "pageSize"),
        page_token=q.get("pageToken"),
    )


async def kept_pipeline(request: Request) -> Response:
    """Beamport's own: the pipeline proto a job was created with (its workers run this, not the staged file,
    which a later submission may have replaced)."""
    try:
        project, location = project_param(request), location_param(request)
        job_id = id_param(request, "jobId")
        data = await call(_service(request).kept_pipeline, project, location, job_id)
    except ApiError as error:
        return error_response(error)
    return Response(data, media_type="application/x-protobuf")


@api
async def list_projects(request: Request) -> dict:
    """Beamport's own: the projects that have jobs, newest job first, of those the caller may list jobs in (the
    console's choice of project)."""
    principal = await principal_of(request)
    projects = await read(request, request.app.state.iam.projects_with, principal, "dataflow.jobs.list")
    return await read(request, _service(request).list_projects, projects)


@api
async def state_machine(request: Request) -> dict:
    """Beamport's own: the job states, their transitions and the actions each state offers (job_states.py),
    for the console."""
    return job_states.describe()
