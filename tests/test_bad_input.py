"""Bad requests get the right Google-style error, and change nothing in the store."""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from conftest import API_ONLY, Api, Server

JSON = {"content-type": "application/json"}


@pytest.fixture
def seeded(api):
    """A project with jobs and messages, and a snapshot of everything the API shows about it."""
    batch = api.create("batch-job", type="JOB_TYPE_BATCH", labels={"k": "v"})
    stream = api.create("stream-job", type="JOB_TYPE_STREAMING")
    api.update(stream["id"], {"requestedState": "JOB_STATE_CANCELLED"})

    def snapshot():
        jobs = api.all_jobs(view="JOB_VIEW_ALL")
        messages = {j["id"]: api.messages(j["id"]).json() for j in jobs}
        return jobs, messages

    before = snapshot()
    yield {"batch": batch, "stream": stream}
    assert snapshot() == before, "a refused request changed the store"


def error_of(response: httpx.Response, code: int, status: str) -> str:
    assert response.status_code == code, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code and error["status"] == status
    assert error["message"]
    return error["message"]


BAD_CREATE_BODIES = [
    (b"{not json", "Invalid JSON payload"),
    (b'{"name": "x",}', "Invalid JSON payload"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"a string"', "must be a JSON object"),
    (b"\xff\xfe", "Invalid JSON payload"),
    (b'{"name": 5}', "name"),
    (b'{"name": "x", "labels": ["a"]}', "labels"),
    (b'{"name": "x", "labels": {"a": 1}}', "labels"),
    (b'{"name": "x", "createTime": "yesterday"}', "createTime"),
    (b'{"name": "x", "type": "JOB_TYPE_NOPE"}', "JOB_TYPE_NOPE"),
    (b'{"name": "x", "type": 42}', "42"),
    (b'{"name": "x", "steps": {"kind": "a"}}', "steps"),
    (b'{"name": "x", "environment": {"workerPools": [{"numWorkers": "many"}]}}', "numWorkers"),
    (b'{"name": "x", "environment": {"workerPools": [{"teardownPolicy": 99}]}}', "teardownPolicy"),
    (b'{"name": "x", "stageStates": [{"executionStageState": "NOPE"}]}', "NOPE"),
    (b"", "name is required"),
    (b"{}", "name is required"),
]


@pytest.mark.parametrize("body,needle", BAD_CREATE_BODIES)
def test_bad_create_bodies(api, seeded, body, needle):
    response = api.client.post(api.jobs_path, content=body, headers={"content-type": "application/json"})
    assert needle in error_of(response, 400, "INVALID_ARGUMENT")


def test_unknown_fields_are_ignored_not_stored(api):
    # The documented rule (docs/api.md): unknown names are dropped at any depth, so newer clients keep working.
    job = api.create("lenient", futureField={"x": 1}, environment={"futureEnvField": 1, "tempStoragePrefix": "/tmp/t"})
    full = api.get(job["id"], view="JOB_VIEW_ALL").json()
    assert "futureField" not in full and full["environment"] == {"tempStoragePrefix": "/tmp/t"}
    updated = api.update(job["id"], {"requestedState": "JOB_STATE_CANCELLED", "futureField": 1})
    assert updated.json()["currentState"] == "JOB_STATE_CANCELLED"


def test_proto_names_spelled_back_from_json_names_are_exact():
    # Bodies checked against the discovery document take proto field names too (docs/api.md, "Field names"):
    # from the protobuf descriptor where google-cloud-dataflow-client has the message, else spelled back from the
    # JSON name. Spelling back agrees with every descriptor (proto-plus adds "_" to names such as `type`), and
    # the names it is used for have no two capitals in a row, where it could guess wrong.
    import re

    from beamport import schema, wire

    for name, definition in schema._schemas().items():
        known = wire.proto_names(name) or {}
        for json_name in definition.get("properties") or {}:
            if json_name in known:
                assert known[json_name].rstrip("_") == schema._derived_proto_name(json_name), (name, json_name)
            else:
                assert re.fullmatch(r"[a-z][a-z0-9]*([A-Z][a-z0-9]*)*", json_name), (name, json_name)


@pytest.mark.parametrize(
    "body,status,needle",
    [
        (b'{"requestedState": "JOB_STATE_NOPE"}', "INVALID_ARGUMENT", "JOB_STATE_NOPE"),
        (b'{"requestedState": 99}', "INVALID_ARGUMENT", "99"),
        (b'{"requestedState": true}', "INVALID_ARGUMENT", "requestedState"),
        (b'{"requestedState": "JOB_STATE_PENDING"}', "INVALID_ARGUMENT", "cannot be requested"),
        (b"{broken", "INVALID_ARGUMENT", "Invalid JSON"),
        (b"", "INVALID_ARGUMENT", "Nothing to update"),
        (b'{"requestedState": "JOB_STATE_DRAINED"}', "FAILED_PRECONDITION", "batch"),
        (b'{"requestedState": "JOB_STATE_DONE"}', "FAILED_PRECONDITION", "JOB_STATE_DONE"),
    ],
)
def test_bad_updates(api, seeded, body, status, needle):
    response = api.client.put(f"{api.jobs_path}/{seeded['batch']['id']}", content=body, headers=JSON)
    assert needle in error_of(response, 400, status)


def test_terminal_jobs_refuse_changes(api, seeded):
    path = f"{api.jobs_path}/{seeded['stream']['id']}"
    error_of(api.client.put(path, json={"requestedState": "JOB_STATE_CANCELLED"}), 400, "FAILED_PRECONDITION")
    error_of(
        api.client.put(path, params={"updateMask": "labels"}, json={"labels": {"a": "b"}}), 400, "FAILED_PRECONDITION"
    )


def test_ids_that_do_not_exist_or_belong_elsewhere(server, api, seeded):
    job_id = seeded["batch"]["id"]
    error_of(api.get("2020-01-01_00_00_00-123"), 404, "NOT_FOUND")
    error_of(api.messages("2020-01-01_00_00_00-123"), 404, "NOT_FOUND")
    error_of(api.client.get(f"{api.jobs_path}/2020-01-01_00_00_00-123/metrics"), 404, "NOT_FOUND")
    error_of(api.update("2020-01-01_00_00_00-123", {"requestedState": "JOB_STATE_CANCELLED"}), 404, "NOT_FOUND")
    # Another project cannot see or change this project's job.
    other = Api(server.url, "someone-else")
    error_of(other.get(job_id), 404, "NOT_FOUND")
    error_of(other.messages(job_id), 404, "NOT_FOUND")
    error_of(other.update(job_id, {"requestedState": "JOB_STATE_CANCELLED"}), 404, "NOT_FOUND")
    # ... nor another region of the same project.
    error_of(
        Api(server.url, api.project, "europe-west1").update(job_id, {"requestedState": "JOB_STATE_CANCELLED"}),
        404,
        "NOT_FOUND",
    )


def raw_request(server: Server, request_line: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes exactly as written (no client-side path normalisation)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = f"{request_line}\r\nHost: localhost\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        sock.sendall(head.encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    "path",
    [
        "/v1b3/projects/{p}/locations/us-central1/jobs/..",
        "/v1b3/projects/{p}/locations/us-central1/jobs/../../../etc/passwd",
        "/v1b3/projects/{p}/locations/us-central1/jobs/%2E%2E",
        "/v1b3/projects/{p}/locations/us-central1/jobs/{job}%2F..",
        "/v1b3/projects/{p}/locations/us-central1/jobs/..%2F..%2Fbeamport.db",
        "/v1b3/projects/../locations/us-central1/jobs",
        "/v1b3/projects/{p}/locations/..%2Fx/jobs",
        "/v1b3/projects/{p}%2Fx/locations/us-central1/jobs",
    ],
)
def test_path_tricks(server, api, seeded, path):
    path = path.format(p=api.project, job=seeded["batch"]["id"])
    for method in ("GET", "PUT"):
        status, body = raw_request(server, f"{method} {path} HTTP/1.1", b'{"requestedState": "JOB_STATE_CANCELLED"}')
        assert status in (400, 404), (path, status, body)
        assert b'"error"' in body and b"root:" not in body


@pytest.mark.parametrize(
    "params,needle",
    [
        ({"pageToken": "garbage"}, "page token"),
        ({"pageSize": "-1"}, "pageSize"),
        ({"pageSize": "many"}, "pageSize"),
        ({"filter": "SOME"}, "filter"),
        ({"view": "JOB_VIEW_EVERYTHING"}, "view"),
        ({"createTimeRange.startTime": "last week"}, "createTimeRange.startTime"),
        ({"$.xgafv": "3"}, "xgafv"),
    ],
)
def test_bad_query_parameters(api, seeded, params, needle):
    assert needle in error_of(api.list(**params), 400, "INVALID_ARGUMENT")


def test_bad_message_queries(api, seeded):
    job_id = seeded["batch"]["id"]
    error_of(api.messages(job_id, minimumImportance="LOUD"), 400, "INVALID_ARGUMENT")
    error_of(api.messages(job_id, startTime="noon"), 400, "INVALID_ARGUMENT")
    error_of(
        api.messages(job_id, pageToken=api.list(pageSize=1).json().get("nextPageToken") or "x"), 400, "INVALID_ARGUMENT"
    )


def test_unknown_paths_and_methods(server, seeded, api):
    error_of(api.client.get("/v1b3/projects/p/locations/us-central1/nothing"), 404, "NOT_FOUND")
    error_of(api.client.get("/nothing-here"), 404, "NOT_FOUND")
    error_of(api.client.get("/console/no-such-file.js"), 404, "NOT_FOUND")
    error_of(api.client.post("/"), 404, "NOT_FOUND")  # / is the console's page: GET only
    error_of(api.client.delete(f"{api.jobs_path}/{seeded['batch']['id']}"), 404, "NOT_FOUND")


def test_huge_body_with_content_length_is_refused(api, seeded):
    body = b'{"name": "huge", "labels": {"x": "' + b"a" * (33 * 1024 * 1024) + b'"}}'
    response = api.client.post(api.jobs_path, content=body, headers=JSON)
    assert "exceeds the limit" in error_of(response, 400, "INVALID_ARGUMENT")


def test_chunked_body_over_limit_is_refused_without_reading_it_whole(tmp_path):
    server = Server(tmp_path / "data", extra_args=(*API_ONLY, "--max-request-bytes", "4096")).start()
    try:
        api = Api(server.url, "small-limit")

        def chunks():
            yield b'{"name": "chunked", "labels": {"x": "'
            for _ in range(1000):
                yield b"a" * 1024
            yield b'"}}'

        response = api.client.post(api.jobs_path, content=chunks(), headers=JSON)
        assert "4096 bytes" in error_of(response, 400, "INVALID_ARGUMENT")
        assert api.create("small", labels={"a": "b"})["name"] == "small"  # within the limit: fine
        assert [j["name"] for j in api.all_jobs()] == ["small"]
    finally:
        server.stop()


# -- issue 14: inputs that answered 500 -------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _deep_object(levels: int, leaf=1):
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def _deep_list(levels: int):
    value = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    "fields",
    [
        "a(" * 1000 + "b" + ")" * 1000,
        "/".join(["a"] * 5000),
        "a(" * 33 + "b" + ")" * 33,
        "jobs(" * 20 + "a/" * 20 + "b",
    ],
)
def test_a_field_selection_nested_too_deep_is_refused(api, seeded, fields):
    job_id = seeded["batch"]["id"]
    for path in (api.jobs_path, f"{api.jobs_path}/{job_id}", f"{api.jobs_path}/{job_id}/messages"):
        response = api.client.get(path, params={"fields": fields})
        assert "nested deeper than 32 levels" in error_of(response, 400, "INVALID_ARGUMENT")
    response = api.client.post(api.jobs_path, params={"fields": fields}, json={"name": "not-created"})
    error_of(response, 400, "INVALID_ARGUMENT")


