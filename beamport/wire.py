"""Google's JSON mapping for Dataflow's messages (the protobuf types of google-cloud-dataflow-client).

The rule for incoming JSON, applied to every request body:
- A field may be named by its JSON name (lowerCamel, `jobName`) or by its proto field name (`job_name`), at any
  depth, as proto3's JSON mapping says parsers must accept; naming one field both ways in one object is
  INVALID_ARGUMENT (`duplicate_field`). Keys of map fields and free-form JSON (Struct) are data, never renamed.
  Bodies without a protobuf type (beamport.schema) follow the same rule, with the names from `proto_names`.
- Unknown field names are dropped, at any depth. Clients built from a newer
  schema than ours (Beam, google-api-python-client's discovery documents,
  GAPIC) must keep working, so unknown names are not an error.
- A known field with a value of the wrong type, an enum name or number that the
  enum does not define, or a malformed timestamp/duration/int64 is
  INVALID_ARGUMENT, and nothing is changed.
- Enums may arrive as names or integers; answers always carry names, int64 as
  strings, timestamps in RFC 3339, durations as "3.5s" (json_format's output).
"""

from __future__ import annotations

import functools
import logging
import re
import time
from datetime import UTC, datetime, timedelta

from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from beamport.errors import ApiError, invalid_argument

log = logging.getLogger(__name__)

# How deep a JSON value may nest (objects and lists; the value itself is level 1). Request bodies deeper are
# refused as they are read (http/protocol.py), and so is any other JSON made into a message (a template's
# file): parsing and rendering a message recurse once or twice per level (json_format, a Struct's values), so
# the limit keeps them far from Python's. Beam's job body, the deepest a real client sends, is ~10 deep.
MAX_JSON_DEPTH = 100


