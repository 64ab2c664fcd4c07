"""The Google API gateway: Google's API hosts answered by the emulators, for clients that take no endpoint.

Beam Go's BigQuery I/O makes its client with `bigquery.NewClient(ctx, project)` and no option, and Go's BigQuery
client reads no emulator variable: it always calls https://bigquery.googleapis.com. What it does honour, as every
Go HTTP client cloned from Go's default transport does, is HTTPS_PROXY and (on Linux) SSL_CERT_FILE. So `serve
--emulators bigquery` also starts this gateway, and Go SDK workers get (engine/go_boot.py, `worker_variables`):
- HTTPS_PROXY: this gateway, a CONNECT proxy on loopback. A tunnel to bigquery.googleapis.com:443 is answered
  here: TLS is ended with a certificate for that name, signed by a CA of the gateway's own, and the bytes go to
  the BigQuery emulator's REST port as they are (HTTP/1.1: BigQuery's paths are the emulator's). A tunnel to any
  other host's port 443 is passed through as any proxy would (a real GCS or Pub/Sub stays reachable); other
  ports are refused.
- SSL_CERT_FILE: the system's roots plus the gateway's CA (the CA's certificate is public: GET /ca.pem).
- GOOGLE_APPLICATION_CREDENTIALS: a service-account key made for the gateway, whose token_uri is the gateway's
  /token (GET /credentials.json): Go's clients want default credentials, an emulator wants no token, and the
  tokens /token answers are good for nothing else. The key is a throwaway, made at each start.

The CA's key lives in the gateway's state directory (DATA_DIR/emulators/gateway, hidden from every sandbox), so
that a restarted gateway's certificates are still trusted by workers that fetched the CA before. It signs for
the intercepted names only. Requests that carry an Origin (a web page's) are refused. Run by serve as an
emulator (beamport/emulators.py): `python -m beamport.google_gateway --port P --state-dir D --bigquery URL`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import socket
import ssl
import sys
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("beamport.google_gateway")

VARIABLE = "GOOGLE_API_GATEWAY"  # the gateway's URL (http://127.0.0.1:PORT), as serve exports it
BIGQUERY_HOST = "bigquery.googleapis.com"
TOKEN = {"access_token": "beamport-emulators-only", "expires_in": 3600, "token_type": "Bearer"}
HEAD_LIMIT = 16 * 1024
BODY_LIMIT = 64 * 1024  # of a plain request (a token request's grant is about 1 KiB)
HEAD_TIMEOUT_S = 10.0
PIPE_CHUNK = 64 * 1024
CONNECT_TIMEOUT_S = 30.0
# Where Debian (and Go's list for Linux) keeps the system's roots; the first that exists is bundled with the CA.
SYSTEM_ROOTS = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem")


# --- For the clients: the variables a Go worker runs with ---


def worker_variables(
    gateway: str, directory: str, environ: Mapping[str, str], direct_hosts: Iterable[str] = ()
) -> dict[str, str]:
    """HTTPS_PROXY, SSL_CERT_FILE, GOOGLE_APPLICATION_CREDENTIALS and NO_PROXY for a process that is to reach
    Google's APIs through the gateway at `gateway`, its files written under `directory`; this host and
    `direct_hosts` are reached directly. Credentials the process has already (`environ`) stay its own."""
    ca = _get(gateway, "/ca.pem")
    roots = next((Path(p) for p in SYSTEM_ROOTS if Path(p).is_file()), None)
    bundle = Path(directory) / "google-gateway-roots.pem"
    bundle.write_bytes((roots.read_bytes() + b"\n" if roots else b"") + ca)
    variables = {
        "HTTPS_PROXY": gateway,
        "SSL_CERT_FILE": str(bundle),
        # Never through the proxy: this host (Go skips loopback names anyway) and the runner's hosts.
        "NO_PROXY": ",".join(
            dict.fromkeys(
                filter(
                    None,
                    (environ.get("NO_PROXY"), "localhost", "127.0.0.1", "::1", socket.gethostname(), *direct_hosts),
                )
            )
        ),
    }
    if not environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        credentials = Path(directory) / "google-gateway-credentials.json"
        credentials.write_bytes(_get(gateway, "/credentials.json"))
        credentials.chmod(0o600)
        variables["GOOGLE_APPLICATION_CREDENTIALS"] = str(credentials)
    return variables


def _get(gateway: str, path: str) -> bytes:
    # No proxy for this (a ProxyHandler without proxies): the gateway is on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(gateway.rstrip("/") + path, timeout=10) as answer:
        return answer.read()


# --- The gateway ---


class Authority:
    """The gateway's CA (kept in its state directory) and a certificate for the intercepted names."""

    def __init__(self, state_dir: Path, names: list[str]):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        state_dir.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = state_dir / "ca-key.pem", state_dir / "ca.pem"
        if key_path.is_file() and cert_path.is_file():
            ca_key = serialization.load_pem_private_key(key_path.read_bytes(), None)
            ca_cert = _load_certificate(cert_path.read_bytes())
        else:
            ca_key = ec.generate_private_key(ec.SECP256R1())
            ca_cert = _certificate("Beamport Google API gateway CA", ca_key, ca_key.public_key(), None, [], ca=True)
            _write_private(key_path, _pem_key(ca_key))
            cert_path.write_bytes(_pem_certificate(ca_cert))
        self.ca_pem = cert_path.read_bytes()
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = _certificate(names[0], ca_key, leaf_key.public_key(), ca_cert, names, ca=False)
        # ssl loads a chain from files only: the leaf's, written beside the CA's (as private).
        self.leaf_path = state_dir / "leaf.pem"
        _write_private(self.leaf_path, _pem_certificate(leaf) + _pem_key(leaf_key))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.leaf_path)
        context.set_alpn_protocols(["http/1.1"])  # the emulator speaks HTTP/1.1: no HTTP/2 through the pipe
        return context


