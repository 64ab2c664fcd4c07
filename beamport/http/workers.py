"""Workers: the WorkerMessages channel, debug.getWorkerStacktraces, and Beamport's own registry view.

`/beamport/v1/workers` is not part of Dataflow's API (Dataflow has no call that lists workers): it is
Beamport's, for its CLI and console, and lives outside /v1b3 so that nobody mistakes it for Dataflow's.
"""

from __future__ import annotations

from starlette.requests import Request

from beamport.errors import invalid_argument
from beamport.http.auth import principal_of
from beamport.http.protocol import (
    api,
    call,
    id_param,
    location_param,
    project_param,
    project_query_param,
    read,
    read_json,
)


def _registry(request: Request):
    return request.app.state.workers


@api
async def worker_messages(request: Request) -> dict:
    project, body = project_param(request), await read_json(request)
    location = location_param(request, body)
    return await call(_registry(request).worker_messages, project, location, body)


@api
async def get_worker_stacktraces(request: Request) -> dict:
    project, location, job_id = project_param(request), location_param(request), id_param(request, "jobId")
    body = await read_json(request)
    return await call(_registry(request).stacktraces, project, location, job_id, body)


@api
async def list_workers(request: Request) -> dict:
    job_id = request.query_params.get("jobId") or None
    if job_id is not None and not job_id.replace("-", "").replace("_", "").isalnum():
        raise invalid_argument(f"Invalid jobId {job_id!r}")
    include_gone = request.query_params.get("all", "false").lower() in ("1", "true")
    # projectId, location: that project's (location's) workers, and those that serve no job yet.
    project = project_query_param(request)
    location = location_param(request) if request.query_params.get("location") else None
    projects = await _visible_projects(request, "dataflow.workers.list")
    # In the thread pool: a long list reads each live worker's work item too.
    return await call(
        _registry(request).list_workers, job_id, include_gone, projects=projects, project_id=project, location=location
    )


@api
async def get_worker(request: Request) -> dict:
    worker_id = request.path_params["workerId"]
    if not worker_id or len(worker_id) > 256:
        raise invalid_argument("Invalid workerId")
    projects = await _visible_projects(request, "dataflow.workers.get")
    return await read(request, _registry(request).get_worker, worker_id, projects)


async def _visible_projects(request: Request, permission: str) -> set[str] | None:
    """The projects whose workers the caller may see (None: every project's)."""
    principal = await principal_of(request)
    return await read(request, request.app.state.iam.projects_with, principal, permission)
