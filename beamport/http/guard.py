"""No way in from a web page: a pure ASGI middleware in front of every route, with or without authentication.

A page open in the user's browser can send requests to a server on the user's machine. Three rules close
that door, none of which a Google client ever trips:
- the Host header must name this server: an IP address, a loopback name, or a name the operator allowed
  (`--allowed-host`), so that a page's own domain re-pointed at 127.0.0.1 (DNS rebinding) gets nothing;
- a state-changing request whose Origin is not the server's own, or whose Sec-Fetch-Site says it comes
  from another site, is refused (cross-site request forgery);
- a request body on a JSON route must say it is JSON: a page can send text/plain or a form with no
  preflight, but not application/json. No CORS is ever granted, so pages cannot ask for more.
"""

from __future__ import annotations

import functools
import ipaddress

import orjson

from beamport.errors import ApiError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Routes whose bodies are not JSON: the OAuth token endpoint takes a form (RFC 6749), as Google's does.
FORM_ROUTES = ("/token", "/revoke")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def host_name(host: str) -> str:
    """The name in a Host header, without its port (and brackets of an IPv6 literal)."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback(name: str) -> bool:
    name = name.lower()
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class BrowserGuard:
    def __init__(self, app, allowed_hosts: frozenset[str] = frozenset()):
        self.app = app
        self.allowed_hosts = frozenset(h.lower() for h in allowed_hosts)
        # A client names the same host in every request: decided once (parsing it as an address took 5 us of
        # every call's ~60 in the application), for a bounded number of names.
        self._host_allowed = functools.lru_cache(maxsize=256)(self._decide_host)

    def _decide_host(self, host: str) -> bool:
        name = host_name(host).lower()
        if name in self.allowed_hosts or is_loopback(name):
            return True
        try:
            ipaddress.ip_address(name)  # a page reached by address is that address's origin: no rebinding
            return True
        except ValueError:
            return False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers: dict[bytes, str] = {}
        for key, value in scope["headers"]:
            if key in (b"host", b"origin", b"sec-fetch-site", b"content-type", b"content-length", b"transfer-encoding"):
                headers[key] = value.decode("latin-1")
        refusal = self._refusal(scope, headers)
        if refusal is None:
            return await self.app(scope, receive, send)
        body = orjson.dumps(refusal.to_dict(), option=orjson.OPT_INDENT_2)
        await send(
            {
                "type": "http.response.start",
                "status": refusal.code,
                "headers": [
                    (b"content-type", b"application/json; charset=UTF-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope, headers: dict[bytes, str]) -> ApiError | None:
        host = headers.get(b"host")
        if host is not None and not self._host_allowed(host):
            return ApiError(
                "PERMISSION_DENIED",
                f"This server does not answer to the host name {host_name(host)!r} (a web page's own name pointed "
                "at this machine, perhaps). The operator can allow the name with --allowed-host.",
            )
        if scope["method"] in SAFE_METHODS:
            return None
        site = headers.get(b"sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return ApiError(
                "PERMISSION_DENIED", f"Refused a {site} request: state changes come only from this server's own pages."
            )
        origin = headers.get(b"origin")
        if origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}":
            return ApiError(
                "PERMISSION_DENIED", f"Refused a request from the web origin {origin}: no cross-origin calls."
            )
        has_body = headers.get(b"content-length", "0") != "0" or b"transfer-encoding" in headers
        if has_body and scope["path"] not in FORM_ROUTES:
            media_type = headers.get(b"content-type", "").split(";", 1)[0].strip().lower()
            if media_type != "application/json":
                return ApiError(
                    "INVALID_ARGUMENT",
                    f"The request body must be application/json, not {media_type or 'untyped'}.",
                )
        return None