def _certificate(name, signing_key, public_key, issuer, names: list[str], ca: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650 if ca else 365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    return builder.sign(signing_key, hashes.SHA256())


def _load_certificate(pem: bytes):
    from cryptography import x509

    return x509.load_pem_x509_certificate(pem)


def _pem_certificate(certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return certificate.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(data)


def throwaway_credentials(root_url: str) -> bytes:
    """A service-account key file (Google's format, as Beamport's own keys: service/keys.py) whose token_uri is
    the gateway's /token: good for nothing else."""
    from beamport.service import keys

    key_id, private_pem, _ = keys.new_key_pair()
    email = "emulators@beamport-emulators.iam.gserviceaccount.com"
    return json.dumps(keys.key_file(email, "beamport-emulators", key_id, private_pem, root_url)).encode()


class Gateway:
    """The proxy: CONNECT tunnels (intercepted, or passed through), and a few plain GETs of its own."""

    def __init__(self, port: int, authority: Authority, routes: dict[str, tuple[str, int]]):
        self.port, self.authority, self.routes = port, authority, routes
        self.tls = authority.server_context()
        self.credentials = throwaway_credentials(f"http://127.0.0.1:{port}")

    async def serve(self) -> None:
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port, limit=HEAD_LIMIT)
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            method, target, headers = _parse_head(head)
            if "origin" in headers:  # a web page's request: nothing here is for it
                await _answer(writer, 403, b"Forbidden")
            elif method == "CONNECT":
                await self._tunnel(target, reader, writer)
                return
            else:
                # A body (the token request's JWT grant) is read, not used: what the client sent is taken in
                # before the answer and the close, which would otherwise reset the connection under it.
                await asyncio.wait_for(reader.readexactly(_body_length(headers)), HEAD_TIMEOUT_S)
                await self._plain(method, target, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            await _answer(writer, 400, b"Bad request")
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.debug("connection ended: %s", exc)
        finally:
            writer.close()

    async def _plain(self, method: str, target: str, writer: asyncio.StreamWriter) -> None:
        path = urlsplit(target).path
        if method == "GET" and path == "/healthz":
            await _answer(writer, 200, b"ok")
        elif method == "GET" and path == "/ca.pem":
            await _answer(writer, 200, self.authority.ca_pem, "application/x-pem-file")
        elif method == "GET" and path == "/credentials.json":
            await _answer(writer, 200, self.credentials, "application/json")
        elif method == "POST" and path == "/token":  # any grant: the token is good for nothing
            await _answer(writer, 200, json.dumps(TOKEN).encode(), "application/json")
        else:
            await _answer(writer, 404, b"Not found")

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port = target.rpartition(":")
        if port != "443" or not host:
            await _answer(writer, 403, b"Only port 443 is proxied")
            return
        route = self.routes.get(host.lower())
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(*(route or (host, 443))), CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            await _answer(writer, 502, f"Cannot reach {route or target}: {exc}".encode())
            return
        up_reader, up_writer = upstream
        try:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            if route is not None:  # intercepted: TLS ends here, the emulator gets plain HTTP
                await writer.start_tls(self.tls)
            # Until either side is done; then both are closed (a client learns that the emulator closed an idle
            # connection, and does not send its next request into it).
            pipes = [asyncio.create_task(_pipe(reader, up_writer)), asyncio.create_task(_pipe(up_reader, writer))]
            _, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
        finally:
            up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(PIPE_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass


def _body_length(headers: dict[str, str]) -> int:
    """A plain request's Content-Length (none: 0); more than BODY_LIMIT, or not a number: ValueError."""
    length = int(headers.get("content-length") or 0)
    if not 0 <= length <= BODY_LIMIT:
        raise ValueError(f"a body of {length} bytes")
    return length


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method.upper(), target, headers


async def _answer(writer: asyncio.StreamWriter, status: int, body: bytes, kind: str = "text/plain") -> None:
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 502: "Bad Gateway"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + body
    )
    try:
        await writer.drain()
    except ConnectionError:
        pass


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname or not parts.port:
        raise SystemExit(f"google_gateway: {url!r} names no host and port")
    return parts.hostname, parts.port


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m beamport.google_gateway")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--bigquery", required=True, help="the BigQuery emulator's REST endpoint (http://HOST:PORT)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    routes = {BIGQUERY_HOST: _host_port(args.bigquery)}
    gateway = Gateway(args.port, Authority(args.state_dir, list(routes)), routes)
    asyncio.run(gateway.serve())


if __name__ == "__main__":
    main(sys.argv[1:])
