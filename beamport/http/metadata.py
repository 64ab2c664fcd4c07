"""A GCE metadata server for this host (`serve --emulators metadata`; docs/emulators.md, docs/security.md).

Google's clients find default credentials on a VM by asking its metadata server; Go's Dataflow runner has no
other way than Google default credentials. With GCE_METADATA_HOST (Go, google-auth) and GCE_METADATA_IP
(google-auth's probe) naming this server, they get an access token of Beamport's metadata account
(`beamport-metadata@...`, roles/dataflow.developer on the one project the server names) with nothing else set.

It answers only on 127.0.0.1, only requests carrying `Metadata-Flavor: Google` and no `X-Forwarded-For` (as
GCE's does: a page or a forwarding proxy cannot ask it), the few paths the clients read. Translates only: the
token comes from the IAM service. The standard library's threading HTTP server: a handful of GETs, on a port of
its own (google-auth probes the root path, which is the console's on the API's port).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from urllib.parse import urlsplit

from beamport.service.iam import METADATA_EMAIL, IamService

log = logging.getLogger("beamport.metadata")

FLAVOR = ("Metadata-Flavor", "Google")
ROOT = "/computeMetadata/v1/"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/userinfo.email")
RENEW_BEFORE_S = 300  # a token with less left is replaced (GCE hands out the same token until then)


class MetadataServer:
    """The metadata server: bound when built (its port is known at once), serving once started."""

    def __init__(self, iam: IamService, project_id: str, root_url: str, port: int = 0):
        self.iam, self.project_id, self.root_url = iam, project_id, root_url
        self._key_id: str | None = None
        self._token: dict | None = None
        self._token_until = 0.0
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, name="metadata-server", daemon=True)

    @property
    def host(self) -> str:
        """host:port, GCE_METADATA_HOST's and GCE_METADATA_IP's value."""
        host, port = self._http.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._key_id = self.iam.metadata_credentials(self.project_id, self.root_url)
        self._thread.start()
        log.info(
            "Metadata server at http://%s (tokens of %s for project %s)", self.host, METADATA_EMAIL, self.project_id
        )

    def stop(self) -> None:
        if self._thread.is_alive():
            self._http.shutdown()
        self._http.server_close()

    def token(self) -> dict:
        with self._lock:
            now = time.monotonic()
            if self._token is None or self._token_until - now < RENEW_BEFORE_S:
                assert self._key_id is not None
                self._token = self.iam.metadata_token(self._key_id)
                self._token_until = now + self._token["expires_in"]
            return {**self._token, "expires_in": max(1, int(self._token_until - now))}

    def answer(self, path: str, query: str) -> tuple[int, str, str]:
        """(status, content type, body) of a GET of `path` under computeMetadata/v1/."""
        account = "instance/service-accounts/"
        text = "application/text"
        if path == "project/project-id":
            return 200, text, self.project_id
        if path == "universe/universe-domain":
            return 200, text, "googleapis.com"
        if path in ("instance/service-accounts", account):
            return 200, text, f"default/\n{METADATA_EMAIL}/\n"
        if not path.startswith(account):
            return 404, text, "Not found"
        name, _, item = path.removeprefix(account).partition("/")
        if name not in ("default", METADATA_EMAIL):
            return 404, text, "Not found"
        if item == "" and "recursive=true" in query:
            info = {"aliases": ["default"], "email": METADATA_EMAIL, "scopes": list(SCOPES)}
            return 200, "application/json", json.dumps(info)
        if item == "":
            return 200, text, "aliases\nemail\nidentity\nscopes\ntoken\n"
        if item == "email":
            return 200, text, METADATA_EMAIL
        if item == "aliases":
            return 200, text, "default"
        if item == "scopes":
            return 200, text, "\n".join(SCOPES) + "\n"
        if item == "token":
            return 200, "application/json", json.dumps(self.token())
        return 404, text, "Not found"


# The names a client may reach this server by: its loopback address (GCE_METADATA_HOST), and GCE's names.
_OWN_NAMES = {"127.0.0.1", "localhost", "::1", "metadata.google.internal", "metadata", "169.254.169.254"}


def _asked_by_a_client(headers) -> bool:
    """Not a web page's request. A page that rebinds its own DNS name to 127.0.0.1 is same-origin with this
    server and may send Metadata-Flavor, but its requests name its host in Host; and browsers mark every
    request they send with Sec-Fetch-* headers (an Origin too on most), which Google's clients never send."""
    try:
        name = urlsplit("//" + (headers.get("Host") or "")).hostname
    except ValueError:  # not a host[:port]
        return False
    if name not in _OWN_NAMES:
        return False
    return not any(headers.get(h) for h in ("Origin", "Sec-Fetch-Site", "Sec-Fetch-Mode", "Sec-Fetch-Dest"))


def _handler(server: MetadataServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "Metadata Server for VM"  # GCE's name (clients do not check it)
        sys_version = ""

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if not ip_address(self.client_address[0]).is_loopback:
                return self._send(403, "text/plain", "Only this host may ask.")
            if not _asked_by_a_client(self.headers):
                return self._send(403, "text/plain", "Only Google's clients may ask, by this server's own name.")
            if parts.path == "/":  # google-auth's probe: is there a metadata server?
                return self._send(200, "application/text", "computeMetadata/\n")
            if self.headers.get(FLAVOR[0]) != FLAVOR[1] or self.headers.get("X-Forwarded-For"):
                return self._send(403, "text/plain", "Missing Metadata-Flavor:Google header.")
            if not parts.path.startswith(ROOT):
                return self._send(404, "text/plain", "Not found")
            try:
                status, content_type, body = server.answer(parts.path.removeprefix(ROOT), parts.query)
            except Exception:
                log.exception("metadata request %s failed", parts.path)
                status, content_type, body = 500, "text/plain", "Internal error"
            self._send(status, content_type, body)

        def _send(self, status: int, content_type: str, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header(*FLAVOR)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the standard library's name)
            log.debug("%s " + format, self.client_address[0], *args)

    return Handler
