"""Bodies checked against Dataflow's discovery document: the messages google-cloud-dataflow-client has no
protobuf type for (work items, worker messages, counter updates...), and template launches.

The document ships with google-api-python-client. The rule is the one of beamport.wire: a field may be named
by its JSON name or its proto field name (not both), unknown names are dropped, a known field with a value of
the wrong type (or an enum name the schema does not list, or a malformed int64 / timestamp / duration) is
INVALID_ARGUMENT. Enums go by name only here: these bodies come
from workers and discovery clients, which send names.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import googleapiclient

from beamport import wire
from beamport.errors import invalid_argument

_DOCUMENT = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "dataflow.v1b3.json"
_DURATION_RE = re.compile(r"-?\d+(\.\d{1,9})?s\Z")
_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1)}
_STRING_INT_RANGES = {"int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1)}


@functools.cache
def _schemas() -> dict:
    return json.loads(_DOCUMENT.read_text())["schemas"]


@functools.cache
def _names(schema_name: str) -> dict[str, str]:
    """Each name a field of the named schema may arrive under -> its name in the schema (the JSON name).

    The proto field names come from the protobuf message of the same name where google-cloud-dataflow-client has
    one (templates, flex templates, their environments); the worker protocol's messages have none, so theirs are
    the JSON names spelled back the way protoc derives a JSON name (`reportStatusInterval` from
    `report_status_interval`), which is exact for every name of theirs (none has a digit or two capitals in a
    row: tests/test_bad_input.py checks)."""
    properties = _schemas()[schema_name].get("properties") or {}
    known = wire.proto_names(schema_name) or {}
    names = {}
    for json_name in properties:
        names[json_name] = json_name
        names[known.get(json_name) or _derived_proto_name(json_name)] = json_name
    return names


def _derived_proto_name(json_name: str) -> str:
    return re.sub(r"[A-Z]", lambda upper: "_" + upper.group().lower(), json_name)


def check(data, schema_name: str, what: str = "body"):
    """Return `data` as the named schema accepts it: fields under their JSON names, unknown names dropped, int64
    rendered as strings."""
    if not isinstance(data, dict):
        raise invalid_argument(f"Invalid JSON payload received. Expected an object for {what}.")
    return _check(data, {"$ref": schema_name}, (what,))


def _fail(path: tuple, detail: str):
    raise invalid_argument(f"Invalid JSON payload received. Invalid value at '{_path_text(path)}': {detail}")


def _path_text(path: tuple) -> str:
    # Paths are built as nested tuples (parent, step) and spelled out only for an error message.
    steps = []
    while len(path) == 2:
        path, step = path
        steps.append(step)
    return path[0] + "".join(reversed(steps))


def _check(value, schema: dict, path: tuple):
    ref = schema.get("$ref")
    if ref is not None:
        schema = _schemas()[ref]
    kind = schema.get("type", "any")
    if value is None or kind == "any":
        return value
    if kind == "object":
        if not isinstance(value, dict):
            _fail(path, "expected an object")
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        names = _names(ref) if ref is not None else {name: name for name in properties}
        out = {}
        given: dict[str, str] = {}  # JSON name -> the name it came under
        for key, item in value.items():
            name = names.get(key)
            if name is not None:
                if name in given:
                    raise wire.duplicate_field(_path_text(path), given[name], key)
                given[name] = key
                out[name] = _check(item, properties[name], (path, f".{key}"))
            elif extra is not None:
                out[key] = _check(item, extra, (path, f"[{key!r}]"))
            # else: an unknown name, dropped
        return out
    if kind == "array":
        if not isinstance(value, list):
            _fail(path, "expected a list")
        items = schema["items"]
        return [_check(item, items, (path, f"[{i}]")) for i, item in enumerate(value)]
    if kind == "boolean":
        if not isinstance(value, bool):
            _fail(path, "expected true or false")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if not (isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity")):
                _fail(path, "expected a number")
        return value
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, "expected an integer")
        low, high = _INT_RANGES.get(schema.get("format", ""), (-(2**31), 2**31 - 1))
        if not low <= value <= high:
            _fail(path, f"{value} is out of range")
        return value
    if kind == "string":
        return _check_string(value, schema, path)
    return value


def _check_string(value, schema: dict, path: tuple):
    fmt = schema.get("format")
    if fmt in _STRING_INT_RANGES:
        # Google's JSON mapping writes 64-bit integers as strings, and accepts numbers too.
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, "expected a 64-bit integer")
        low, high = _STRING_INT_RANGES[fmt]
        if not low <= value <= high:
            _fail(path, f"{value} is out of range")
        return str(value)
    if not isinstance(value, str):
        _fail(path, "expected a string")
    if fmt == "google-duration" and not _DURATION_RE.match(value):
        _fail(path, f'{value!r} is not a duration such as "3.5s"')
    if fmt == "google-datetime" and not _DATETIME_RE.match(value):
        _fail(path, f"{value!r} is not an RFC 3339 timestamp")
    enum = schema.get("enum")
    if enum and value not in enum:
        _fail(path, f"{value!r} is not one of {', '.join(enum)}")
    return value
