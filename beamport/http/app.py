"""The HTTP layer: routes of the Dataflow v1b3 REST API onto the service layer, nothing more."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from beamport.console import STATIC
from beamport.errors import ApiError
from beamport.http import execution, jobs, snapshots, sql, templates, workers
from beamport.http.protocol import error_response
from beamport.http.unimplemented import NO_DEBUG, not_yet

log = logging.getLogger(__name__)

P = "/v1b3/projects/{projectId}"
L = P + "/locations/{location}"


def _twins(path: str, endpoint, methods: list[str]) -> list[Route]:
    """A method under projects.locations and its location-less twin under projects (us-central1)."""
    return [Route(L + path, endpoint, methods=methods), Route(P + path, endpoint, methods=methods)]


def routes() -> list[Route]:
    # Order matters: ":verb" paths before the plain {jobId} paths they would also match.
    table = [
        Route(P + "/jobs:aggregated", jobs.aggregated, methods=["GET"]),
        *_twins("/jobs/{jobId}:snapshot", snapshots.snapshot_job, ["POST"]),
        *_twins("/jobs/{jobId}/workItems:lease", execution.lease, ["POST"]),
        *_twins("/jobs/{jobId}/workItems:reportStatus", execution.report_status, ["POST"]),
        *_twins("/jobs/{jobId}/debug/getConfig", not_yet("jobs.debug.getConfig", NO_DEBUG), ["POST"]),
        *_twins("/jobs/{jobId}/debug/sendCapture", not_yet("jobs.debug.sendCapture", NO_DEBUG), ["POST"]),
        Route(L + "/jobs/{jobId}/debug/getWorkerStacktraces", workers.get_worker_stacktraces, methods=["POST"]),
        Route(L + "/jobs/{jobId}/executionDetails", execution.execution_details, methods=["GET"]),
        Route(L + "/jobs/{jobId}/stages/{stageId}/executionDetails", execution.stage_execution_details, methods=["GET"]),
        Route(L + "/jobs/{jobId}/snapshots", snapshots.list_job_snapshots, methods=["GET"]),
        *_twins("/jobs/{jobId}/messages", jobs.list_messages, ["GET"]),
        *_twins("/jobs/{jobId}/metrics", execution.get_metrics, ["GET"]),
        *_twins("/jobs/{jobId}", jobs.get, ["GET"]),
        *_twins("/jobs/{jobId}", jobs.update, ["PUT"]),
        *_twins("/jobs", jobs.list_, ["GET"]),
        *_twins("/jobs", jobs.create, ["POST"]),
        *_twins("/WorkerMessages", workers.worker_messages, ["POST"]),
        *_twins("/snapshots/{snapshotId}", snapshots.get, ["GET"]),
        Route(L + "/snapshots/{snapshotId}", snapshots.delete, methods=["DELETE"]),
        *_twins("/snapshots", snapshots.list_, ["GET"]),
        Route(P + "/snapshots", snapshots.delete_snapshots, methods=["DELETE"]),
        *_twins("/templates:get", templates.get, ["GET"]),
        *_twins("/templates:launch", templates.launch, ["POST"]),
        *_twins("/templates", templates.create, ["POST"]),
        Route(L + "/flexTemplates:launch", templates.launch_flex, methods=["POST"]),
        Route(L + "/sql:validate", sql.validate, methods=["GET"]),
        # Beamport's own (not Dataflow's): a job's pipeline as it was submitted, for its workers.
        Route("/beamport/v1/projects/{projectId}/locations/{location}/jobs/{jobId}/pipeline", jobs.kept_pipeline,
              methods=["GET"]),  # fmt: skip
        # Beamport's own: the worker registry.
        Route("/beamport/v1/workers", workers.list_workers, methods=["GET"]),
        Route("/beamport/v1/workers/{workerId:path}", workers.get_worker, methods=["GET"]),
        # Beamport's own: the SQL table catalog and SQL jobs (docs/sql.md).
        Route("/beamport/v1/projects/{projectId}/sqlTables", sql.list_tables, methods=["GET"]),
        Route("/beamport/v1/projects/{projectId}/sqlTables", sql.add_table, methods=["POST"]),
        Route("/beamport/v1/projects/{projectId}/sqlTables/{name}", sql.get_table, methods=["GET"]),
        Route("/beamport/v1/projects/{projectId}/sqlTables/{name}", sql.delete_table, methods=["DELETE"]),
        Route("/beamport/v1/projects/{projectId}/locations/{location}/sql:query", sql.query, methods=["POST"]),
        # The web console: static pages over the same API.
        Route("/", _console, methods=["GET"]),
        Mount("/console", StaticFiles(directory=STATIC), name="console"),
    ]
    return table


async def _console(request: Request):
    return FileResponse(STATIC / "index.html")


async def _http_error(request: Request, exc: HTTPException):
    if exc.status_code == 405:
        error = ApiError("NOT_FOUND", f"Method {request.method} is not defined for {request.url.path}.")
    elif exc.status_code == 404:
        error = ApiError("NOT_FOUND", f"The requested URL {request.url.path} was not found on this server.")
    else:
        error = ApiError("INVALID_ARGUMENT", str(exc.detail))
    return error_response(error)


async def _internal_error(request: Request, exc: Exception):
    log.exception("internal error answering %s %s", request.method, request.url.path)
    return error_response(ApiError("INTERNAL", "Internal error encountered."))


def create_app(
    settings, jobs_service, execution_service, worker_registry, template_service, flex_service, sql_service,
    snapshot_service, on_startup=(), on_shutdown=(),
) -> Starlette:  # fmt: skip
    @asynccontextmanager
    async def lifespan(app):
        loop = asyncio.get_running_loop()
        app.state.work_available = asyncio.Event()

        def wake() -> None:  # on the loop: wake every waiting lease, then wait anew
            app.state.work_available.set()
            app.state.work_available = asyncio.Event()

        for notifier in {id(n): n for n in (jobs_service.work, execution_service.work)}.values():
            notifier.subscribe(lambda: loop.call_soon_threadsafe(wake))
        for start in on_startup:
            start()
        yield
        for stop in on_shutdown:
            stop()
        jobs_service.close()

    app = Starlette(
        routes=routes(),
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.jobs = jobs_service
    app.state.execution = execution_service
    app.state.workers = worker_registry
    app.state.templates = template_service
    app.state.flex_templates = flex_service
    app.state.sql = sql_service
    app.state.snapshots = snapshot_service
    app.state.inline_reads = jobs_service.reads_never_wait
    return app
