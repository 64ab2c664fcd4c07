"""A bounded, deterministic fuzzer of every route (issue 14: no 500s).

Every route of the server's route table (beamport/http/app.py) gets requests built from Dataflow's discovery
document (each method's path, query parameters and request schema) or, for Beamport's own routes, from the
shapes below, then broken: malformed JSON, wrong types, huge and deep values, NUL and invalid UTF-8 in bodies,
paths and query parameters, odd ids and page tokens, enum junk. The requests are sent byte for byte as built
(httpcore, so that no client normalises a path), against a real server on each store.

It fails on any 5xx (but 501 UNIMPLEMENTED where Dataflow's method is documented as not implemented), on an
error that is not Google's shape, and on any change to the stored state by refused requests: the state (the
fuzzed projects' jobs in JOB_VIEW_ALL, their messages, snapshots, SQL tables, service accounts and IAM policy)
is read before and after each batch and compared. An accepted request (a 2xx to a call that may change
state) ends its batch: the state is read again right after it, and the refused requests before it in the
batch, which the comparison can no longer vouch for, are sent again later.

Another round runs against a server with authentication on, without credentials or with bad ones: every route
that needs a permission must answer 401, 403 or 404, and nothing may change.
"""

from __future__ import annotations

import base64
import json
import random
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpcore
import pytest
from conftest import API_ONLY, Server, new_postgres_database

DISCOVERY = Path(__file__).parent / "data" / "dataflow.v1b3-from-google-api-python-client-2.70.0.json"
SEED = 14
VARIANTS_PER_ROUTE = 36  # x ~75 routes: about 2,700 requests per server
AUTH_VARIANTS_PER_ROUTE = 8
BATCH = 40
LOCATIONS = ("us-central1", "europe-west1")
# What Beamport documents as not implemented (501 UNIMPLEMENTED is the answer): Dataflow's debug.getConfig and
# debug.sendCapture, and templates.launch's dynamicTemplate (docs/templates.md).
UNIMPLEMENTED = ("/debug/getConfig", "/debug/sendCapture")


def documented_unimplemented(request: Request, content: bytes) -> bool:
    if b'"UNIMPLEMENTED"' not in content:
        return False
    return request.route.endswith(UNIMPLEMENTED) or (
        request.route.endswith("/templates:launch") and b"dynamicTemplate." in request.target
    )


# Routes that answer without credentials (the token endpoint, the console's pages and sign-in), and the
# console's session routes, which check their system parameters before their caller (a 400 for a bad `alt`).
OPEN_ROUTES = ("/token", "/revoke", "/beamport/v1/session", "/beamport/v1/session:link", "/console/signin", "/")

# -- the raw material --------------------------------------------------------------------------------------


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Values for path segments: raw bytes of the request target (already percent-encoded where they must be).
ODD_IDS = [
    b"..",
    b".",
    b"%2e%2e",
    b"%2E",
    b"a%2Fb",
    b"%00",
    b"a%00b",
    b"%FF%FE",
    b"%C3%28",
    b"%ED%A0%80",
    b"%E2%80%AE",
    b"%C3%A9",
    b"x" * 5000,
    b"-",
    b"_",
    b"0",
    b"-1",
    b"99999999999999999999999",
    b"2026-11-29_08_43_45-99999999999999999999999",
    b"2026-11-29_08_43_45-1",
    b"%20",
    b"a%20b",
    b"*",
    b"~",
    b"A" * 129,
    b"%0A",
    b"%0D%0A",
    b"null",
    b"1e309",
    b";",
    b"%27",
    b"%22",
    b"%3Cscript%3E",
    b"%5C",
    b"%25",
    b"%25%30%30",
    b"a:b",
    b"a@b",
    b"%40",
    b"projects",
    b"jobs",
]

