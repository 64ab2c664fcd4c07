"""Quotas and fairness (issue 14): Dataflow's limits on a job's fields, lists that do not stall other requests,
per-project quotas on jobs, fair leases across projects, QUEUED behind a flood, time limits on receiving a
request, and the cleanup of what a killed attempt left in its output folders. Each test is one of the attacks
measured against `beamport serve`, which now fails."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import API_ONLY, Api, Server, new_postgres_database

JSON = {"content-type": "application/json"}
NO_QUOTAS = ("--max-active-jobs", "0", "--max-jobs-per-minute", "0")
LEASE_ANY = "/v1b3/projects/-/locations/-/jobs/-/workItems:lease"


def error_of(response: httpx.Response, code: int, status: str) -> str:
    assert response.status_code == code, response.text
    error = response.json()["error"]
    assert error["status"] == status, error
    return error["message"]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request):
    return new_postgres_database() if request.param == "postgres" else None


# -- Dataflow's limits, field by field --------------------------------------------------------------------------


def test_labels_follow_dataflows_rules(api):
    refused = {
        "65 labels": {f"k{i}": "v" for i in range(65)},
        "a 64-character key": {"k" * 64: "v"},
        "a 64-character value": {"k": "v" * 64},
        "an upper-case key": {"Team": "data"},
        "a key starting with a digit": {"1team": "data"},
        "a value with a dot": {"team": "data.eng"},
        "a value over 128 bytes": {"k": "\u4e00" * 43},  # 43 characters of 3 bytes each
        "an empty key": {"": "v"},
        "a 1 MiB value": {"k": "v" * 1024 * 1024},
    }
    for what, labels in refused.items():
        message = error_of(
            api.client.post(api.jobs_path, json={"name": "labelled", "labels": labels}), 400, "INVALID_ARGUMENT"
        )
        assert "'labels" in message, (what, message)
    assert api.all_jobs() == []
    # The largest labels Dataflow allows, and international lower-case letters, are fine.
    biggest = {f"k{i:02d}" + "x" * 60: "v" * 63 for i in range(64)}
    assert api.create("labelled", labels=biggest)["labels"] == biggest
    assert api.create("international", labels={"équipe": "données", "k": ""})["labels"]["équipe"] == "données"


def test_a_30_mib_label_is_refused_before_it_is_read_and_nothing_is_stored(api):
    body = b'{"name": "huge", "labels": {"x": "' + b"a" * (30 * 1024 * 1024) + b'"}}'
    message = error_of(api.client.post(api.jobs_path, content=body, headers=JSON), 400, "INVALID_ARGUMENT")
    assert "exceeds the limit: 20971520 bytes" in message  # Dataflow's limit on a job request, 20 MB
    assert api.all_jobs() == []


def test_job_size_limits_name_their_field(api):
    def refused(body, field):
        message = error_of(api.client.post(api.jobs_path, json=body), 400, "INVALID_ARGUMENT")
        assert f"'{field}'" in message, message
        return message

    refused({"name": "long-request-id", "clientRequestId": "r" * 257}, "clientRequestId")
    refused({"name": "long-replace", "replaceJobId": "1" * 129}, "replaceJobId")
    refused({"name": "metadata", "jobMetadata": {"userDisplayProperties": {"k": "v" * 20_000}}}, "jobMetadata")
    # Every field a list shows, together (here an output-only field a client sent anyway).
    refused({"name": "resources", "serviceResources": {"zones": ["z" * 100] * 1000}}, "serviceResources")
    steps = [{"kind": "ParallelDo", "name": f"s{i}", "properties": {"blob": "x" * 100_000}} for i in range(110)]
    assert "job graph is too large" in refused({"name": "big-graph", "steps": steps}, "steps")
    name_error = error_of(api.client.post(api.jobs_path, json={"name": "a" * 1025}), 400, "INVALID_ARGUMENT")
    assert "at most 1024 characters" in name_error and len(name_error) < 400  # the name is not echoed whole

    # A chunked body (no declared length) under --max-request-bytes, whose job is over 20 MB.
    def chunks():
        yield b'{"name": "chunked", "environment": {"sdkPipelineOptions": {"options": {"blob": "'
        for _ in range(21):
            yield b"b" * 1024 * 1024
        yield b'"}}}}'

    message = error_of(api.client.post(api.jobs_path, content=chunks(), headers=JSON), 400, "INVALID_ARGUMENT")
    assert "'job'" in message and "20971520" in message
    assert api.all_jobs() == []


def test_label_updates_follow_the_same_rules(api):
    job = api.create("relabel", labels={"a": "1"})
    message = error_of(api.update(job["id"], {"labels": {"Bad": "x"}}, updateMask="labels"), 400, "INVALID_ARGUMENT")
    assert "'labels'" in message
    assert api.get(job["id"]).json()["labels"] == {"a": "1"}


def test_template_launches_go_through_the_same_rules(api):
    template = Path("/tmp") / f"beamport-quota-template-{uuid.uuid4().hex[:8]}"
    template.write_text(
        json.dumps({"name": "t", "environment": {"sdkPipelineOptions": {"options": {"greeting": None}}}})
    )
    try:
        path = f"/v1b3/projects/{api.project}/locations/us-central1/templates:launch"
        launched = api.client.post(
            path,
            params={"gcsPath": str(template)},
            json={"jobName": "from-template", "environment": {"additionalUserLabels": {"Team": "x"}}},
        )
        assert "'environment.additionalUserLabels'" in error_of(launched, 400, "INVALID_ARGUMENT")
        launched = api.client.post(path, params={"gcsPath": str(template)}, json={"jobName": "Bad_Name"})
        assert "Invalid job name" in error_of(launched, 400, "INVALID_ARGUMENT")
        assert api.all_jobs() == []
    finally:
        template.unlink()


# -- lists off the event loop -----------------------------------------------------------------------------------


def _seed_big_jobs(data_dir: Path, database_url: str | None, project: str, count: int) -> None:
    """Jobs with the largest labels Dataflow allows (a ~9 KB summary each), written straight to the store."""
    from beamport import wire
    from beamport.service import model
    from beamport.service.documents import record_from_document
    from beamport.store import open_store
    from beamport.store.base import Write

    labels = {f"k{i:02d}" + "x" * 60: "v" * 63 for i in range(64)}
    store = open_store(database_url, data_dir)
    try:
        now = wire.now_us()
        records = []
        for i in range(count):
            stamp = wire.format_timestamp_us(now + i)
            doc = {
                "id": model.new_job_id(now),
                "projectId": project,
                "name": f"big-{i}",
                "location": "us-central1",
                "type": model.BATCH,
                "currentState": model.DONE,
                "currentStateTime": stamp,
                "createTime": stamp,
                "startTime": stamp,
                "labels": labels,
            }
            records.append(record_from_document(doc))
        store.write(Write(new_jobs=records))
    finally:
        store.close()


def test_large_lists_do_not_stall_other_requests(tmp_path, store_url):
    data = tmp_path / "data"
    data.mkdir()
    _seed_big_jobs(data, store_url, "big", 1000)
    server = Server(data, database_url=store_url, extra_args=API_ONLY).start()
    try:
        small = Api(server.url, "small").create("tiny")
        tiny = f"{server.url}/v1b3/projects/small/locations/us-central1/jobs/{small['id']}"
        page = httpx.get(
            f"{server.url}/v1b3/projects/big/locations/us-central1/jobs", params={"pageSize": 1000}, timeout=60
        )
        assert page.status_code == 200 and len(page.json()["jobs"]) == 1000 and len(page.content) > 8_000_000

        stop = threading.Event()
        list_latencies: list[float] = []

        def lister():
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    client.get(f"{server.url}/v1b3/projects/big/jobs:aggregated", params={"pageSize": 1000})
                    list_latencies.append(time.monotonic() - started)

        threads = [threading.Thread(target=lister) for _ in range(5)]
        for thread in threads:
            thread.start()
        latencies = []
        try:
            time.sleep(0.5)
            with httpx.Client(timeout=60) as client:
                until = time.monotonic() + 5
                while time.monotonic() < until:
                    started = time.monotonic()
                    assert client.get(tiny).status_code == 200
                    latencies.append(time.monotonic() - started)
                    time.sleep(0.02)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        latencies.sort()
        list_latencies.sort()
        tiny_median, list_median = latencies[len(latencies) // 2], list_latencies[len(list_latencies) // 2]
        # Five 9 MB lists in flight all along. The tiny request shares the CPU with them, but never waits for a
        # list to be built: built on the event loop (SQLite), lists made it wait about two thirds of a list's
        # time (and 2 s with larger jobs); now a small fraction. (Relative, so that a busy machine does not fail
        # the test. On PostgreSQL every read was and is in the thread pool.)
        if store_url is None:
            assert tiny_median < list_median / 4, (tiny_median, list_median, latencies[-5:])
        assert latencies[-1] < 1.0, latencies[-5:]
    finally:
        server.stop()


# -- per-project quotas -----------------------------------------------------------------------------------------


def test_active_job_quota(tmp_path, store_url):
    server = Server(
        tmp_path / "data",
        database_url=store_url,
        extra_args=(*API_ONLY, "--max-active-jobs", "3", "--max-jobs-per-minute", "0"),
    ).start()
    try:
        api = Api(server.url, "flood")
        jobs = [api.create(f"job-{i}") for i in range(3)]
        message = error_of(api.client.post(api.jobs_path, json={"name": "job-3"}), 429, "RESOURCE_EXHAUSTED")
        assert "Dataflow quota error for jobs-per-project quota" in message and "running 3 jobs" in message
        # A create of a name that has an active job still answers that job; so does a retried create.
        assert api.create("job-0")["id"] == jobs[0]["id"]
        # Another region of the project counts too; another project does not.
        other_region = Api(server.url, "flood", "europe-west1").client.post(
            "/v1b3/projects/flood/locations/europe-west1/jobs", json={"name": "elsewhere"}
        )
        error_of(other_region, 429, "RESOURCE_EXHAUSTED")
        assert Api(server.url, "other").create("job-0")["name"] == "job-0"
        # A job that ends frees its place.
        assert api.update(jobs[0]["id"], {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
        assert api.create("job-3")["name"] == "job-3"

        # Concurrent creates cannot pass the quota together.
        racing = Api(server.url, "racing")
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda i: racing.client.post(racing.jobs_path, json={"name": f"r-{i}"}), range(12)))
        assert sorted(r.status_code for r in answers) == [200] * 3 + [429] * 9
        assert len(racing.all_jobs()) == 3
    finally:
        server.stop()


def test_jobs_created_per_minute_quota(tmp_path):
    server = Server(tmp_path / "data", extra_args=(*API_ONLY, "--max-jobs-per-minute", "5")).start()
    try:
        api = Api(server.url, "burst")
        for i in range(5):
            job = api.create(f"job-{i}")
            assert api.update(job["id"], {"requestedState": "JOB_STATE_CANCELLED"}).status_code == 200
        message = error_of(api.client.post(api.jobs_path, json={"name": "job-5"}), 429, "RESOURCE_EXHAUSTED")
        assert message.startswith(
            "Quota exceeded for quota metric 'Job creation requests' and limit "
            "'Job creation requests per minute per project'"
        )
        assert Api(server.url, "calm").create("job-0")["name"] == "job-0"
        assert len(api.all_jobs()) == 5
    finally:
        server.stop()


# -- fair leases, QUEUED ----------------------------------------------------------------------------------------


def test_leases_are_fair_across_projects(tmp_path):
    server = Server(tmp_path / "data", extra_args=(*API_ONLY, *NO_QUOTAS)).start()
    try:
        flood = Api(server.url, "flood")
        flooded = [flood.create(f"empty-{i}")["id"] for i in range(40)]
        real = Api(server.url, "real").create("real-job")["id"]
        later = Api(server.url, "later").create("later-job")["id"]

        def lease(worker: str) -> str:
            answer = httpx.post(server.url + LEASE_ANY, json={"workerId": worker}, timeout=30).json()
            return answer["workItems"][0]["jobId"]

        # Nothing runs: the oldest waiting work first (the flood's). Then the projects with nothing running,
        # oldest first, before the flood's second job.
        assert lease("w1") == flooded[0]
        assert lease("w2") == real
        assert lease("w3") == later
        assert lease("w4") == flooded[1]
    finally:
        server.stop()


@pytest.mark.slow
def test_jobs_waiting_behind_a_flood_show_queued(tmp_path):
    server = Server(tmp_path / "data", extra_args=("--workers", "1", "--allow-path", "/tmp", *NO_QUOTAS)).start()
    try:
        api = Api(server.url, "flood")
        ids = [api.create(f"empty-{i}")["id"] for i in range(130)]
        # Every waiting job is QUEUED while the one local worker is busy, the newest too (only the oldest 100
        # were, and the rest stayed PENDING).
        deadline = time.monotonic() + 20
        while "JOB_STATE_PENDING" in (states := [api.get(job_id).json()["currentState"] for job_id in ids[100:]]):
            assert time.monotonic() < deadline, states
            time.sleep(0.2)
        assert states[-1] == "JOB_STATE_QUEUED"
        assert any("The job is queued" in m["messageText"] for m in api.messages(ids[-1]).json()["jobMessages"])
    finally:
        server.stop()


# -- time limits on receiving a request -------------------------------------------------------------------------


def _half_request(port: int, body: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    if body:
        sock.sendall(
            b"POST /v1b3/projects/slow/locations/us-central1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"name": "sl'
        )
    else:
        sock.sendall(b"GET /v1b3/projects/slow/locations/us-central1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAcc")
    return sock


def _answer_and_close(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends before it closes the connection (asserting that it does, within `timeout`)."""
    sock.settimeout(timeout)
    received = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk


