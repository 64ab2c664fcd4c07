"""`beamport serve --emulators gcs,metadata`: a GCS endpoint (fake-gcs-server, built once from the Go module
proxy) that Beam's Python GcsIO and Go-style resumable uploads both use, and a GCE metadata server whose token
Google's default credentials find with only environment variables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import go_programs
import httpx
import psutil
import pytest
from conftest import Api, Server, beamport_command, new_postgres_database
from test_running_jobs import TEXT, dataflow_flags, read_output, run

from beamport import emulators

pytestmark = pytest.mark.slow
EMULATOR_VARIABLES = ("STORAGE_EMULATOR_HOST", "GCE_METADATA_HOST", "GCE_METADATA_IP")


def need_emulator(emulator: emulators.Emulator) -> None:
    """The emulator installed (scripts/test installs them; here it is built or installed if it can be, else the test
    cannot run)."""
    installed = emulators.default_bin_dir() / emulator.binary
    if installed.is_file() or (installed / "complete").is_file():
        return
    done = subprocess.run(
        [sys.executable, "-m", "beamport", "emulators", "install", emulator.name],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        message = f"the {emulator.name} emulator cannot be installed here: {done.stderr.strip()} (scripts/test does it)"
        (pytest.fail if os.environ.get("CI") else pytest.skip)(message)


def need_gcs_emulator() -> None:
    need_emulator(emulators.GCS)


def go_program(name: str) -> Path:
    """tests/go/NAME, built (once: scripts/test builds them ahead)."""
    try:
        return go_programs.binary(name)
    except go_programs.BuildError as exc:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{exc} (scripts/test builds it)")
        raise


def read_env(data_dir: Path) -> dict[str, str]:
    lines = (data_dir / emulators.ENV_FILE).read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines)


def emulator_processes(server: Server) -> list[psutil.Process]:
    assert server.process is not None
    return [p for p in psutil.Process(server.process.pid).children(recursive=True) if "fake-gcs-server" in p.name()]


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory):
    """A server with workers and both emulators, its variables in this process's environment (as a client's)."""
    need_gcs_emulator()
    base = tmp_path_factory.mktemp("emulators")
    saved = {name: os.environ.pop(name) for name in EMULATOR_VARIABLES if name in os.environ}
    srv = Server(
        base / "data", extra_args=("--allow-path", str(base), "--workers", "1", "--emulators", "gcs,metadata")
    ).start()
    srv.root = base
    os.environ.update(read_env(srv.data_dir))
    yield srv
    srv.stop()
    for name in EMULATOR_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(saved)


def jobs_url(server: Server, project: str) -> str:
    return f"{server.url}/v1b3/projects/{project}/locations/us-central1/jobs"


def storage_client():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.storage import Client

    return Client(project="test", credentials=AnonymousCredentials())


def test_emulators_env_names_the_running_endpoints(gcs_server):
    printed = beamport_command("emulators", "env", "--data-dir", str(gcs_server.data_dir)).stdout
    env = read_env(gcs_server.data_dir)
    assert printed == (gcs_server.data_dir / emulators.ENV_FILE).read_text()
    assert set(env) == set(EMULATOR_VARIABLES)
    assert httpx.get(env["STORAGE_EMULATOR_HOST"] + "/storage/v1/b").status_code == 200


def test_a_python_pipeline_with_gs_temp_staging_and_output_runs_done(gcs_server, project, tmp_path):
    bucket = storage_client().create_bucket(f"wordcount-{project}")
    bucket.blob("in.txt").upload_from_string(TEXT)
    api = Api(gcs_server.url, project)
    module = "apache_beam.examples.wordcount"
    direct = tmp_path / "direct" / "out"
    (tmp_path / "in.txt").write_text(TEXT)
    run(["-m", module, "--input", str(tmp_path / "in.txt"), "--output", str(direct), "--runner=DirectRunner"])

    gs = f"gs://{bucket.name}"
    flags = [f for f in dataflow_flags(gcs_server, project, tmp_path, "gcs") if "_location=" not in f]
    flags += [f"--temp_location={gs}/temp", f"--staging_location={gs}/staging"]
    run(["-m", module, "--input", f"{gs}/in.txt", "--output", f"{gs}/out/counts", *flags])

    (job,) = api.all_jobs()
    assert job["currentState"] == "JOB_STATE_DONE"
    # Dataflow's name of the GCS resource, as the runner sent it (storage.googleapis.com/BUCKET/...).
    full = api.get(job["id"], view="JOB_VIEW_ALL").json()
    assert full["environment"]["tempStoragePrefix"].startswith(f"storage.googleapis.com/{bucket.name}/temp")
    outputs = [b for b in bucket.list_blobs(prefix="out/counts")]
    assert outputs, [b.name for b in bucket.list_blobs()]
    served = sorted(line for blob in outputs for line in blob.download_as_text().splitlines())
    assert served == read_output(direct) != []
    # WriteToText renamed its temporary files (a batch of copies and deletes): none is left.
    assert not [b.name for b in bucket.list_blobs() if "beam-temp" in b.name]


def test_resumable_uploads_in_chunks_as_go_does(gcs_server, project):
    """Go's storage client uploads in chunks through a resumable session (its Dataflow runner stages the worker
    binary so); google-cloud-storage does the same with a chunk size."""
    bucket = storage_client().create_bucket(f"resumable-{project}")
    data = os.urandom(3 * 256 * 1024 + 12345)
    blob = bucket.blob("worker", chunk_size=256 * 1024)
    blob.upload_from_string(data)
    assert bucket.blob("worker").download_as_bytes() == data
    assert bucket.get_blob("worker").size == len(data)


def test_gos_storage_client_uploads_in_chunks(gcs_server, project):
    """Go's own storage client (tests/go/gcs_upload), a resumable upload in 256 KiB chunks and a read back."""
    program = go_program("gcs_upload")
    bucket = storage_client().create_bucket(f"go-{project}")
    done = subprocess.run(
        [str(program), bucket.name, "worker", str(3 * 256 * 1024 + 777), str(256 * 1024)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert bucket.get_blob("worker").size == 3 * 256 * 1024 + 777


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_google_default_credentials_from_the_metadata_server_alone(tmp_path, project, backend):
    """With auth on: google.auth.default() finds the metadata server by GCE_METADATA_HOST/IP alone, and its token
    develops jobs in the metadata project only."""
    srv = Server(
        tmp_path / "data",
        database_url=new_postgres_database() if backend == "postgres" else None,
        auth=True,
        extra_args=("--workers", "0", "--emulators", "metadata", "--metadata-project", project),
    ).start()
    try:
        env = read_env(srv.data_dir)
        assert set(env) == {"GCE_METADATA_HOST", "GCE_METADATA_IP"}
        client_env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCE_", "CLOUDSDK_"))}
        client_env.update(env)
        script = (
            "import google.auth, google.auth.transport.requests as t\n"
            "credentials, project = google.auth.default()\n"
            "credentials.refresh(t.Request())\n"
            "print(project, credentials.service_account_email, credentials.token)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], env=client_env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        found_project, email, token = done.stdout.split()
        assert (found_project, email) == (project, "beamport-metadata@beamport.iam.gserviceaccount.com")
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(jobs_url(srv, project), headers=headers).status_code == 200
        assert httpx.get(jobs_url(srv, f"not-{project}"), headers=headers).status_code == 403
        # Go: golang.org/x/oauth2/google, as Beam Go's Dataflow runner finds its credentials (GCE_METADATA_HOST
        # alone; HOME without gcloud's files).
        go_env = {**client_env, "HOME": str(tmp_path), "GCE_METADATA_HOST": env["GCE_METADATA_HOST"]}
        go_env.pop("GCE_METADATA_IP")
        done = subprocess.run(
            [str(go_program("default_credentials"))], env=go_env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        go_project, go_token = done.stdout.split()
        assert go_project == project
        assert httpx.get(jobs_url(srv, project), headers={"Authorization": f"Bearer {go_token}"}).status_code == 200
        # As GCE's: no answer without Metadata-Flavor (a web page or a forwarding proxy cannot ask).
        token_url = f"http://{env['GCE_METADATA_HOST']}/computeMetadata/v1/instance/service-accounts/default/token"
        assert httpx.get(token_url).status_code == 403
        flavored = {"Metadata-Flavor": "Google"}
        assert httpx.get(token_url, headers={**flavored, "X-Forwarded-For": "10.0.0.1"}).status_code == 403
        assert httpx.get(token_url, headers=flavored).json()["token_type"] == "Bearer"
        # A web page that rebound its DNS name to 127.0.0.1 is same-origin and may send Metadata-Flavor: its Host
        # and the browser's Sec-Fetch-* and Origin headers give it away.
        port = env["GCE_METADATA_HOST"].rsplit(":", 1)[1]
        for browser in ({"Host": f"rebound.example:{port}"}, {"Sec-Fetch-Site": "same-origin"}, {"Origin": "null"}):
            assert httpx.get(token_url, headers={**flavored, **browser}).status_code == 403, browser
        assert httpx.get(token_url, headers={**flavored, "Host": f"localhost:{port}"}).status_code == 200
    finally:
        srv.stop()
    # Its tokens end with the server: the next start issues under a new key.
    srv.start()
    try:
        assert httpx.get(jobs_url(srv, project), headers=headers).status_code == 401
    finally:
        srv.stop()


def test_serve_stops_its_emulator_at_shutdown_and_when_killed(tmp_path, monkeypatch):
    need_gcs_emulator()
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    srv = Server(tmp_path / "data", extra_args=("--workers", "0", "--emulators", "gcs"))
    for stop in (signal.SIGTERM, signal.SIGKILL):
        srv.start()
        (emulator,) = emulator_processes(srv)
        endpoint = read_env(srv.data_dir)["STORAGE_EMULATOR_HOST"]
        assert httpx.get(endpoint + "/storage/v1/b").status_code == 200
        srv.stop(stop)
        emulator.wait(30)  # raises if it outlives the server
        assert not emulator.is_running()
        if stop == signal.SIGTERM:
            assert not (srv.data_dir / emulators.ENV_FILE).exists()


def test_the_operators_own_endpoint_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    srv = Server(tmp_path / "data", extra_args=("--workers", "0", "--emulators", "gcs")).start()
    try:
        assert emulator_processes(srv) == []
        assert read_env(srv.data_dir) == {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9"}
    finally:
        srv.stop()


def test_unknown_emulators_are_refused(tmp_path):
    done = beamport_command("serve", "--data-dir", str(tmp_path), "--emulators", "gcs,ftp", check=False)
    assert done.returncode == 2 and "no such emulator" in done.stderr


def test_an_emulator_that_dies_is_started_again(gcs_server):
    (emulator,) = emulator_processes(gcs_server)
    endpoint = read_env(gcs_server.data_dir)["STORAGE_EMULATOR_HOST"]
    emulator.kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(endpoint + "/storage/v1/b", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    (again,) = emulator_processes(gcs_server)
    assert again.pid != emulator.pid


def test_the_emulators_setting_from_a_flag_or_a_variable(monkeypatch):
    from beamport.config import Settings

    monkeypatch.setenv("BEAMPORT_EMULATORS", "metadata, gcs")
    assert Settings().emulators == ["metadata", "gcs"]
    assert Settings(emulators="gcs").emulators == ["gcs"]
    monkeypatch.setenv("BEAMPORT_EMULATORS", "")
    assert Settings().emulators == []


def test_the_pubsub_emulator_serves_googles_client_and_stops_with_serve(tmp_path, monkeypatch):
    """pstest as a server: topics, subscriptions, publish, pull and acknowledge with google-cloud-pubsub, which
    finds it by PUBSUB_EMULATOR_HOST alone (no credentials)."""
    need_emulator(emulators.PUBSUB)
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    srv = Server(tmp_path / "data", extra_args=("--workers", "0", "--emulators", "pubsub")).start()
    try:
        env = read_env(srv.data_dir)
        assert set(env) == {"PUBSUB_EMULATOR_HOST"}
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", env["PUBSUB_EMULATOR_HOST"])
        from google.cloud import pubsub_v1

        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = publisher.create_topic(name="projects/demo/topics/t").name
        subscription = subscriber.create_subscription(name="projects/demo/subscriptions/s", topic=topic).name
        publisher.publish(topic, b"hello", kind="greeting").result(timeout=30)
        (received,) = subscriber.pull(subscription=subscription, max_messages=10, timeout=30).received_messages
        assert (received.message.data, dict(received.message.attributes)) == (b"hello", {"kind": "greeting"})
        # Beamport's addition: the subscription's backlog, as Cloud Monitoring counts it (a message pulled and not
        # yet acknowledged is in it), in bytes of the stored PubsubMessage, and its oldest message's age, which
        # grows while it waits.
        backlog_url = f"http://{env['PUBSUB_EMULATOR_HOST']}/v1/{subscription}:backlog"
        size = type(received.message).pb(received.message).ByteSize()
        published = received.message.publish_time.timestamp()
        first = httpx.get(backlog_url).json()
        time.sleep(0.5)
        later = httpx.get(backlog_url).json()
        assert (first["numUndeliveredMessages"], first["backlogBytes"]) == (1, size)
        assert 0 < first["oldestUnackedMessageAgeMs"] <= (time.time() - published) * 1000 + 50
        assert later["oldestUnackedMessageAgeMs"] >= first["oldestUnackedMessageAgeMs"] + 500
        subscriber.acknowledge(subscription=subscription, ack_ids=[received.ack_id])
        assert httpx.get(backlog_url).json() == {
            "numUndeliveredMessages": 0,
            "backlogBytes": 0,
            "oldestUnackedMessageAgeMs": 0,
        }
        missing = httpx.get(backlog_url.replace("/s:", "/missing:"))
        assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"
        (emulator,) = [
            p for p in psutil.Process(srv.process.pid).children(recursive=True) if p.name().startswith("pstest")
        ]
    finally:
        srv.stop()
    assert not emulator.is_running()


def test_an_emulator_whose_port_went_to_another_server_starts_on_another_port(tmp_path, monkeypatch):
    """The port is chosen free, then handed to the emulator: meanwhile another server (here one answering every
    health check, as another Beamport's emulator would) may take it. The emulator is not taken to be up because
    something answers there: it is tried on another port, and what answers is this emulator."""
    import http.server
    import threading

    need_gcs_emulator()

    class AnswersEverything(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    squatter = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AnswersEverything)
    threading.Thread(target=squatter.serve_forever, daemon=True).start()
    taken = squatter.server_address[1]
    ports = iter([taken])
    real = emulators.free_loopback_port
    monkeypatch.setattr(emulators, "free_loopback_port", lambda: next(ports, None) or real())
    binary = emulators.default_bin_dir() / emulators.GCS.binary
    process = emulators.EmulatorProcess(emulators.GCS, binary, tmp_path / "state", tmp_path / "gcs.log")
    try:
        process.start()
        assert process.port != taken
        assert httpx.get(process.value + "/storage/v1/b", timeout=5).status_code == 200
        listening = {c.laddr.port for c in psutil.Process(process._process.pid).net_connections("tcp")}
        assert process.port in listening and taken not in listening
    finally:
        process.stop()
        squatter.shutdown()
