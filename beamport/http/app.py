"""The HTTP layer: routes of the Dataflow v1b3 REST API onto the service layer, nothing more."""

from __future__ import annotations

import asyncio
import logging
import socket
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.convertors import PathConvertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from beamport.console import STATIC
from beamport.errors import ApiError
from beamport.http import execution, iam, jobs, snapshots, sql, templates, workers
from beamport.http.auth import allow, path_project
from beamport.http.guard import BrowserGuard
from beamport.http.protocol import error_response
from beamport.http.unimplemented import NO_DEBUG, not_yet

log = logging.getLogger(__name__)

P = "/v1b3/projects/{projectId}"
L = P + "/locations/{location}"


def _twins(path: str, endpoint, methods: list[str], permission: str) -> list[Route]:
    """A method under projects.locations and its location-less twin under projects (us-central1)."""
    guarded = allow(permission, endpoint)
    return [Route(L + path, guarded, methods=methods), Route(P + path, guarded, methods=methods)]


def _route(path: str, endpoint, methods: list[str], permission: str, on=path_project) -> Route:
    return Route(path, allow(permission, endpoint, on), methods=methods)


BP = "/beamport/v1"
IAM = "/v1/projects/{projectId}/serviceAccounts"


def routes() -> list[BaseRoute]:
    # Order matters: ":verb" paths before the plain {jobId} paths they would also match. Every API route
    # names the permission it needs (service/roles.py); only the token endpoint, the console's pages and
    # its sign-in link are open.
    debug = "dataflow.jobs.debug"
    table = [
        _route(P + "/jobs:aggregated", jobs.aggregated, ["GET"], "dataflow.jobs.list"),
        *_twins("/jobs/{jobId}:snapshot", snapshots.snapshot_job, ["POST"], "dataflow.jobs.snapshot"),
        *_twins("/jobs/{jobId}/workItems:lease", execution.lease, ["POST"], "dataflow.workItems.lease"),
        *_twins("/jobs/{jobId}/workItems:reportStatus", execution.report_status, ["POST"], "dataflow.workItems.update"),
        *_twins("/jobs/{jobId}/debug/getConfig", not_yet("jobs.debug.getConfig", NO_DEBUG), ["POST"], debug),
        *_twins("/jobs/{jobId}/debug/sendCapture", not_yet("jobs.debug.sendCapture", NO_DEBUG), ["POST"], debug),
        _route(L + "/jobs/{jobId}/debug/getWorkerStacktraces", workers.get_worker_stacktraces, ["POST"], debug),
        _route(L + "/jobs/{jobId}/executionDetails", execution.execution_details, ["GET"], "dataflow.jobs.get"),
        _route(
            L + "/jobs/{jobId}/stages/{stageId}/executionDetails",
            execution.stage_execution_details,
            ["GET"],
            "dataflow.jobs.get",
        ),
        _route(L + "/jobs/{jobId}/snapshots", snapshots.list_job_snapshots, ["GET"], "dataflow.snapshots.list"),
        *_twins("/jobs/{jobId}/messages", jobs.list_messages, ["GET"], "dataflow.messages.list"),
        *_twins("/jobs/{jobId}/metrics", execution.get_metrics, ["GET"], "dataflow.metrics.get"),
        *_twins("/jobs/{jobId}", jobs.get, ["GET"], "dataflow.jobs.get"),
        *_twins("/jobs/{jobId}", jobs.update, ["PUT"], "dataflow.jobs.update"),
        *_twins("/jobs", jobs.list_, ["GET"], "dataflow.jobs.list"),
        *_twins("/jobs", jobs.create, ["POST"], "dataflow.jobs.create"),
        *_twins("/WorkerMessages", workers.worker_messages, ["POST"], "dataflow.workItems.sendMessage"),
        *_twins("/snapshots/{snapshotId}", snapshots.get, ["GET"], "dataflow.snapshots.get"),
        _route(L + "/snapshots/{snapshotId}", snapshots.delete, ["DELETE"], "dataflow.snapshots.delete"),
        *_twins("/snapshots", snapshots.list_, ["GET"], "dataflow.snapshots.list"),
        _route(P + "/snapshots", snapshots.delete_snapshots, ["DELETE"], "dataflow.snapshots.delete"),
        *_twins("/templates:get", templates.get, ["GET"], "dataflow.templates.get"),
        *_twins("/templates:launch", templates.launch, ["POST"], "dataflow.jobs.create"),
        *_twins("/templates", templates.create, ["POST"], "dataflow.jobs.create"),
        _route(L + "/flexTemplates:launch", templates.launch_flex, ["POST"], "dataflow.jobs.create"),
        _route(L + "/sql:validate", sql.validate, ["GET"], "dataflow.sql.validate"),
        # Beamport's own (not Dataflow's): a job's pipeline as it was submitted, for its workers.
        _route(
            BP + "/projects/{projectId}/locations/{location}/jobs/{jobId}/pipeline",
            jobs.kept_pipeline,
            ["GET"],
            "dataflow.jobs.getPipeline",
        ),
        # Beamport's own: the projects that have jobs, for the console (each caller sees those it may list jobs in).
        _route(BP + "/projects", jobs.list_projects, ["GET"], "dataflow.jobs.list"),
        # Beamport's own: the job state machine, for the console (whoever may view some project's jobs).
        _route(BP + "/jobStates", jobs.state_machine, ["GET"], "dataflow.jobs.get"),
        # Beamport's own: the worker registry (each caller sees the workers of projects it may view).
        _route(BP + "/workers", workers.list_workers, ["GET"], "dataflow.workers.list"),
        _route(BP + "/workers/{workerId:path}", workers.get_worker, ["GET"], "dataflow.workers.get"),
        # Beamport's own: the SQL table catalog and SQL jobs (docs/sql.md).
        _route(BP + "/projects/{projectId}/sqlTables", sql.list_tables, ["GET"], "dataflow.sqlTables.list"),
        _route(BP + "/projects/{projectId}/sqlTables", sql.add_table, ["POST"], "dataflow.sqlTables.create"),
        _route(BP + "/projects/{projectId}/sqlTables/{name}", sql.get_table, ["GET"], "dataflow.sqlTables.get"),
        _route(
            BP + "/projects/{projectId}/sqlTables/{name}", sql.delete_table, ["DELETE"], "dataflow.sqlTables.delete"
        ),
        _route(
            BP + "/projects/{projectId}/locations/{location}/sql:query", sql.query, ["POST"], "dataflow.jobs.create"
        ),
        # Identity and access (docs/security.md): IAM v1 and Resource Manager v1 shapes, the audit log.
        _route(IAM, iam.create_account, ["POST"], "iam.serviceAccounts.create"),
        _route(IAM, iam.list_accounts, ["GET"], "iam.serviceAccounts.list"),
        _route(IAM + "/{email}", iam.get_account, ["GET"], "iam.serviceAccounts.get", on=iam.account_project),
        _route(IAM + "/{email}", iam.delete_account, ["DELETE"], "iam.serviceAccounts.delete", on=iam.account_project),
        _route(
            IAM + "/{email}/keys", iam.create_key, ["POST"], "iam.serviceAccountKeys.create", on=iam.account_project
        ),
        _route(IAM + "/{email}/keys", iam.list_keys, ["GET"], "iam.serviceAccountKeys.list", on=iam.account_project),
        _route(
            IAM + "/{email}/keys/{keyId}",
            iam.delete_key,
            ["DELETE"],
            "iam.serviceAccountKeys.delete",
            on=iam.account_project,
        ),
        _route(
            "/v1/projects/{projectId}:getIamPolicy",
            iam.get_project_policy,
            ["POST"],
            "resourcemanager.projects.getIamPolicy",
        ),
        _route(
            "/v1/projects/{projectId}:setIamPolicy",
            iam.set_project_policy,
            ["POST"],
            "resourcemanager.projects.setIamPolicy",
        ),
        _route(
            "/v1/organizations/{organizationId}:getIamPolicy",
            iam.get_organization_policy,
            ["POST"],
            "resourcemanager.projects.getIamPolicy",
            on=iam.organization,
        ),
        _route(
            "/v1/organizations/{organizationId}:setIamPolicy",
            iam.set_organization_policy,
            ["POST"],
            "resourcemanager.projects.setIamPolicy",
            on=iam.organization,
        ),
        _route(BP + "/projects/{projectId}/auditLogs", iam.list_project_audit, ["GET"], "logging.logEntries.list"),
        _route(BP + "/auditLogs", iam.list_all_audit, ["GET"], "logging.logEntries.list", on=iam.organization),
        Route("/token", iam.token, methods=["POST"]),
        Route("/revoke", iam.revoke, methods=["POST"]),
        Route(BP + "/session", iam.whoami, methods=["GET"]),
        Route(BP + "/session", iam.sign_out, methods=["DELETE"]),
        Route(BP + "/session:link", iam.sign_in_link, methods=["POST"]),
        # The web console: static pages over the same API (they hold no data; the API calls they make do).
        Route("/console/signin", iam.sign_in, methods=["GET"]),
        Route("/", _console, methods=["GET"]),
        Mount("/console", StaticFiles(directory=STATIC), name="console"),
    ]
    return table


