"""Bad requests get the right Google-style error, and change nothing in the store."""

from __future__ import annotations

import socket

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
    error_of(api.client.put(path, params={"updateMask": "labels"}, json={"labels": {"a": "b"}}), 400, "FAILED_PRECONDITION")


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
    error_of(Api(server.url, api.project, "europe-west1").update(job_id, {"requestedState": "JOB_STATE_CANCELLED"}), 404, "NOT_FOUND")


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
    error_of(api.messages(job_id, pageToken=api.list(pageSize=1).json().get("nextPageToken") or "x"), 400, "INVALID_ARGUMENT")


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