# Values for string query parameters and string fields.
JUNK_STRINGS = [
    "",
    " ",
    "-1",
    "0",
    "1e3",
    "0x10",
    "99999999999999999999999999",
    "9" * 5000,
    "-9223372036854775809",
    "NaN",
    "Infinity",
    "true",
    "null",
    "\u00e9",
    "\u202e",
    "\x00",
    "a\x00b",
    "%",
    "\n",
    "\r\n",
    "A" * 20000,
    "\t",
    "2026-02-30T00:00:00Z",
    "0000-00-00T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "10000-01-01T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "1970-01-01T00:00:00+25:00",
    "2026-01-01",
    "1s",
    "-5s",
    "99999999999999999999s",
    "..",
    "../../etc/passwd",
    "*",
    "-",
    "\U0001f600",
    "\ufeff",
    "<script>",
    "' OR 1=1 --",
    "${jndi:x}",
]
JUNK_ENUMS = ["NOPE", "42", "-1", "99999999999999999999", "", "job_view_all", "JOB_VIEW_ALL\x00", "2147483648", " 1"]
JUNK_INTS = [
    "abc",
    "-1",
    "-2147483649",
    "2147483648",
    "99999999999999999999",
    "9" * 5000,
    "1e3",
    "0x10",
    " 5",
    "5 ",
    "\u0663",
    "+5",
    "1.5",
    "",
    "NaN",
    "\x00",
]
PAGE_TOKENS = [
    b64("jobs:99999999999999999999999"),
    b64("messages:99999999999999999999999"),
    b64("jobs:-1"),
    b64("jobs:"),
    b64("jobs:1e5"),
    b64("jobs:\u0663"),
    b64("jobs:9223372036854775807"),
    b64("jobs:9223372036854775808"),
    b64("messages:0"),
    b64("audit:99999999999999999999"),
    b64("audit:-5"),
    b64(b"\xff\xfe"),
    "!!!",
    "====",
    "a",
    b64("jobs:" + "9" * 5000),
    b64("messages:18446744073709551616"),
    b64("jobs:\x00"),
    "A" * 10000,
]
PATHS = [
    "/tmp/a\x00b",
    "/tmp/fuzz-missing/x.json",
    "/etc/passwd",
    "/proc/self/environ",
    "",
    "gs://bucket/object",
    "gs://",
    "builtin://Nope",
    "builtin://../../x",
    "builtin://Word_Count",
    "file:///tmp/fuzz-missing",
    "file:///etc/passwd",
    "../../etc/passwd",
    "~/.ssh/id_rsa",
    "/tmp/" + "x" * 5000,
    "/tmp/*/**/[",
    "/dev/zero",
    "relative/path",
    "/tmp/\u00e9\x01",
    "http://127.0.0.1:1/x",
    "s3://b/o",
    "/tmp/a\nb",
    "\x00",
]
SQL = [
    "SELECT " + "(" * 500 + "1" + ")" * 500,
    "SELECT 1",
    "SELECT * FROM t1",
    "SELECT a FROM t1 WHERE a > 1",
    "DELETE FROM t1",
    "CREATE TABLE x (a INT64)",
    "SELECT",
    "",
    "SELECT * FROM " + "a." * 2000 + "b",
    "SELECT '\x00'",
    "SELECT 1; SELECT 2",
    "SELECT * FROM `" + "x" * 5000 + "`",
    "WITH " * 300 + "x",
    "SELECT " + "+".join(["1"] * 3000),
    "SELECT " + "NOT " * 2000 + "TRUE",
    "SELECT * FROM t1 " + "JOIN t1 USING (a) " * 200,
    "SELECT ARRAY" + "[" * 400 + "1" + "]" * 400,
    "SELECT STRUCT(" * 300 + "1" + ")" * 300,
    "SELECT CAST(1 AS " * 200,
]
NAMES = ["fuzz-a", "fuzz-b", "x", "", "A", "a" * 2000, "-", "a_b", "\u00e9", "a\x00", "fuzz-c"]
# Beamport's own routes' bodies, in the discovery document's schema language.
STR = {"type": "string"}
OWN_BODIES = {
    ("POST", "/beamport/v1/projects/{projectId}/sqlTables"): {
        "type": "object",
        "properties": {
            "name": {"type": "string", "x-kind": "table"},
            "path": {"type": "string", "x-kind": "path"},
            "format": {"type": "string", "enum": ["csv", "jsonl", "parquet"]},
            "schema": {"type": "array", "items": {"type": "object", "properties": {"name": STR, "type": STR}}},
        },
    },
    ("POST", "/beamport/v1/projects/{projectId}/locations/{location}/sql:query"): {
        "type": "object",
        "properties": {
            "query": {"type": "string", "x-kind": "sql"},
            "jobName": {"type": "string", "x-kind": "name"},
            "output": {"type": "string", "x-kind": "path"},
            "outputFormat": {"type": "string", "enum": ["jsonl", "csv"]},
        },
    },
    ("POST", "/v1/projects/{projectId}/serviceAccounts"): {
        "type": "object",
        "properties": {
            "accountId": STR,
            "serviceAccount": {"type": "object", "properties": {"displayName": STR, "description": STR}},
        },
    },
    ("POST", "/v1/projects/{projectId}/serviceAccounts/{email}/keys"): {
        "type": "object",
        "properties": {
            "privateKeyType": {"type": "string", "enum": ["TYPE_GOOGLE_CREDENTIALS_FILE"]},
            "keyAlgorithm": {"type": "string", "enum": ["KEY_ALG_RSA_2048"]},
        },
    },
    "policy": {
        "type": "object",
        "properties": {
            "policy": {
                "type": "object",
                "properties": {
                    "bindings": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "role": {
                                    "type": "string",
                                    "enum": ["roles/dataflow.viewer", "roles/dataflow.admin", "roles/owner"],
                                },
                                "members": {"type": "array", "items": {"type": "string", "x-kind": "member"}},
                            },
                        },
                    },
                    "etag": STR,
                    "version": {"type": "integer"},
                },
            },
            "updateMask": STR,
        },
    },
    "options": {
        "type": "object",
        "properties": {"options": {"type": "object", "properties": {"requestedPolicyVersion": {"type": "integer"}}}},
    },
    ("POST", "/beamport/v1/session:link"): {"type": "object", "properties": {}},
}
OWN_QUERY = {
    "/beamport/v1/workers": {"jobId": {"type": "string", "x-kind": "id"}, "all": {"type": "boolean"}},
    "/beamport/v1/auditLogs": {"pageSize": {"type": "integer"}, "pageToken": {"type": "string"}},
    "/beamport/v1/projects/{projectId}/auditLogs": {"pageSize": {"type": "integer"}, "pageToken": {"type": "string"}},
    "/console/signin": {"code": STR},
    "/revoke": {"token": STR},
}


