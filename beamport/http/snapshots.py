"""projects.[locations.]snapshots (get, list, delete), jobs.snapshot, jobs.snapshots.list and
projects.deleteSnapshots -> SnapshotService."""

from __future__ import annotations

from starlette.requests import Request

from beamport.http.protocol import (
    api,
    api_off_loop,
    call,
    id_param,
    id_query_param,
    location_param,
    project_param,
    read,
    read_json,
)


def _service(request: Request):
    return request.app.state.snapshots


@api
async def snapshot_job(request: Request) -> dict:
    project = project_param(request)
    # The location-less twin names the location in its body (SnapshotJobRequest.location): the service reads it.
    location = location_param(request) if "location" in request.path_params else None
    job_id = id_param(request, "jobId")
    body = await read_json(request)
    # In the thread pool: the call waits (up to ~30 s) for the engine's savepoint.
    return await call(_service(request).snapshot_job, project, location, job_id, body)


@api_off_loop
async def list_job_snapshots(request: Request):
    """Lists are unpaged (as on Dataflow): read and rendered off the event loop."""
    project, location = project_param(request), location_param(request)
    job_id = id_param(request, "jobId")
    return lambda: _service(request).list_snapshots(project, location, job_id)


@api_off_loop
async def list_(request: Request):
    project, location = project_param(request), location_param(request)
    job_id = id_query_param(request, "jobId")
    return lambda: _service(request).list_snapshots(project, location, job_id)


@api
async def get(request: Request) -> dict:
    project, location = project_param(request), location_param(request)
    snapshot_id = id_param(request, "snapshotId")
    return await read(request, _service(request).get_snapshot, project, location, snapshot_id)


@api
async def delete(request: Request) -> dict:
    project, location = project_param(request), location_param(request)
    snapshot_id = id_param(request, "snapshotId")
    return await call(_service(request).delete_snapshot, project, location, snapshot_id)


@api
async def delete_snapshots(request: Request) -> dict:
    """projects.deleteSnapshots: DELETE /v1b3/projects/{projectId}/snapshots?snapshotId=&location="""
    project, location = project_param(request), location_param(request)
    snapshot_id = id_query_param(request, "snapshotId")
    return await call(_service(request).delete_snapshot, project, location, snapshot_id)
