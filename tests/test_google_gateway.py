"""The Google API gateway (beamport/google_gateway.py) as its own program, in front of a small HTTP server standing
in for the BigQuery emulator: a client that trusts the gateway's CA and goes through it as HTTPS_PROXY reaches
that server when it calls https://bigquery.googleapis.com; the CA is kept across restarts and its key private;
other ports are refused, as are web pages' requests; worker_variables gives a Go worker what it needs. (Beam Go's
BigQuery I/O through it, on every engine: tests/test_go.py and tests/test_go_flink.py.)"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from beamport import google_gateway
from beamport.polling import wait_until
from beamport.processes import free_loopback_port


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path, "host": self.headers["Host"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class Gateway:
    def __init__(self, state_dir: Path, upstream: str):
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "beamport.google_gateway", "--port", str(self.port)]
        self.process = subprocess.Popen([*command, "--state-dir", str(state_dir), "--bigquery", upstream])
        up = wait_until(lambda: self._healthy() or self.process.poll() is not None, bool, 30, 0.05)
        assert up and self.process.poll() is None, "the gateway did not start"

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def client(self) -> httpx.Client:
        """A client that trusts the gateway's CA (and nothing else) and goes through it."""
        context = ssl.create_default_context(cadata=httpx.get(self.url + "/ca.pem").text)
        return httpx.Client(proxy=self.url, verify=context, timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def gateway(tmp_path, upstream):
    gateway = Gateway(tmp_path / "gateway", upstream)
    yield gateway
    gateway.stop()


def test_bigquerys_host_is_answered_by_the_emulator_over_tls(gateway):
    with gateway.client() as client:
        answer = client.get("https://bigquery.googleapis.com/bigquery/v2/projects/demo/datasets")
    assert answer.status_code == 200
    assert answer.json() == {"path": "/bigquery/v2/projects/demo/datasets", "host": "bigquery.googleapis.com"}


def test_a_connection_the_emulator_closes_is_closed_for_the_client(gateway):
    """The stand-in answers HTTP/1.0 and closes: the client's TLS connection ends too, rather than stay open for a
    next request that would go nowhere."""
    context = ssl.create_default_context(cadata=httpx.get(gateway.url + "/ca.pem").text)
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as raw:
        raw.sendall(b"CONNECT bigquery.googleapis.com:443 HTTP/1.1\r\nHost: bigquery.googleapis.com:443\r\n\r\n")
        assert raw.recv(1024).startswith(b"HTTP/1.1 200")
        with context.wrap_socket(raw, server_hostname="bigquery.googleapis.com") as tls:
            tls.sendall(b"GET /bigquery/v2/x HTTP/1.1\r\nHost: bigquery.googleapis.com\r\n\r\n")
            answer = b""
            while chunk := tls.recv(65536):  # until the gateway closes it (a timeout fails the test)
                answer += chunk
    assert answer.startswith(b"HTTP/1.0 200") and b'"/bigquery/v2/x"' in answer


def test_the_ca_is_kept_across_restarts_and_its_key_is_private(tmp_path, upstream):
    first = Gateway(tmp_path / "gateway", upstream)
    try:
        ca = httpx.get(first.url + "/ca.pem").text
    finally:
        first.stop()
    assert (tmp_path / "gateway" / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    second = Gateway(tmp_path / "gateway", upstream)
    try:
        assert httpx.get(second.url + "/ca.pem").text == ca
        with second.client() as client:  # its new certificate, of the same CA
            assert client.get("https://bigquery.googleapis.com/x").status_code == 200
    finally:
        second.stop()


def test_other_ports_and_web_pages_are_refused(gateway):
    with httpx.Client(proxy=gateway.url, timeout=10) as client:
        with pytest.raises(httpx.ProxyError, match="403"):
            client.get("https://bigquery.googleapis.com:8443/")
    page = httpx.get(gateway.url + "/credentials.json", headers={"Origin": "https://example.com"})
    assert page.status_code == 403
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "x" * 900}
    assert httpx.post(gateway.url + "/token", data=grant).json()["token_type"] == "Bearer"
    assert httpx.post(gateway.url + "/token", content=b"x" * (65 * 1024)).status_code == 400


def test_worker_variables_give_a_go_worker_the_proxy_roots_and_credentials(gateway, tmp_path):
    variables = google_gateway.worker_variables(gateway.url, str(tmp_path), {"NO_PROXY": "corp"}, ["tm-host"])
    assert variables["HTTPS_PROXY"] == gateway.url
    no_proxy = variables["NO_PROXY"].split(",")
    assert no_proxy[0] == "corp" and {"localhost", "127.0.0.1", "tm-host"} <= set(no_proxy)
    roots = Path(variables["SSL_CERT_FILE"]).read_text()
    assert httpx.get(gateway.url + "/ca.pem").text in roots
    key = json.loads(Path(variables["GOOGLE_APPLICATION_CREDENTIALS"]).read_text())
    assert key["type"] == "service_account" and key["token_uri"] == f"{gateway.url}/token"
    # Credentials of the worker's own stay.
    own = google_gateway.worker_variables(gateway.url, str(tmp_path), {"GOOGLE_APPLICATION_CREDENTIALS": "/k"})
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in own