def bases(world: dict, rng: random.Random) -> dict:
    """A valid body for each route that takes one (by the end of its path): the fuzzer breaks it in one place,
    so that the checks behind the first ones are reached too."""
    job = rng.choice(world["job_ids"])
    path = lambda: rng.choice(world["files"])  # noqa: E731
    return {
        "/jobs": {
            "name": rng.choice(NAMES[:3]),
            "type": "JOB_TYPE_BATCH",
            "labels": {"a": "b"},
            "environment": {
                "tempStoragePrefix": world["tmp"],
                "sdkPipelineOptions": {
                    "options": {"pipelineUrl": path(), "project": world["projects"][0], "temp_location": world["tmp"]}
                },
            },
        },
        "/jobs/{jobId}": rng.choice(
            [{"requestedState": "JOB_STATE_CANCELLED"}, {"labels": {"a": "c"}}, {"requestedState": "JOB_STATE_DRAINED"}]
        ),
        ":snapshot": {"ttl": "3600s", "description": "d", "location": "us-central1"},
        "/WorkerMessages": {
            "workerMessages": [
                {
                    "labels": {"JOB_ID": job, "WORKER_ID": world["worker_id"]},
                    "time": "2026-01-01T00:00:00Z",
                    "workerHealthReport": {"vmIsHealthy": True, "reportInterval": "5s"},
                }
            ]
        },
        "/workItems:lease": {
            "workerId": world["worker_id"],
            "workItemTypes": ["map_task"],
            "requestedLeaseDuration": "60s",
            "currentWorkerTime": "2026-01-01T00:00:00Z",
        },
        "/workItems:reportStatus": {
            "workerId": world["worker_id"],
            "workItemStatuses": [
                {"workItemId": "1", "reportIndex": "1", "completed": True, "errors": [{"code": 2, "message": "x"}]}
            ],
        },
        "/debug/getWorkerStacktraces": {"workerId": world["worker_id"]},
        "/templates:launch": {"jobName": rng.choice(NAMES[:3]), "parameters": {"input": path(), "output": path()}},
        "/templates": {"gcsPath": path(), "jobName": rng.choice(NAMES[:3]), "parameters": {"input": path()}},
        "/flexTemplates:launch": {
            "validateOnly": rng.random() < 0.5,
            "launchParameter": {"jobName": "flex", "containerSpecGcsPath": path(), "parameters": {"input": path()}},
        },
        "/sqlTables": {
            "name": rng.choice(["t1", "t2"]),
            "path": world["csv"],
            "format": "csv",
            "schema": [{"name": "a", "type": "INT64"}],
        },
        "/sql:query": {"query": rng.choice(SQL), "jobName": "query", "output": world["tmp"] + "/out"},
        "/serviceAccounts": {
            "accountId": rng.choice(["fuzz-sa", "x", "fuzzer"]),
            "serviceAccount": {"displayName": "d"},
        },
        ":setIamPolicy": {
            "policy": {"bindings": [{"role": "roles/dataflow.viewer", "members": ["serviceAccount:" + world["email"]]}]}
        },
    }


def discovery() -> tuple[dict, dict, dict]:
    """(methods by (HTTP method, path), the document's schemas, its global parameters)."""
    doc = json.loads(DISCOVERY.read_text())
    methods = {}

    def walk(resources):
        for resource in resources.values():
            for method in resource.get("methods", {}).values():
                methods[(method["httpMethod"], "/" + method.get("flatPath", method["path"]))] = method
            walk(resource.get("resources", {}))

    walk(doc["resources"])
    return methods, doc["schemas"], doc["parameters"]


def route_table() -> list[tuple[str, str]]:
    """(HTTP method, path template) of every route the server has (HEAD is GET's), and a few console paths."""
    from starlette.routing import Route

    from beamport.http.app import routes

    table = []
    for route in routes():
        if isinstance(route, Route):
            table += [(method, route.path) for method in sorted(route.methods) if method != "HEAD"]
    return table + [("GET", "/console/{file}")]


# -- requests --------------------------------------------------------------------------------------------


class Request:
    __slots__ = ("method", "target", "body", "headers", "route")

    def __init__(self, method: str, target: bytes, body: bytes | None, headers: list, route: str):
        self.method, self.target, self.body, self.headers, self.route = method, target, body, headers, route

    def __repr__(self) -> str:
        body = b"" if self.body is None else self.body
        shown = body[:300] + (b"...(%d bytes)" % len(body) if len(body) > 300 else b"")
        target = self.target[:300] + (b"..." if len(self.target) > 300 else b"")
        return f"{self.method} {target.decode('latin-1')} {shown!r} {self.headers}"


class Raw:
    """HTTP/1.1 requests exactly as built (no client-side normalisation of paths or queries)."""

    def __init__(self, port: int):
        self.port = port
        self.pool = httpcore.ConnectionPool(max_connections=1)

    def send(self, request: Request, extra_headers: list = ()) -> tuple[int, bytes, str]:
        headers = [(b"host", f"127.0.0.1:{self.port}".encode()), *request.headers, *extra_headers]
        url = httpcore.URL(scheme=b"http", host=b"127.0.0.1", port=self.port, target=request.target)
        for attempt in (1, 2):
            try:
                response = self.pool.request(
                    request.method,
                    url,
                    headers=headers,
                    content=request.body or b"",
                    extensions={"timeout": {"connect": 10, "read": 60, "write": 60, "pool": 10}},
                )
                break
            except (httpcore.ReadError, httpcore.RemoteProtocolError, httpcore.WriteError):
                # The server closes a connection after an error it did not expect (a 500): the request sent
                # next on it finds it closed. Once more, on a new connection; a second failure is this one's.
                if attempt == 2:
                    return 599, b"no answer: the connection was closed", ""
        content_type = dict((k.lower(), v) for k, v in response.headers).get(b"content-type", b"").decode()
        return response.status, response.content, content_type

    def json(self, method: str, path: str, body=None, headers: list = ()) -> dict:
        data = None if body is None else json.dumps(body).encode()
        hdrs = [(b"content-type", b"application/json")] if data is not None else []
        status, content, _ = self.send(Request(method, path.encode(), data, hdrs + list(headers), path))
        assert status == 200, (method, path, status, content[:500])
        return json.loads(content)

    def close(self) -> None:
        self.pool.close()


