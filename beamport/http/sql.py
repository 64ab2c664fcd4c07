"""projects.locations.sql.validate (Dataflow's), and Beamport's own SQL calls, outside /v1b3: the table
catalog and SQL queries run as jobs (Dataflow has no such calls; gcloud's `dataflow sql query` launched a
template)."""

from __future__ import annotations

from starlette.requests import Request

from beamport.errors import invalid_argument
from beamport.http.protocol import api, call, location_param, project_param, read_json


def _service(request: Request):
    return request.app.state.sql


def _table_name(request: Request) -> str:
    name = request.path_params["name"]
    if not name or len(name) > 128:
        raise invalid_argument("Invalid table name")
    return name


@api
async def validate(request: Request) -> dict:
    project, location = project_param(request), location_param(request)
    return await call(_service(request).validate, project, location, request.query_params.get("query"))


@api
async def list_tables(request: Request) -> dict:
    return await call(_service(request).list_tables, project_param(request))


@api
async def add_table(request: Request) -> dict:
    project = project_param(request)
    body = await read_json(request)
    return await call(_service(request).add_table, project, body)


@api
async def get_table(request: Request) -> dict:
    return await call(_service(request).get_table, project_param(request), _table_name(request))


@api
async def delete_table(request: Request) -> dict:
    return await call(_service(request).delete_table, project_param(request), _table_name(request))


@api
async def query(request: Request) -> dict:
    project, location = project_param(request), location_param(request)
    body = await read_json(request)
    return await call(_service(request).query, project, location, body)
