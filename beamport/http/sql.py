"""projects.locations.sql.validate."""

from __future__ import annotations

from starlette.requests import Request

from beamport.http.protocol import api, call, location_param, project_param


@api
async def validate(request: Request) -> dict:
    project, location = project_param(request), location_param(request)
    return await call(request.app.state.sql.validate, project, location, request.query_params.get("query"))