def deeper_than(value, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests objects and lists more than `limit` levels (walked with a stack)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def too_deep(what: str = "body") -> ApiError:
    return invalid_argument(
        f"Invalid JSON payload received. The {what} nests objects and lists deeper than {MAX_JSON_DEPTH} levels, "
        "the limit."
    )


# Fields of these types carry free-form JSON or a scalar-like JSON form: not walked.
_OPAQUE_TYPES = {
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Any",
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.Empty",
}


def _fields_by_json_key(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """Each name a field of `descriptor` may arrive under (its JSON name and its proto field name) -> the field."""
    cached = _FIELDS_CACHE.get(descriptor.full_name)
    if cached is None:
        cached = {}
        for field in descriptor.fields:
            cached[field.name] = field
            cached[field.json_name] = field
        _FIELDS_CACHE[descriptor.full_name] = cached
    return cached


_FIELDS_CACHE: dict[str, dict[str, FieldDescriptor]] = {}


@functools.cache
def proto_names(message_name: str) -> dict[str, str] | None:
    """Dataflow's protobuf message `message_name` (google.dataflow.v1beta3.NAME): its fields' JSON names -> their
    proto field names, from the message's own descriptor; None if google-cloud-dataflow-client has no such
    message (the worker protocol's, which only the discovery document describes)."""
    # Imported here, not at the top: most users of this module never need Dataflow's whole client library.
    import google.cloud.dataflow_v1beta3  # noqa: F401  # registers Dataflow's messages in the default pool

    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(f"google.dataflow.v1beta3.{message_name}")
    except KeyError:
        return None
    return {field.json_name: field.name for field in descriptor.fields}


def duplicate_field(path: str, first: str, second: str) -> ApiError:
    """One field named twice in one object, by its JSON name and by its proto field name. Protobuf's conformance
    suite allows refusing it or keeping the later one (JsonInput.FieldNameDuplicateDifferentCasing); refused,
    since either may be what the client meant (json_format alone would keep the later one silently)."""
    where = f" at '{path}'" if path else ""
    return invalid_argument(
        f'Invalid JSON payload received. Duplicate field{where}: "{first}" and "{second}" name the same field.'
    )


def _drop_unknown(value, descriptor: Descriptor, path: str, dropped: list[str]):
    """Return a copy of the JSON object `value` with names unknown to `descriptor` removed.

    Not json_format's ignore_unknown_fields=True: that also drops enum names the enum does not define
    (`"type": "JOB_TYPE_NOPE"` parses as no type at all), which Dataflow refuses. Unknown names are dropped
    here, and the strict parse that follows refuses such enum names."""
    if not isinstance(value, dict):
        return value  # json_format reports the type error with a precise message
    known = _fields_by_json_key(descriptor)
    out = {}
    seen: dict[int, str] = {}  # field number -> the name it came under
    for key, item in value.items():
        field = known.get(key)
        if field is None:
            dropped.append(f"{path}.{key}" if path else key)
            continue
        if field.number in seen:
            raise duplicate_field(path, seen[field.number], key)
        seen[field.number] = key
        if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name not in _OPAQUE_TYPES:
            child = field.message_type
            if child.GetOptions().map_entry:
                value_field = child.fields_by_name["value"]
                if (
                    isinstance(item, dict)
                    and value_field.type == FieldDescriptor.TYPE_MESSAGE
                    and value_field.message_type.full_name not in _OPAQUE_TYPES
                ):
                    item = {
                        k: _drop_unknown(v, value_field.message_type, f"{path}.{key}[{k}]", dropped)
                        for k, v in item.items()
                    }
            elif field.is_repeated and isinstance(item, list):
                item = [_drop_unknown(v, child, f"{path}.{key}[{i}]", dropped) for i, v in enumerate(item)]
            else:
                item = _drop_unknown(item, child, f"{path}.{key}" if path else key, dropped)
        out[key] = item
    return out


def _check_enums(message: Message, path: str) -> None:
    """Refuse enum numbers the enum does not define (proto3 enums would keep them silently)."""
    for field, value in message.ListFields():
        # types-protobuf's FieldDescriptor lacks json_name (set by its constructor).
        name = f"{path}.{field.json_name}" if path else field.json_name  # type: ignore[attr-defined]
        if field.type == FieldDescriptor.TYPE_ENUM:
            values = value if field.is_repeated else [value]
            for number in values:
                if field.enum_type.values_by_number.get(number) is None:
                    raise invalid_argument(
                        f"Invalid value at '{name}' (type.googleapis.com/{field.enum_type.full_name}), {number}"
                    )
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name not in _OPAQUE_TYPES:
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                    for key, item in value.items():
                        _check_enums(item, f"{name}[{key}]")
            elif field.is_repeated:
                for i, item in enumerate(value):
                    _check_enums(item, f"{name}[{i}]")
            else:
                _check_enums(value, name)


def parse_message(data, message_class, what: str = "body"):
    """Parse a JSON value into a new protobuf message (raw pb class), following the module rule."""
    if not isinstance(data, dict):
        raise invalid_argument(
            f"Invalid JSON payload received. Expected an object for {what}, got {type(data).__name__}."
        )
    if deeper_than(data):  # not only request bodies come here: a template's file, say
        raise too_deep(what)
    message = message_class()
    dropped: list[str] = []
    cleaned = _drop_unknown(data, message.DESCRIPTOR, "", dropped)
    try:
        json_format.ParseDict(cleaned, message)
    except json_format.ParseError as exc:
        raise invalid_argument(f"Invalid JSON payload received. {exc}") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. out-of-range numbers
        raise invalid_argument(f"Invalid JSON payload received. {exc}") from None
    _check_enums(message, "")
    if dropped:
        log.debug("ignored unknown fields in %s: %s", what, ", ".join(dropped))
    return message


def to_dict(message: Message) -> dict:
    """Google's JSON form of a message: camelCase names, enum names, int64 as strings."""
    return json_format.MessageToDict(message)


def parse_enum(value: str | None, descriptor, param: str, default: int = 0) -> int:
    """Parse an enum (given its EnumDescriptor) by name or number, as a query parameter may carry it."""
    if value is None or value == "":
        return default
    found = descriptor.values_by_name.get(value)
    if found is None and value.lstrip("-").isdigit():
        found = descriptor.values_by_number.get(int(value))
    if found is None:
        raise invalid_argument(f"Invalid value at '{param}' (type.googleapis.com/{descriptor.full_name}), \"{value}\"")
    return found.number


# 2026-11-27T10:00:00Z, 2026-11-27T10:00:00.123Z, 2026-11-27T10:00:00.123456+01:00: what datetime reads exactly.
_COMMON_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6})?(Z|[+-]\d\d:\d\d)\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def parse_timestamp_us(value: str | None, param: str) -> int | None:
    """RFC 3339 timestamp (query parameter) to microseconds since the epoch."""
    if value is None or value == "":
        return None
    if _COMMON_TIMESTAMP.match(value):  # the usual form, parsed ten times faster than below
        try:
            return (datetime.fromisoformat(value) - _EPOCH) // _MICROSECOND
        except ValueError:
            pass  # February 30th and such: refused below, in the same words as any other bad value
    ts = Timestamp()
    try:
        ts.FromJsonString(value)
    except ValueError:
        raise invalid_argument(
            f"Invalid value at '{param}' (type.googleapis.com/google.protobuf.Timestamp), \"{value}\""
        ) from None
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def format_timestamp_us(us: int) -> str:
    ts = Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)
    return ts.ToJsonString()


def now_us() -> int:
    return time.time_ns() // 1000


def format_duration_us(us: int) -> str:
    """A google.protobuf.Duration in its JSON form: "5s", "0.200s", "1.000500s"."""
    duration = Duration()
    duration.FromMicroseconds(us)
    return duration.ToJsonString()


def parse_duration_us(value: str) -> int:
    """The microseconds of a Duration's JSON form ("5s", "0.2s"); ValueError when malformed or out of range."""
    duration = Duration()
    duration.FromJsonString(value)
    return duration.ToMicroseconds()