class Generator:
    """Requests for each route: a plausible one, then broken in one or more ways."""

    def __init__(self, rng: random.Random, world: dict, methods: dict, schemas: dict, global_params: dict):
        self.rng = rng
        self.world = world  # valid values: projects, job ids, a table, a key id...
        self.methods, self.schemas, self.global_params = methods, schemas, global_params

    # values ---------------------------------------------------------------------------------------------

    def string(self, kind: str | None, name: str = "") -> str:
        rng, world = self.rng, self.world
        if rng.random() < 0.25:
            return rng.choice(JUNK_STRINGS)
        lowered = name.lower()
        names_a_file = lowered.endswith(("path", "location", "url", "prefix")) or lowered in ("output", "gcspath")
        if kind == "path" or names_a_file:
            return rng.choice(PATHS + world["files"])
        if kind == "sql" or lowered == "query":
            return rng.choice(SQL)
        if kind == "name" or lowered in ("name", "jobname"):
            return rng.choice(NAMES)
        if kind == "table":
            return rng.choice(["t1", "t2", "T", "", "a-b", "x" * 200, "t\x00"])
        if kind == "member":
            return rng.choice(["allUsers", "serviceAccount:" + world["email"], "user:a@b", "", "serviceAccount:\x00"])
        if kind == "id" or lowered.endswith("id"):
            return rng.choice(world["job_ids"] + [world["worker_id"], "-", "", "2026-01-01_00_00_00-1"])
        return rng.choice(["a", "fuzz", "0", "true", "x y", "JOB_STATE_CANCELLED", "us-central1"])

    def value(self, schema: dict, depth: int = 0, name: str = ""):
        """A value the schema describes (depth-limited, a few optional fields at a time)."""
        rng = self.rng
        ref = schema.get("$ref")
        if ref is not None:
            schema = self.schemas[ref]
        kind = schema.get("type", "any")
        if depth > 4:
            return {} if kind == "object" else None
        if kind == "object":
            out = {}
            props = schema.get("properties", {})
            for key in rng.sample(sorted(props), min(len(props), rng.randint(0, 5))):
                out[key] = self.value(props[key], depth + 1, key)
            extra = schema.get("additionalProperties")
            if extra is not None:
                for i in range(rng.randint(0, 2)):
                    out[rng.choice(["k", "input", "output", "inputFile", f"p{i}"])] = self.value(extra, depth + 1, "k")
            return out
        if kind == "array":
            return [self.value(schema["items"], depth + 1, name) for _ in range(rng.randint(0, 2))]
        if kind == "string":
            if "enum" in schema:
                return rng.choice(schema["enum"] + ([rng.choice(JUNK_ENUMS)] if rng.random() < 0.2 else []))
            fmt = schema.get("format")
            if fmt in ("int64", "uint64"):
                return rng.choice(["0", "5", "-1", "9223372036854775807", "18446744073709551615", "1e3"])
            if fmt == "google-datetime":
                return rng.choice(["2026-01-01T00:00:00Z", "2026-01-01T00:00:00.123456789Z", "junk"])
            if fmt == "google-duration":
                return rng.choice(["3.5s", "0s", "-1s", "315576000001s", "1"])
            if fmt == "byte":
                return rng.choice(["aGVsbG8=", "!!", ""])
            return self.string(schema.get("x-kind"), name)
        if kind == "integer":
            return rng.choice([0, 1, -1, 5, 2**31, -(2**31) - 1, 2**63, 10**30])
        if kind == "number":
            return rng.choice([0, 1.5, -1e308, 1e308, 5e-324])
        if kind == "boolean":
            return rng.choice([True, False])
        return rng.choice([None, 1, "a", [], {}, {"a": [1, {"b": None}]}])

    def junk_value(self):
        rng = self.rng
        return rng.choice(
            [
                None,
                True,
                False,
                0,
                -1,
                2**63,
                2**64,
                -(2**63) - 1,
                10**30,
                1.5,
                1e308,
                [],
                {},
                [[[]]],
                "",
                "NaN",
                "Infinity",
                "\x00",
                "a\x00b",
                "JOB_STATE_NOPE",
                "2026-13-45T99:99:99Z",
                "-5s",
                "1e400",
                "x" * 100_000,
                [None] * 1000,
                {"k": "\x00"},
                {str(i): i for i in range(2000)},
                "\ud83d\ude00",
                {"": ""},
                {"\x00": 1},
                [{"a": 1}] * 200,
            ]
        )

    # bodies -------------------------------------------------------------------------------------------

    def body(self, schema: dict | None, base: dict | None) -> tuple[bytes, list]:
        """A request body (bytes) and its headers: a valid one (`base`) or one built from the schema, then
        broken (a valid one is left whole now and then)."""
        rng = self.rng
        if base is not None and rng.random() < 0.6:
            value, mutations = base, rng.choice([0, 1, 1, 1, 2])
        else:
            value, mutations = (self.value(schema) if schema else {}), rng.choice([1, 1, 2, 3])
        if not isinstance(value, dict):
            value = {}
        deep = None
        for _ in range(mutations):
            how = rng.random()
            if how < 0.45:
                _set_somewhere(rng, value, self.junk_value())
            elif how < 0.6:
                deep = rng.choice([90, 101, 150, 300, 900, 1030, 5000])
                _set_somewhere(rng, value, "__DEEP__")
            elif how < 0.7:
                _set_somewhere(rng, value, {"unknownField": self.junk_value()})
            else:
                _set_somewhere(rng, value, self.string(None, rng.choice(["path", "name", "query", "id", ""])))
        data = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
        if deep is not None:
            opener, closer = rng.choice([(b'{"a":', b"}"), (b"[", b"]"), (b'{"values":[', b"]}")])
            data = data.replace(b'"__DEEP__"', opener * deep + b"1" + closer * deep, 1)
        headers = [(b"content-type", b"application/json")]
        how = rng.random()
        if how < 0.3:
            data = self.mangle(data)
        elif how < 0.35:
            headers = [
                (
                    b"content-type",
                    rng.choice(
                        [
                            b"text/plain",
                            b"application/json; charset=latin-1",
                            b"application/x-www-form-urlencoded",
                            b"",
                            b"\xff",
                        ]
                    ),
                )
            ]
        return data, headers

    def mangle(self, data: bytes) -> bytes:
        """Byte-level damage: bodies no JSON encoder would write."""
        rng = self.rng
        at = rng.randint(0, len(data))
        return rng.choice(
            [
                lambda: data[:at],  # truncated
                lambda: (
                    data[:at] + rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\x80"]) + data[at:]
                ),
                lambda: data.replace(b'"', b'"\\u0000', 1),
                lambda: data.replace(b'":', b'\\ud800":', 1),
                lambda: data + b",",
                lambda: data + b"garbage",
                lambda: b"\xef\xbb\xbf" + data,
                lambda: b"[" + data + b"]",
                lambda: b'{"a": 1, "a": 2}',
                lambda: b"{" * 100_000,
                lambda: b"[" * 1100 + b"]" * 1100,
                lambda: b'{"x": 1e999999}',
                lambda: b'{"x": -' + b"9" * 10_000 + b"}",
                lambda: b"null",
                lambda: b'"\x00"',
                lambda: b"/* comment */ {}",
                lambda: b'{"x": NaN}',
                lambda: b"\x00" * 64,
                lambda: bytes(rng.randrange(256) for _ in range(64)),
            ]
        )()

    # paths and queries ------------------------------------------------------------------------------------

    def segment(self, param: str, route: str, odd: bool) -> bytes:
        rng, world = self.rng, self.world
        if odd:
            # Not `-` for a lease's job: it means any job's work, the seeded jobs' too.
            return rng.choice([i for i in ODD_IDS if i != b"-"] if "workItems" in route else ODD_IDS)
        if param == "projectId":
            return rng.choice(world["projects"]).encode()
        if param == "location":
            return rng.choice(LOCATIONS + ("-",) if "workItems" in route else LOCATIONS).encode()
        if param == "jobId":
            # No lease nor status report on a job whose work may be leased: it would start it (a change the
            # comparison could not tell from a refused request's).
            if "workItems" in route:
                return rng.choice([world["cancelled_id"], "2026-01-01_00_00_00-1"]).encode()
            return rng.choice(world["job_ids"] + ["2026-01-01_00_00_00-1"]).encode()
        if param == "name":
            return rng.choice([b"t1", b"t2", b"T1"])
        if param == "email":
            return rng.choice([world["email"], "nobody@fuzz.iam.gserviceaccount.com", "x"]).encode()
        if param == "keyId":
            return rng.choice([world["key_id"], "0" * 40, "x"]).encode()
        if param == "organizationId":
            return rng.choice([b"beamport", b"0", b"x"])
        if param == "workerId":
            return rng.choice([world["worker_id"], "w/../x", "a" * 300]).encode()
        if param == "file":
            return rng.choice([b"app.js", b"index.html", b"..%2F..%2Fetc%2Fpasswd", b"nope.css", b"%00"])
        return rng.choice([b"1", b"0", b"s1", b"F0", b"2026-01-01_00_00_00-1", b"snap"])

    def path(self, route: str, odd: bool) -> bytes:
        out, rest = b"", route
        odd_param = None
        params = [p.split("}")[0].split(":")[0] for p in route.split("{")[1:]]
        if odd and params:
            odd_param = self.rng.choice(params)
        while "{" in rest:
            before, _, after = rest.partition("{")
            param, _, rest = after.partition("}")
            param = param.split(":")[0]
            out += before.encode() + self.segment(param, route, param == odd_param)
        return out + rest.encode()

    def query_value(self, spec: dict, name: str) -> str | bytes:
        rng = self.rng
        junk = rng.random() < 0.6
        if name == "pageToken":
            return rng.choice(PAGE_TOKENS) if junk else ""
        if "enum" in spec:
            return rng.choice(JUNK_ENUMS) if junk else rng.choice(spec["enum"])
        if spec.get("type") == "integer":
            return rng.choice(JUNK_INTS) if junk else str(rng.choice([0, 1, 5, 1000]))
        if spec.get("type") == "boolean":
            return rng.choice(["yes", "2", "", "TRUE", "\x00"]) if junk else rng.choice(["true", "false"])
        if spec.get("format") == "google-datetime":
            return rng.choice(JUNK_STRINGS) if junk else "2026-01-01T00:00:00Z"
        if junk:
            return rng.choice(JUNK_STRINGS + [b"%FF%FE", b"%ED%A0%80", b"%zz", b"%", b"%C3"])
        return self.string(spec.get("x-kind"), name)

    def query(self, params: dict) -> bytes:
        """A query string: some of the route's parameters (mostly broken), and some system parameters."""
        rng = self.rng
        chosen = rng.sample(sorted(params), min(len(params), rng.randint(0, 3)))
        if rng.random() < 0.3:
            chosen.append(rng.choice(sorted(self.global_params) + ["$alt", "$fields", "location", "nope"]))
        pairs = []
        for name in chosen:
            spec = params.get(name) or self.global_params.get(name) or {"type": "string"}
            if name in ("fields", "$fields"):
                value = rng.choice(
                    [
                        "a(" * 1000 + "b" + ")" * 1000,
                        "/".join(["a"] * 5000),
                        "jobs(id",
                        "jobs)",
                        "*",
                        "",
                        "jobs(id,currentState),nextPageToken",
                        "a(" * 33 + "b" + ")" * 33,
                        "a,,b",
                        "(",
                        "a b",
                        "\x00",
                    ]
                )
            else:
                value = self.query_value(spec, name)
            encoded = value if isinstance(value, bytes) else quote(value, safe="").encode()
            pairs.append(quote(name, safe="$.").encode() + b"=" + encoded)
        if rng.random() < 0.05:
            pairs.append(rng.choice([b"&&&", b"=", b"a", b"=x", b"view=JOB_VIEW_ALL&view=NOPE", b"a=1;b=2"]))
        if rng.random() < 0.02:
            pairs += [b"p%d=%d" % (i, i) for i in range(1000)]
        return b"&".join(pairs)

    # a request ---------------------------------------------------------------------------------------------

    def request(self, method: str, route: str) -> Request:
        rng = self.rng
        spec = self.methods.get((method, route), {})
        params = {k: v for k, v in spec.get("parameters", {}).items() if v.get("location") == "query"}
        params.update(OWN_QUERY.get(route, {}))
        schema = OWN_BODIES.get((method, route))
        if schema is None and route.endswith("IamPolicy"):
            schema = OWN_BODIES["policy" if route.endswith(":setIamPolicy") else "options"]
        if schema is None and "request" in spec:
            schema = {"$ref": spec["request"]["$ref"]}
        target = self.path(route, odd=rng.random() < 0.2)
        query = self.query(params) if rng.random() < 0.6 else b""
        if query:
            target += b"?" + query
        body, headers = None, []
        if method in ("POST", "PUT", "PATCH"):
            if route in ("/token", "/revoke"):
                body = rng.choice(
                    [
                        b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=a.b.c",
                        b"grant_type=client_credentials",
                        b"assertion=" + b"x" * 70_000,
                        b"\xff\xfe=\x00",
                        b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=x",
                        b"token=%00",
                        b"",
                    ]
                )
                headers = [(b"content-type", b"application/x-www-form-urlencoded")]
            elif rng.random() < 0.9:
                base = next((b for end, b in bases(self.world, rng).items() if route.endswith(end)), None)
                body, headers = self.body(schema, base)
        elif rng.random() < 0.05:
            body, headers = b'{"unexpected": "body"}', [(b"content-type", b"application/json")]
        return Request(method, target, body, headers, route)


