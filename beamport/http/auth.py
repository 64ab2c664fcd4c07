"""Who calls, and may they: every route of the API is wrapped with the permission it needs.

The caller is named by a bearer token (an access token from the token endpoint, or a JWT self-signed with a
service-account key) or, for the console, by its session cookie, whose state-changing calls must also carry
the session's CSRF token. The permission is checked on the project in the path; refusals and state changes
go to the audit log. The decisions themselves are the IAM service's (service/iam.py).
"""

from __future__ import annotations

import hmac

import orjson
from starlette.requests import Request
from starlette.responses import Response

from beamport.errors import ApiError
from beamport.http.protocol import call, error_response, read
from beamport.service.iam import Principal

SESSION_COOKIE = "beamport_session"  # + "_PORT": browsers share a host's cookies across its ports
CSRF_HEADER = "x-csrf-token"
PRINCIPAL = "beamport.principal"  # where the caller is kept in the request's scope
# The worker protocol's calls come every few seconds from every worker: audited only when refused (as Cloud
# Audit Logs keeps them out of admin activity).
_NOT_AUDITED = frozenset(
    {
        "dataflow.workItems.lease",
        "dataflow.workItems.update",
        "dataflow.workItems.sendMessage",
        "resourcemanager.projects.getIamPolicy",
    }
)  # a read, though a POST


async def principal_of(request: Request) -> Principal | None:
    """The authenticated caller (cached in the request), None if it sent no credentials; raises UNAUTHENTICATED
    for invalid ones and PERMISSION_DENIED for a console call without its CSRF token."""
    if PRINCIPAL in request.scope:
        return request.scope[PRINCIPAL]
    iam = request.app.state.iam
    header = request.headers.get("authorization")
    principal = iam.cached(header)
    if principal is None and (header or not iam.enabled):
        principal = await read(request, iam.authenticate, header, request.headers.get("host", ""))
    elif principal is None and session_cookie(request) in request.cookies:
        principal = iam.session(request.cookies[session_cookie(request)])
        if principal is not None and request.method not in ("GET", "HEAD"):
            if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), principal.csrf):
                raise ApiError("PERMISSION_DENIED", "A console request that changes state must carry its CSRF token.")
    request.scope[PRINCIPAL] = principal
    return principal


def session_cookie(request: Request) -> str:
    """The console session's cookie name on this server (one per port, so that two servers on one host keep
    their sessions apart)."""
    return f"{SESSION_COOKIE}_{request.url.port or (443 if request.url.scheme == 'https' else 80)}"


def path_project(request: Request) -> str | None:
    return request.path_params.get("projectId")


def allow(permission: str, endpoint, on=path_project) -> Guarded:
    """The endpoint, answered only to callers that hold `permission` on the resource `on(request)` names: the
    path's project by default (`-`: some project, the endpoint narrowing what it answers to those)."""
    return Guarded(permission, endpoint, on)


class Guarded:
    """An endpoint behind its permission check. An ASGI application, so that Starlette's route calls it
    directly rather than through its per-route wrapper (a second Request and exception layer per request;
    http/app.py's ErrorAnswers answers what it raises)."""

    def __init__(self, permission: str, endpoint, on):
        self.permission, self.endpoint, self.on = permission, endpoint, on
        self.audited = permission not in _NOT_AUDITED
        self.__name__ = getattr(endpoint, "__name__", "endpoint")

    async def __call__(self, scope, receive, send) -> None:
        response = await self.answer(Request(scope, receive, send))
        await response(scope, receive, send)

    async def answer(self, request: Request) -> Response:
        iam, permission = request.app.state.iam, self.permission
        principal = None
        project = request.path_params.get("projectId")
        try:
            principal = await principal_of(request)
            if principal is None:  # refused before anything is looked up for it
                iam.authorize(None, permission, project)
            project = self.on(request) if self.on is path_project else await read(request, self.on, request)
            job_id = request.path_params.get("jobId")
            if iam.decides_at_once(principal, project):  # cached: no thread hop (PostgreSQL's reads take one)
                iam.authorize(principal, permission, project, job_id)
            else:
                await read(request, iam.authorize, principal, permission, project, job_id)
        except ApiError as error:
            await _audit(request, principal, permission, project, error.status, error.message)
            return error_response(error)
        response = await self.endpoint(request)
        if self.audited and request.method not in ("GET", "HEAD"):
            status, message = "OK", ""
            if response.status_code != 200:
                answered = orjson.loads(response.body).get("error", {})
                status, message = answered.get("status", "UNKNOWN"), answered.get("message", "")
            await _audit(request, principal, permission, project, status, message)
        return response


async def _audit(request: Request, principal, method: str, project, status: str, message: str) -> None:
    client = request.client.host if request.client else ""
    await call(request.app.state.iam.audit, principal, method, project or "", request.url.path, status, message, client)
