"""The run of a job: metrics, execution details, and the work-item protocol of workers."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request

from beamport import wire
from beamport.http.auth import principal_of
from beamport.http.protocol import api, api_off_loop, call, id_param, location_param, project_param, read, read_json


def _details(request: Request):
    return request.app.state.execution_details


def _leases(request: Request):
    return request.app.state.leases


@api_off_loop
async def get_metrics(request: Request):
    """A job's metrics: as many as its pipeline reports (read and rendered off the event loop)."""
    start = wire.parse_timestamp_us(request.query_params.get("startTime"), "startTime")
    project, location, job_id = project_param(request), location_param(request), id_param(request, "jobId")
    return lambda: _details(request).get_metrics(project, location, job_id, start)


@api_off_loop
async def execution_details(request: Request):
    project, location, job_id = project_param(request), location_param(request), id_param(request, "jobId")
    return lambda: _details(request).execution_details(project, location, job_id)


@api_off_loop
async def stage_execution_details(request: Request):
    project, location, job_id = project_param(request), location_param(request), id_param(request, "jobId")
    stage_id = request.path_params["stageId"]
    return lambda: _details(request).stage_execution_details(project, location, job_id, stage_id)


LEASE_WAIT_S = 2.0


def _or_any(request: Request, name: str, parse) -> str:
    """`-` (AIP-159's wildcard) or a valid value: a worker may lease the work of any job."""
    return "-" if request.path_params.get(name) == "-" else parse(request)


@api
async def lease(request: Request) -> dict:
    project = _or_any(request, "projectId", project_param)
    job_id = _or_any(request, "jobId", lambda r: id_param(r, "jobId"))
    body = await read_json(request)
    location = location_param(request, body, any_location=True)  # a twin's may be in its body, `-` included
    if job_id != "-":
        return await call(_leases(request).lease, project, location, job_id, body)
    # A worker leases only the work of projects it is bound to (every project: None).
    projects = None
    if project == "-":
        principal = await principal_of(request)
        projects = await read(request, request.app.state.iam.projects_with, principal, "dataflow.workItems.lease")
    # A worker asking for any job's work waits here (up to LEASE_WAIT_S) for work to appear, woken when a
    # job is created or work is put back, instead of polling: idle workers cost the server next to nothing,
    # and a new job is leased at once.
    deadline = time.monotonic() + LEASE_WAIT_S
    while True:
        available = request.app.state.work_available
        answer = await call(_leases(request).lease, project, location, job_id, body, projects)
        remaining = deadline - time.monotonic()
        if answer or remaining <= 0:
            return answer
        try:
            await asyncio.wait_for(available.wait(), remaining)
        except TimeoutError:
            pass


@api
async def report_status(request: Request) -> dict:
    project, job_id = project_param(request), id_param(request, "jobId")
    body = await read_json(request)
    location = location_param(request, body)
    return await call(_leases(request).report_status, project, location, job_id, body)