def test_a_field_selection_at_the_depth_limit_still_selects(api, seeded):
    fields = "jobs(" + "a(" * 30 + "b" + ")" * 30 + ",id)"  # 32 levels
    response = api.list(fields=fields)
    assert response.status_code == 200, response.text
    assert {j["id"] for j in response.json()["jobs"]} == {seeded["batch"]["id"], seeded["stream"]["id"]}


@pytest.mark.parametrize("params", [{"name": "a\x00b"}, {"pageToken": "\x00"}, {"view\x00": "x"}, {"fields": "id\x00"}])
def test_nul_in_a_query_parameter_is_refused(api, seeded, params):
    assert "NUL" in error_of(api.list(**params), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize(
    "path",
    ["/beamport/v1/workers/a%00b", "/beamport/v1/projects/{p}/sqlTables/a%00b", "{jobs}/a%00b", "{jobs}/%00/messages"],
)
def test_nul_in_a_path_is_refused(api, seeded, path):
    path = path.format(p=api.project, jobs=api.jobs_path)
    assert "NUL" in error_of(api.client.get(path), 400, "INVALID_ARGUMENT")


def test_nul_in_a_template_path_is_refused(server, api, seeded, tmp_path):
    path = f"{api.jobs_path.rsplit('/', 1)[0]}/templates:get"
    response = api.client.get(path, params={"gcsPath": f"{tmp_path}/a\x00b"})
    error_of(response, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("where", ["pipelineUrl", "sqlTable", "containerSpecGcsPath", "templateParameter"])
def test_nul_in_a_path_naming_field_is_refused_and_stores_nothing(api, seeded, tmp_path, where):
    nul = f"{tmp_path}/a\x00b"
    base = api.jobs_path.rsplit("/", 1)[0]
    tables = f"/beamport/v1/projects/{api.project}/sqlTables"
    template = tmp_path / "template.json"
    template.write_text(json.dumps({"environment": {"sdkPipelineOptions": {"options": {"input": ""}}}}))
    parameter = {"name": "input", "label": "In", "helpText": "in", "paramType": "GCS_READ_FILE"}
    metadata = {"name": "T", "parameters": [parameter]}
    (tmp_path / "template.json_metadata").write_text(json.dumps(metadata))
    if where == "pipelineUrl":
        environment = {"sdkPipelineOptions": {"options": {"pipelineUrl": nul}}}
        response = api.client.post(api.jobs_path, json={"name": "nul", "environment": environment})
    elif where == "sqlTable":
        response = api.client.post(tables, json={"name": "nul", "path": nul, "format": "csv"})
    elif where == "containerSpecGcsPath":
        body = {"launchParameter": {"jobName": "nul", "containerSpecGcsPath": nul}}
        response = api.client.post(f"{base}/flexTemplates:launch", json=body)
    else:
        body = {"jobName": "nul", "parameters": {"input": nul}}
        response = api.client.post(f"{base}/templates:launch", params={"gcsPath": str(template)}, json=body)
    assert response.status_code in (400, 403, 404), response.text
    error_of(response, response.status_code, response.json()["error"]["status"])
    assert api.client.get(tables).json() == {"tables": []}


@pytest.mark.parametrize("kind", ["jobs", "messages"])
@pytest.mark.parametrize(
    "position", ["99999999999999999999999", "9223372036854775808", "-1", "1e5", "\u0663", "9" * 5000, ""]
)
def test_a_page_token_beyond_the_store_is_refused(api, seeded, kind, position):
    token = _b64(f"{kind}:{position}")
    if kind == "jobs":
        response = api.list(pageToken=token)
    else:
        response = api.messages(seeded["batch"]["id"], pageToken=token)
    assert "Invalid page token" in error_of(response, 400, "INVALID_ARGUMENT")


def test_a_page_token_at_the_last_position_pages_from_there(api, seeded):
    response = api.list(pageToken=_b64("jobs:9223372036854775807"))
    assert response.status_code == 200, response.text
    assert len(response.json()["jobs"]) == 2
    response = api.client.get(
        f"/v1b3/projects/{api.project}/jobs:aggregated", params={"pageToken": _b64("jobs:99999999999999999999999")}
    )
    assert "Invalid page token" in error_of(response, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("levels", [98, 900, 1100])
def test_a_body_nested_deeper_than_the_limit_is_refused(api, seeded, levels):
    # The body, environment and sdkPipelineOptions are 3 levels: 98 more make 101.
    body = {"name": "deep", "environment": {"sdkPipelineOptions": {"options": _deep_object(levels)}}}
    content = json.dumps(body) if levels < 900 else _dumps_deep(body, levels)
    response = api.client.post(api.jobs_path, content=content, headers=JSON)
    assert "deeper than 100 levels" in error_of(response, 400, "INVALID_ARGUMENT")


def _dumps_deep(body: dict, levels: int) -> str:
    """JSON of a body whose options nest `levels` deep (deeper than Python's json writes)."""
    shallow = json.dumps({**body, "environment": {"sdkPipelineOptions": {"options": "DEEP"}}})
    return shallow.replace('"DEEP"', '{"a":' * levels + "1" + "}" * levels)


def test_a_body_at_the_depth_limit_is_kept_and_shown(api):
    options = {"deep": _deep_object(96)}  # the body, environment, sdkPipelineOptions, options: 3 + 1 + 96 = 100
    job = api.create("deep-enough", environment={"sdkPipelineOptions": {"options": options}})
    full = api.get(job["id"], view="JOB_VIEW_ALL")
    assert full.status_code == 200, full.text
    assert full.json()["environment"]["sdkPipelineOptions"]["options"] == options
    listed = api.list(view="JOB_VIEW_ALL", fields="jobs(environment)").json()["jobs"]
    assert listed[0]["environment"]["sdkPipelineOptions"]["options"] == options


def test_a_template_file_nested_too_deep_is_refused(api, seeded, tmp_path):
    """A template's file is JSON too, read without the request body's limit: the job made of it has it."""
    template = tmp_path / "deep-template.json"
    deep = '{"a":' * 300 + "1" + "}" * 300
    template.write_text('{"environment": {"sdkPipelineOptions": {"options": {"input": "", "x": ' + deep + "}}}}")
    base = api.jobs_path.rsplit("/", 1)[0]
    body = {"jobName": "deep-template", "parameters": {"input": "in"}}
    response = api.client.post(f"{base}/templates:launch", params={"gcsPath": str(template)}, json=body)
    assert "deeper than 100 levels" in error_of(response, 400, "INVALID_ARGUMENT")
    response = api.client.post(f"{base}/templates", json={**body, "gcsPath": str(template)})
    assert "deeper than 100 levels" in error_of(response, 400, "INVALID_ARGUMENT")


def test_a_sql_table_schema_nested_too_deep_is_refused(api, seeded, tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a\n1\n")
    tables = f"/beamport/v1/projects/{api.project}/sqlTables"
    body = {"name": "deep", "path": str(csv), "format": "csv", "schema": _deep_list(300)}
    assert "deeper than 100 levels" in error_of(api.client.post(tables, json=body), 400, "INVALID_ARGUMENT")
    assert api.client.get(tables).json() == {"tables": []}


def test_a_sql_query_nested_too_deep_is_refused(api, seeded, tmp_path):
    query = "SELECT " + "(" * 500 + "1" + ")" * 500
    base = api.jobs_path.rsplit("/", 1)[0]
    validated = api.client.get(f"{base}/sql:validate", params={"query": query})
    assert validated.status_code in (200, 400), validated.text
    if validated.status_code == 200:
        assert validated.json().get("errorMessage")
    body = {"query": query, "jobName": "deep-sql", "output": str(tmp_path / "out")}
    response = api.client.post(f"/beamport/v1/projects/{api.project}/locations/{api.region}/sql:query", json=body)
    error_of(response, 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("removed", ["everything", "wal"])
def test_deleted_database_files_stop_the_server_accepting_anything(tmp_path, removed):
    """SQLite writes on into a deleted file that no one will read again: the server notices and answers 503
    rather than acknowledge what it cannot keep; after a restart nothing it refused is there."""
    server = Server(tmp_path / "data", extra_args=API_ONLY).start()
    try:
        api = Api(server.url, "gone")
        got = f"{api.jobs_path}/{api.create('before')['id']}"
        assert api.client.get(got).status_code == 200  # reads by id have a connection of their own: opened now
        database = server.data_dir / "beamport.db"
        for path in [database, Path(f"{database}-wal"), Path(f"{database}-shm")]:
            if removed == "everything" or path.name.endswith("-wal"):
                path.unlink()
        for _ in range(3):
            message = error_of(api.client.post(api.jobs_path, json={"name": "after"}), 503, "UNAVAILABLE")
            assert "database is gone" in message and "restarted" in message
            error_of(api.list(), 503, "UNAVAILABLE")
            error_of(api.client.get(got), 503, "UNAVAILABLE")
    finally:
        server.stop()
    server.start()
    try:
        names = [j["name"] for j in Api(server.url, "gone").all_jobs()]
        assert "after" not in names
    finally:
        server.stop()


def test_a_deleted_database_is_noticed_without_a_write(tmp_path):
    server = Server(tmp_path / "data", extra_args=API_ONLY).start()
    try:
        api = Api(server.url, "gone-idle")
        got = f"{api.jobs_path}/{api.create('before')['id']}"
        assert api.client.get(got).status_code == 200
        for path in server.data_dir.glob("beamport.db*"):
            path.unlink()
        deadline = time.monotonic() + 30  # the sweeper looks every second (later on a busy machine)
        while api.list().status_code != 503 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "database is gone" in error_of(api.list(), 503, "UNAVAILABLE")
        assert "database is gone" in error_of(api.client.get(got), 503, "UNAVAILABLE")
        assert "database is gone" in server.log_path.read_text()
    finally:
        server.stop()