def _set_somewhere(rng: random.Random, value: dict, new) -> None:
    """Put `new` at a random place in the JSON object `value` (replacing a value, or as a new key)."""
    node = value
    for _ in range(rng.randint(0, 4)):
        children = [k for k, v in node.items() if isinstance(v, dict)] if isinstance(node, dict) else []
        lists = [k for k, v in node.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
        if not children and not lists:
            break
        key = rng.choice(children + lists)
        node = node[key] if isinstance(node[key], dict) else node[key][0]
    keys = list(node)
    if keys and rng.random() < 0.7:
        node[rng.choice(keys)] = new
    else:
        node[rng.choice(["name", "id", "type", "labels", "environment", "x"])] = new


# -- the world the fuzzer runs in ----------------------------------------------------------------------------


def seed_world(raw: Raw, tmp: Path) -> dict:
    """Projects with jobs (pending and cancelled), messages, a SQL table, a service account with a key."""
    tag = uuid.uuid4().hex[:8]
    projects = [f"fuzz-{tag}", f"fuzz2-{tag}"]
    p = projects[0]
    jobs_path = f"/v1b3/projects/{p}/locations/us-central1/jobs"
    pending = [raw.json("POST", jobs_path, {"name": f"seed-{i}", "labels": {"k": "v"}})["id"] for i in range(3)]
    cancelled = raw.json("POST", jobs_path, {"name": "seed-cancelled", "type": "JOB_TYPE_STREAMING"})["id"]
    raw.json("PUT", f"{jobs_path}/{cancelled}", {"requestedState": "JOB_STATE_CANCELLED"})
    raw.json("POST", f"/v1b3/projects/{projects[1]}/locations/europe-west1/jobs", {"name": "seed-other"})
    csv = tmp / "fuzz-table.csv"
    csv.write_text("a,b\n1,x\n2,y\n")
    # Files that requests may name: a classic template and its metadata, a flex template's spec that names no
    # launcher, and files no reader should choke on.
    template = tmp / "template.json"
    template.write_text(
        json.dumps(
            {
                "name": "tmpl",
                "steps": [],
                "environment": {
                    "tempStoragePrefix": str(tmp),
                    "sdkPipelineOptions": {"options": {"input": "", "output": ""}},
                },
            }
        )
    )
    (tmp / "template.json_metadata").write_text(
        json.dumps(
            {
                "name": "T",
                "parameters": [
                    {"name": "input", "label": "In", "helpText": "in", "paramType": "GCS_READ_FILE"},
                    {
                        "name": "output",
                        "label": "Out",
                        "helpText": "out",
                        "isOptional": True,
                        "regexes": ["^/tmp/.*"],
                        "paramType": "GCS_WRITE_FILE",
                    },
                ],
            }
        )
    )
    spec = tmp / "flex-spec.json"
    spec.write_text(json.dumps({"image": "", "sdkInfo": {"language": "COBOL"}, "metadata": {"name": "F"}}))
    deep = tmp / "deep.json"
    deep.write_text('{"a":' * 5000 + "1" + "}" * 5000)
    deep_template = tmp / "deep-template.json"
    deep_template.write_text(
        '{"environment": {"sdkPipelineOptions": {"options": {"input": "", "x": '
        + '{"a":' * 300
        + "1"
        + "}" * 300
        + "}}}}"
    )
    (tmp / "deep-template.json_metadata").write_text(
        '{"name": "D", "parameters": [{"name": "input", "label": '
        '"l", "helpText": "h", "x": ' + "[" * 900 + "]" * 900 + "}]}"
    )
    (tmp / "not-json.json").write_bytes(b"\xff\xfe{not json")
    (tmp / "empty.json").write_text("")
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "pipeline.pb").write_bytes(b"\x0a\xff\xff\xff\xff\x0f")
    files = [
        str(f)
        for f in (
            csv,
            template,
            spec,
            deep,
            deep_template,
            tmp / "not-json.json",
            tmp / "empty.json",
            tmp / "list.json",
            tmp / "pipeline.pb",
            tmp,
            tmp / "*.json",
            tmp / "missing.json",
        )
    ]
    files += [f"{template}\x00", f"file://{template}"]
    raw.json("POST", f"/beamport/v1/projects/{p}/sqlTables", {"name": "t1", "path": str(csv), "format": "csv"})
    account = raw.json("POST", f"/v1/projects/{p}/serviceAccounts", {"accountId": "fuzzer"})
    key = raw.json("POST", f"/v1/projects/{p}/serviceAccounts/{account['email']}/keys", {})
    key_id = key["name"].rsplit("/", 1)[-1]
    return {
        "projects": projects,
        "job_ids": pending + [cancelled],
        "cancelled_id": cancelled,
        "csv": str(csv),
        "tmp": str(tmp),
        "files": files,
        "email": account["email"],
        "key_id": key_id,
        "worker_id": "fuzz-worker-1",
    }