def test_half_sent_requests_are_dropped_and_others_are_served_meanwhile(tmp_path):
    server = Server(
        tmp_path / "data", extra_args=(*API_ONLY, "--request-header-timeout", "2", "--request-body-timeout", "2")
    ).start()
    sockets = []
    try:
        api = Api(server.url, "served")
        opened = time.monotonic()
        sockets = [_half_request(server.port, body=i % 2 == 0) for i in range(400)]
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]  # send nothing at all
        # Meanwhile, other requests are served at once.
        for i in range(10):
            started = time.monotonic()
            assert api.create(f"meanwhile-{i}")["name"] == f"meanwhile-{i}"
            assert api.list().status_code == 200
            assert time.monotonic() - started < 1
        for sock in sockets + idle:
            answer = _answer_and_close(sock, timeout=opened + 6 - time.monotonic())
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            sock.close()
        assert time.monotonic() - opened < 6
        assert {j["name"] for j in api.all_jobs()} == {f"meanwhile-{i}" for i in range(10)}
        half_body = _half_request(server.port, body=True)
        answer = _answer_and_close(half_body, timeout=5)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"DEADLINE_EXCEEDED" in answer and b"request body" in answer
        assert Api(server.url, "slow").all_jobs() == []
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


def test_an_answer_before_the_whole_body_closes_the_connection(tmp_path):
    server = Server(tmp_path / "data", extra_args=API_ONLY).start()
    try:
        sock = socket.create_connection(("127.0.0.1", server.port))
        # Declared over the job request limit: refused from its length; the rest cannot trickle in afterwards.
        sock.sendall(
            b"POST /v1b3/projects/p/locations/us-central1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 30000000\r\n\r\n{"name"'
        )
        answer = _answer_and_close(sock, timeout=5)
        assert answer.startswith(b"HTTP/1.1 400 ") and b"connection: close" in answer.lower()
        sock.close()
        # Requests answered whole keep their connection alive.
        with httpx.Client(base_url=server.url) as client:
            for i in range(3):
                assert client.get("/v1b3/projects/p/locations/us-central1/jobs").headers.get("connection") != "close"
                created = client.post("/v1b3/projects/p/locations/us-central1/jobs", json={"name": f"kept-{i}"})
                assert created.status_code == 200 and created.headers.get("connection") != "close"
            assert client.get("/v1b3/projects/p/locations/us-central1/jobs").headers.get("connection") != "close"
    finally:
        server.stop()


