"""Google REST conventions shared by every endpoint: system parameters, bodies, JSON answers."""

from __future__ import annotations

import logging

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from beamport.errors import ApiError, invalid_argument
from beamport.http.fields import parse_fields, select
from beamport.service.model import DEFAULT_LOCATION
from beamport.service.model import LOCATION_RE as _LOCATION_RE
from beamport.service.model import PROJECT_ID_RE as _PROJECT_RE
from beamport.service.model import RESOURCE_ID_RE as _ID_RE
from beamport.wire import MAX_JSON_DEPTH, deeper_than, too_deep

log = logging.getLogger(__name__)

JSON_TYPE = "application/json; charset=UTF-8"


class SystemParams:
    """Query parameters any Google API call may carry: alt, $.xgafv, fields, prettyPrint, key..."""

    __slots__ = ("pretty", "fields")

    def __init__(self, request: Request):
        query_string = request.scope.get("query_string", b"")
        if b"%00" in query_string:  # a NUL arrives percent-encoded or not at all
            _refuse_nul(request.query_params)
        if b"%00" in request.scope.get("raw_path", b""):
            raise invalid_argument("Invalid path: NUL characters are not allowed.")
        if not query_string:  # nothing to parse: the defaults
            self.pretty, self.fields = True, None
            return
        query = request.query_params
        alt = query.get("$alt") or query.get("alt") or "json"
        if alt.split(";", 1)[0] != "json":
            raise invalid_argument(f"Unsupported alt value {alt!r}: this server answers in JSON only (alt=json).")
        xgafv = query.get("$.xgafv")
        if xgafv not in (None, "1", "2"):
            raise invalid_argument(f"Invalid value at 'xgafv' ($.xgafv), \"{xgafv}\"")
        self.pretty = query.get("prettyPrint", "true").lower() not in ("false", "0")
        fields = query.get("fields") or query.get("$fields")
        self.fields = parse_fields(fields) if fields else None


def _refuse_nul(query) -> None:
    """No parameter takes a NUL character (nor does a path): not a file name, an id, a filter, a database
    text."""
    for name, value in query.multi_items():
        if "\x00" in name or "\x00" in value:
            shown = name.replace("\x00", "\\x00")[:100]
            raise invalid_argument(f"Invalid value at '{shown}': NUL characters are not allowed.")


def json_response(data: dict, params: SystemParams | None = None, status: int = 200) -> Response:
    if params is not None and params.fields is not None:
        data = select(data, params.fields)
    option = orjson.OPT_INDENT_2 if params is None or params.pretty else 0
    return Response(orjson.dumps(data, option=option), status_code=status, media_type=JSON_TYPE)


def error_response(error: ApiError) -> Response:
    return Response(
        orjson.dumps(error.to_dict(), option=orjson.OPT_INDENT_2), status_code=error.code, media_type=JSON_TYPE
    )


def api(handler):
    """Wrap an endpoint: system parameters, Google-style errors, JSON answer."""

    async def endpoint(request: Request) -> Response:
        try:
            params = SystemParams(request)
            return json_response(await handler(request), params)
        except ApiError as error:
            return error_response(error)

    endpoint.__name__ = handler.__name__
    return endpoint


async def call(function, *args, **kwargs):
    """Run a (blocking) service call off the event loop."""
    return await run_in_threadpool(function, *args, **kwargs)


async def read(request: Request, function, *args, **kwargs):
    """Run a read-only service call: on the event loop itself when the store's reads never wait (SQLite in
    WAL mode: a read neither takes a lock nor waits for one, and its pages are in memory), else like call().

    Handing each call to a thread costs more than the read: the GIL passes between threads on different
    cores at every call, which halved jobs.get's throughput (benchmarks/README.md).
    """
    if request.app.state.inline_reads:
        return function(*args, **kwargs)
    return await run_in_threadpool(function, *args, **kwargs)


async def read_json(request: Request) -> dict:
    """The request body as a JSON object; refuses bodies over the limit without reading them whole."""
    limit = request.app.state.settings.max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise invalid_argument("Invalid Content-Length header")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        return {}
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise too_deep() from None
        raise invalid_argument(f"Invalid JSON payload received. {exc}") from None
    if not isinstance(data, dict):
        raise invalid_argument(
            f"Invalid JSON payload received. The request body must be a JSON object, not {type(data).__name__}."
        )
    # Every JSON route reads its body here: none nests deeper than wire.MAX_JSON_DEPTH (orjson itself stops at
    # 1024). Only a body with more brackets than the limit can be deeper (counted at C speed).
    if body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH and deeper_than(data):
        raise too_deep()
    return data


def _too_large(limit: int) -> ApiError:
    return invalid_argument(f"Request payload size exceeds the limit: {limit} bytes.")


def project_param(request: Request) -> str:
    project = request.path_params["projectId"]
    if not _PROJECT_RE.match(project):
        raise invalid_argument(f"Invalid project id {project!r}")
    return project


def location_param(request: Request, body: dict | None = None, any_location: bool = False) -> str:
    """The call's location: the path's; on a location-less twin (`projects/{p}/jobs...`), the `location` query
    parameter (the discovery document lists it on the twins of jobs, messages, metrics, snapshots and
    templates), else the `location` field of a request body that has one (WorkerMessages, templates.create,
    workItems), else the default region, as Dataflow's twins do. `any_location`: `-` (every location) too."""
    location = request.path_params.get("location")
    if location is None:
        location = request.query_params.get("location") or None
    if location is None and body is not None:
        location = body.get("location") or None
        if location is not None and not isinstance(location, str):
            raise invalid_argument(f"Invalid value at 'location' (TYPE_STRING), {orjson.dumps(location).decode()}")
    if location is None:
        location = DEFAULT_LOCATION
    if any_location and location == "-":  # the worker protocol's wildcard: every location
        return location
    if not _LOCATION_RE.match(location):
        raise invalid_argument(f"Invalid location {location!r}")
    return location


def project_query_param(request: Request, name: str = "projectId") -> str | None:
    """A project id given as a query parameter (None when absent), checked as path ones are."""
    project = request.query_params.get(name)
    if not project:
        return None
    if not _PROJECT_RE.match(project):
        raise invalid_argument(f"Invalid {name} {project!r}")
    return project


def id_query_param(request: Request, name: str) -> str | None:
    """An id given as a query parameter (None when absent), checked as path ids are."""
    value = request.query_params.get(name)
    if not value:
        return None
    if not _ID_RE.match(value):
        raise invalid_argument(f"Invalid {name} {value!r}")
    return value


def id_param(request: Request, name: str) -> str:
    value = request.path_params[name]
    if not _ID_RE.match(value):
        raise invalid_argument(f"Invalid {name} {value!r}")
    return value


def int_param(request: Request, name: str) -> int:
    value = request.query_params.get(name)
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except ValueError:
        raise invalid_argument(f"Invalid value at '{name}' (TYPE_INT32), \"{value}\"") from None


def api_off_loop(handler):
    """Like api(), for calls whose answers may be large (lists, a whole job, metrics): the handler checks the
    request on the event loop and returns a function of no arguments (or a dict, answered as api() does).
    Calling that function (the service's read) and rendering its answer (JSON, `fields`) both run in the
    thread pool, so that no other request waits while a large answer is built."""

    async def endpoint(request: Request) -> Response:
        try:
            params = SystemParams(request)
            answer = await handler(request)
            if callable(answer):
                return await run_in_threadpool(lambda: json_response(answer(), params))
            return json_response(answer, params)
        except ApiError as error:
            return error_response(error)

    endpoint.__name__ = handler.__name__
    return endpoint