def state(raw: Raw, world: dict, headers: list = ()) -> dict:
    """What the API shows of the fuzzed projects: the state refused requests must leave as it was."""
    out = {}
    for project in world["projects"]:
        jobs, token = [], ""
        while True:
            page = raw.json(
                "GET",
                f"/v1b3/projects/{project}/jobs:aggregated?view=JOB_VIEW_ALL&pageSize=1000"
                + (f"&pageToken={token}" if token else ""),
                headers=headers,
            )
            jobs += page.get("jobs", [])
            token = page.get("nextPageToken")
            if not token:
                break
        messages = {}
        for job in jobs:
            path = f"/v1b3/projects/{project}/locations/{job['location']}/jobs/{job['id']}/messages?pageSize=1000"
            messages[job["id"]] = raw.json("GET", path, headers=headers)
        out[project] = {
            "jobs": jobs,
            "messages": messages,
            "snapshots": [
                raw.json("GET", f"/v1b3/projects/{project}/snapshots?location={loc}", headers=headers)
                for loc in LOCATIONS
            ],
            "sqlTables": raw.json("GET", f"/beamport/v1/projects/{project}/sqlTables", headers=headers),
            "serviceAccounts": raw.json("GET", f"/v1/projects/{project}/serviceAccounts", headers=headers),
            "policy": raw.json("POST", f"/v1/projects/{project}:getIamPolicy", {}, headers=headers),
        }
    return out