class DepthRouter(Router):
    """Starlette's router, which tries every route in order for each request, trying only the routes that can
    match a path of its depth (its number of slashes): the same first match, found among a few routes instead
    of dozens (jobs.get was the 20th of 72; the scan took 16 us of its ~85 us in the application). A path no
    route of its depth matches fully (a 404, a 405, a redirect) goes through Starlette's whole scan."""

    def __init__(self, routes, **kwargs):
        super().__init__(routes, **kwargs)
        depths = {_route_depth(r) for r in self.routes} - {None}
        self._any_depth = [(r, "") for r in self.routes if _route_depth(r) is None]
        self._by_depth = {
            d: [(r, _literal_tail(r)) for r in self.routes if _route_depth(r) in (d, None)] for d in depths
        }

    async def app(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path = scope["path"]
            for route, tail in self._by_depth.get(path.count("/"), self._any_depth):
                if not path.endswith(tail):  # e.g. a `:snapshot` route for jobs.get's path: no regex needed
                    continue
                match, child_scope = route.matches(scope)
                if match is Match.FULL:
                    scope.setdefault("router", self)
                    scope["route"] = route
                    scope.update(child_scope)
                    await route.handle(scope, receive, send)
                    return
        await super().app(scope, receive, send)


def _literal_tail(route) -> str:
    """What every path the route matches ends with: its path's text after the last parameter ('' for a mount
    or a route ending in a parameter)."""
    if not isinstance(route, Route) or route.path_format.endswith("}"):
        return ""
    return route.path_format.rsplit("}", 1)[-1]


def _route_depth(route) -> int | None:
    """The number of slashes in every path the route matches; None: any number (a mount, a `:path` parameter)."""
    if not isinstance(route, Route) or any(isinstance(c, PathConvertor) for c in route.param_convertors.values()):
        return None
    return route.path_format.count("/")


class ErrorAnswers:
    """Every exception a request raises, answered in Google's error format: the work of Starlette's two
    exception layers (ServerErrorMiddleware outside the middleware, ExceptionMiddleware inside it) in one, at
    the outside, since Beamport's middleware raises nothing of its own (each of Starlette's layers wraps every
    request in a Request and a wrapper around `send`: ~4 us of jobs.get's ~50 in the application). An
    exception after the answer has started cannot be answered: it goes to the server, as Starlette does."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sender(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, sender)
        except Exception as exc:
            if started:
                raise
            request = Request(scope)
            if isinstance(exc, ApiError):
                response = error_response(exc)
            elif isinstance(exc, HTTPException):
                response = await _http_error(request, exc)
            else:
                response = await _internal_error(request, exc)
            await response(scope, receive, send)
            exc.__traceback__ = None  # a reused exception instance would keep every traceback


class Api(Starlette):
    """The application: Starlette with the DepthRouter, its exception layers replaced by ErrorAnswers."""

    def __init__(self, *, routes, lifespan, middleware):
        super().__init__(routes=routes, lifespan=lifespan)
        self.router = DepthRouter(routes, lifespan=lifespan)
        self._middleware = middleware

    def build_middleware_stack(self):
        app = self.router
        for cls, args, kwargs in reversed(self._middleware):
            app = cls(app, *args, **kwargs)
        return ErrorAnswers(app)


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
    settings,
    jobs_service,
    lease_service,
    execution_details,
    worker_registry,
    template_service,
    flex_service,
    sql_service,
    snapshot_service,
    iam_service,
    on_startup=(),
    on_shutdown=(),
) -> Starlette:
    @asynccontextmanager
    async def lifespan(app):
        loop = asyncio.get_running_loop()
        app.state.work_available = asyncio.Event()

        def wake() -> None:  # on the loop: wake every waiting lease, then wait anew
            app.state.work_available.set()
            app.state.work_available = asyncio.Event()

        for notifier in {id(n): n for n in (jobs_service.work, lease_service.work)}.values():
            notifier.subscribe(lambda: loop.call_soon_threadsafe(wake))
        for start in on_startup:
            start()
        yield
        for stop in on_shutdown:
            stop()
        jobs_service.close()

    app = Api(
        routes=routes(),
        middleware=[
            Middleware(
                BrowserGuard, allowed_hosts=frozenset([*settings.allowed_hosts, settings.host, socket.gethostname()])
            )
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.jobs = jobs_service
    app.state.leases = lease_service
    app.state.execution_details = execution_details
    app.state.workers = worker_registry
    app.state.templates = template_service
    app.state.flex_templates = flex_service
    app.state.sql = sql_service
    app.state.snapshots = snapshot_service
    app.state.iam = iam_service
    app.state.inline_reads = jobs_service.reads_never_wait
    return app
