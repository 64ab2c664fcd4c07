"""projects.[locations.]templates (classic templates: get, launch, create) and flexTemplates.launch."""

from __future__ import annotations

from starlette.requests import Request

from beamport.errors import invalid_argument
from beamport.http.auth import principal_of
from beamport.http.protocol import api, call, location_param, project_param, read_json


def _service(request: Request):
    return request.app.state.templates


def _bool_param(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0", ""):
        raise invalid_argument(f"Invalid value at '{name}' (TYPE_BOOL), \"{value}\"")
    return value in ("true", "1")


@api
async def get(request: Request) -> dict:
    q = request.query_params
    return await call(
        _service(request).get, project_param(request), location_param(request), q.get("gcsPath"), q.get("view")
    )


@api
async def launch(request: Request) -> dict:
    project, location = project_param(request), location_param(request)
    q = request.query_params
    dynamic = bool(q.get("dynamicTemplate.gcsPath") or q.get("dynamicTemplate.stagingLocation"))
    body = await read_json(request)
    return await call(
        _service(request).launch,
        project,
        location,
        q.get("gcsPath"),
        _bool_param(request, "validateOnly"),
        body,
        dynamic,
    )


@api
async def create(request: Request) -> dict:
    project, body = project_param(request), await read_json(request)
    location = location_param(request, body)
    return await call(_service(request).create, project, location, body)


@api
async def launch_flex(request: Request) -> dict:
    project, location = project_param(request), location_param(request)
    body = await read_json(request)
    principal = await principal_of(request)
    # In the thread pool: the launch waits for the template's launcher to submit its job (as the caller).
    return await call(request.app.state.flex_templates.launch, project, location, body, principal)