def _diff(before: dict, after: dict) -> str:
    lines = []
    for project in before:
        for part in before[project]:
            if before[project][part] != after[project][part]:
                lines.append(
                    f"{project} {part}: {json.dumps(before[project][part])[:1500]}\n  -> "
                    f"{json.dumps(after[project][part])[:1500]}"
                )
    return "\n".join(lines)


def _may_change(request: Request, status: int) -> bool:
    return status < 400 and request.method not in ("GET", "HEAD")


def check_answer(request: Request, status: int, content: bytes, content_type: str, failures: list) -> None:
    """No 5xx (but UNIMPLEMENTED where documented), and errors in Google's shape."""
    if status >= 500 and not (status == 501 and documented_unimplemented(request, content)):
        failures.append(f"{status} for {request!r}: {content[:300]!r}")
        return
    if status >= 400 and content_type.startswith("application/json") and request.route not in ("/token", "/revoke"):
        try:
            error = json.loads(content)["error"]
            assert error["code"] == status and error["status"] and isinstance(error["message"], str)
        except Exception:  # noqa: BLE001 (any shape but Google's)
            failures.append(f"{status} not in Google's error shape for {request!r}: {content[:300]!r}")


def fuzz(raw: Raw, world: dict, requests: list[Request], headers: list = (), check=check_answer) -> dict:
    """Send the requests; the state read after each batch of refused requests must be the state read before
    it. An accepted request (a 2xx to a call that may change state) ends its batch, the state is read again
    right after it, and the refused requests of that batch, unproven, are sent again later in a batch of their
    own. Returns counts; fails with every failure found."""
    failures: list[str] = []
    counts = {"sent": 0, "accepted": 0, "unverified": 0, "statuses": {}}
    before = state(raw, world, headers)
    queue = [(request, 0) for request in requests]  # (request, times it was sent already)
    while queue:
        batch, queue = queue[:BATCH], queue[BATCH:]
        refused = []
        for i, (request, tries) in enumerate(batch):
            status, content, content_type = raw.send(request, headers)
            counts["sent"] += 1
            counts["statuses"][status] = counts["statuses"].get(status, 0) + 1
            check(request, status, content, content_type, failures)
            if not _may_change(request, status):
                refused.append((request, tries))
                continue
            counts["accepted"] += 1
            # The refused requests before it prove nothing now: again later (twice at most), the rest of the
            # batch goes back to the front of the queue, and the state is read anew.
            again = [(r, t + 1) for r, t in refused if t < 2]
            counts["unverified"] += len(refused) - len(again)
            queue = batch[i + 1 :] + queue + again
            refused = None
            before = state(raw, world, headers)
            break
        if refused is None:
            continue
        after = state(raw, world, headers)
        if after != before:
            failures.append(
                "refused requests changed the state:\n"
                + _diff(before, after)
                + "\nthe batch:\n"
                + "\n".join(repr(r) for r, _ in batch)
            )
        before = after
    failures = list(dict.fromkeys(failures))  # a request sent again fails again
    assert not failures, f"{len(failures)} failures ({counts}):\n" + "\n\n".join(failures[:60])
    return counts