def _read_response(reader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One HTTP/1.1 response from a socket's file: status line, headers (lower-case names), body."""
    status = reader.readline()
    headers = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, reader.read(int(headers[b"content-length"]))


def test_pipelined_and_kept_alive_requests_are_each_answered_whole_in_order(tmp_path):
    # A connection's responses go out a turn of the event loop at a time (http/timeouts.py, CoalescedWrites): each
    # whole, in the order asked, however many are asked at once.
    server = Server(tmp_path / "data", extra_args=API_ONLY).start()
    try:
        created = Api(server.url, "p").create("kept")
        ids = [created["id"], "2026-01-01_00_00_00-1", created["id"], "2026-01-01_00_00_00-2"]
        with socket.create_connection(("127.0.0.1", server.port)) as sock, sock.makefile("rb") as reader:
            for batch in (ids[:1], ids):  # one request, then four at once
                path = "GET /v1b3/projects/p/locations/us-central1/jobs/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                sock.sendall("".join(path.format(job_id) for job_id in batch).encode())
                for job_id in batch:
                    status, headers, body = _read_response(reader)
                    assert status.startswith(b"HTTP/1.1 200 " if job_id == created["id"] else b"HTTP/1.1 404 ")
                    assert job_id.encode() in body and json.loads(body)
                    assert headers.get(b"connection") != b"close"
    finally:
        server.stop()


def test_a_further_request_on_a_kept_alive_connection_is_timed_from_its_first_byte(tmp_path):
    server = Server(tmp_path / "data", extra_args=(*API_ONLY, "--request-header-timeout", "2")).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as sock, sock.makefile("rb") as reader:
            request = b"GET /v1b3/projects/p/locations/us-central1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            sock.sendall(request + b"\r\n")
            assert _read_response(reader)[0].startswith(b"HTTP/1.1 200 ")
            time.sleep(1.5)  # idle between requests: not counted
            sock.sendall(request + b"Acc")
            started = time.monotonic()
            sock.settimeout(6)
            answer = reader.read()
            assert answer.startswith(b"HTTP/1.1 408 ") and b"request line and headers" in answer
            assert 1.5 < time.monotonic() - started < 4
    finally:
        server.stop()


# -- what a killed attempt left -----------------------------------------------------------------------------


def test_temporary_directories_of_earlier_attempts_are_removed_on_retry(tmp_path):
    import apache_beam as beam

    from beamport import wire
    from beamport.engine.base import JOB_TYPE_BATCH, StagedJob
    from beamport.engine.cleanup import clean_up_earlier_attempts
    from beamport.files import FilePolicy
    from beamport.service import model

    out = tmp_path / "out"
    out.mkdir()
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create(["a"]) | beam.io.WriteToText(str(out / "counts"), file_name_suffix=".txt")
    staged = StagedJob(model.new_job_id(wire.now_us() - 5_000_000), JOB_TYPE_BATCH, pipeline.to_runner_api(), {})

    def temp_dir(prefix: str, made: uuid.UUID) -> Path:
        path = out / f"beam-temp-{prefix}-{made.hex}"
        path.mkdir()
        (path / "part").write_text("partial output")
        return path

    killed = temp_dir("counts", uuid.uuid1())  # an earlier attempt's, killed before it finished
    older = temp_dir("counts", uuid.UUID(fields=(0, 0, 0x1000, 0x80, 0, 1)))  # made long before the job
    other_sink = temp_dir("elsewhere", uuid.uuid1())  # another sink's
    mine = out / "counts-00000-of-00001.txt"
    mine.write_text("final output")

    assert clean_up_earlier_attempts(staged, 1) == []  # a first attempt has nothing to clean up
    assert killed.exists()
    assert clean_up_earlier_attempts(staged, 2, FilePolicy([tmp_path / "elsewhere"])) == []  # not its to touch
    assert killed.exists()
    messages = clean_up_earlier_attempts(staged, 2, FilePolicy([tmp_path]))
    assert len(messages) == 1 and str(killed) in messages[0]
    assert not killed.exists() and older.exists() and other_sink.exists() and mine.exists()
    assert clean_up_earlier_attempts(staged, 3, FilePolicy([tmp_path])) == []