def reproducers(world: dict) -> list[Request]:
    """Issue 14's requests that answered 500, always among the fuzzer's."""
    p, tmp = world["projects"][0], world["tmp"]
    loc = f"/v1b3/projects/{p}/locations/us-central1"
    json_type = [(b"content-type", b"application/json")]

    def get(path: str, **query) -> Request:
        target = path + ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items()) if query else "")
        return Request("GET", target.encode(), None, [], path)

    def post(path: str, body: dict, method: str = "POST", **query) -> Request:
        request = get(path, **query)
        request.method, request.body, request.headers = method, json.dumps(body).encode(), json_type
        return request

    def deep(levels: int, leaf=1) -> dict:
        value = leaf
        for _ in range(levels):
            value = {"a": value}
        return value

    def deep_list(levels: int):
        value = 1
        for _ in range(levels):
            value = [value]
        return value

    nul = f"{tmp}/a\x00b"
    paren_sql = "SELECT " + "(" * 500 + "1" + ")" * 500
    return [
        get(f"{loc}/jobs", fields="a(" * 1000 + "b" + ")" * 1000),
        get(f"/v1b3/projects/{p}/jobs/{world['job_ids'][0]}", fields="/".join(["a"] * 5000)),
        get(f"{loc}/templates:get", gcsPath=nul),
        post(f"{loc}/templates:launch", {"jobName": "nul", "parameters": {"input": nul}}, gcsPath=world["files"][1]),
        post(f"{loc}/templates", {"jobName": "nul", "gcsPath": world["files"][1], "parameters": {"input": nul}}),
        post(f"{loc}/jobs", {"name": "nul", "environment": {"sdkPipelineOptions": {"options": {"pipelineUrl": nul}}}}),
        post(f"/beamport/v1/projects/{p}/sqlTables", {"name": "nul", "path": nul, "format": "csv"}),
        post(f"{loc}/flexTemplates:launch", {"launchParameter": {"jobName": "nul", "containerSpecGcsPath": nul}}),
        get(f"{loc}/jobs", pageToken=b64("jobs:99999999999999999999999")),
        get(f"{loc}/jobs/{world['job_ids'][0]}/messages", pageToken=b64("messages:99999999999999999999999")),
        post(f"{loc}/jobs", {"name": "deep", "environment": {"sdkPipelineOptions": {"options": deep(900)}}}),
        post(
            f"/beamport/v1/projects/{p}/sqlTables",
            {"name": "deep", "path": world["csv"], "format": "csv", "schema": deep_list(300)},
        ),
        get(f"{loc}/sql:validate", query=paren_sql),
        post(
            f"/beamport/v1/projects/{p}/locations/us-central1/sql:query",
            {"query": paren_sql, "jobName": "deep-sql", "output": f"{tmp}/deep-sql"},
        ),
    ]


def plan(rng: random.Random, generator: Generator, variants: int) -> list[Request]:
    """Every route's requests (and the reproducers), in an order of their own."""
    methods = route_table()
    requests = [generator.request(method, route) for method, route in methods for _ in range(variants)]
    requests += reproducers(generator.world)
    rng.shuffle(requests)
    return requests


# -- the tests -------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def fuzz_server(request, tmp_path):
    url = new_postgres_database() if request.param == "postgres" else None
    srv = Server(tmp_path / "data", database_url=url, extra_args=API_ONLY).start()
    yield srv
    srv.stop()


def test_fuzz_every_route(fuzz_server, tmp_path):
    rng = random.Random(SEED)
    raw = Raw(fuzz_server.port)
    try:
        world = seed_world(raw, tmp_path)
        methods, schemas, global_params = discovery()
        generator = Generator(rng, world, methods, schemas, global_params)
        requests = plan(rng, generator, VARIANTS_PER_ROUTE)
        started = time.monotonic()
        counts = fuzz(raw, world, requests)
        elapsed = time.monotonic() - started
        print(f"fuzz: {counts} in {elapsed:.1f} s")
        # Most requests are refused, so that most are checked against the state.
        assert counts["unverified"] < counts["sent"] // 10, counts
    finally:
        raw.close()


@pytest.fixture(params=["sqlite", "postgres"])
def secured_server(request, tmp_path):
    url = new_postgres_database() if request.param == "postgres" else None
    srv = Server(tmp_path / "data", database_url=url, extra_args=API_ONLY, auth=True).start()
    yield srv
    srv.stop()


UNSIGNED_JWT = (b64('{"alg":"none"}') + "." + b64('{"sub":"x"}') + ".").encode()


def test_fuzz_without_credentials_is_refused_and_changes_nothing(secured_server, tmp_path):
    """Auth on, no credentials (or bad ones): every API route answers 401, 403 or 404, and changes nothing
    (refusals are audited: the audit log is not part of the state compared)."""
    from beamport.credentials import KeyFileAuth

    srv = secured_server
    bearer = [(b"authorization", f"Bearer {KeyFileAuth(srv.admin_key)._refresh()}".encode())]

    class AsAdmin(Raw):  # the world is built, and the state read, by the admin; the fuzzed requests go bare
        def json(self, method, path, body=None, headers=()):
            return super().json(method, path, body, headers=list(headers) or bearer)

    raw = AsAdmin(srv.port)
    try:
        world = seed_world(raw, tmp_path)
        methods, schemas, global_params = discovery()
        rng = random.Random(SEED + 1)
        generator = Generator(rng, world, methods, schemas, global_params)
        requests = plan(rng, generator, AUTH_VARIANTS_PER_ROUTE)
        bad_credentials = [
            [],
            [(b"authorization", b"Bearer junk")],
            [(b"authorization", b"Basic YTpi")],
            [(b"authorization", b"Bearer " + b"a" * 10_000)],
            [(b"authorization", b"Bearer a.b.c")],
            [(b"authorization", b"Bearer " + UNSIGNED_JWT)],
            [(b"authorization", b"Bearer \xff\xfe")],
            [(b"cookie", b"beamport_session=junk")],
        ]
        for i, request in enumerate(requests):
            request.headers = (
                [h for h in request.headers if h[0] != b"content-type"]
                + [(b"content-type", b"application/json")]
                + bad_credentials[i % len(bad_credentials)]
            )
            if request.route in ("/token", "/revoke"):
                request.headers = [(b"content-type", b"application/x-www-form-urlencoded")]

        def refused(request, status, content, content_type, failures):
            check_answer(request, status, content, content_type, failures)
            open_route = request.route in OPEN_ROUTES or request.route.startswith("/console")
            if not open_route and status not in (401, 403, 404):
                failures.append(f"{status} without valid credentials for {request!r}: {content[:300]!r}")

        counts = fuzz(raw, world, requests, check=refused)
        print(f"fuzz without credentials: {counts}")
    finally:
        raw.close()
