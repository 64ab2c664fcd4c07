"""Time limits on receiving a request, so that clients that send slowly (or never finish) cannot hold connections.

uvicorn times out idle keep-alive connections, but nothing else: a connection that sends half a request line,
half its headers, or half its body is held for as long as the client likes. Two pieces bound that:

- `header_timeout_protocol(seconds)`: uvicorn's httptools protocol with a deadline from a connection's opening
  (and from the first byte of each further request on it) to the end of the request's headers; past it the
  server answers 408 and closes the connection. No ASGI code sees a request before its headers are complete,
  so this deadline has to live in the protocol.
- `BodyTimeout`: pure ASGI middleware bounding the time from the application's first read of the body to its
  last byte. Past it the read raises out of the application (which was waiting for the body, so it had done
  nothing yet) and the server answers 408 with `Connection: close`. An answer given before the whole body arrived (a 401
  before the body is read, a 400 for a declared length over the limit) also closes the connection, so that the
  rest of the body cannot trickle in for ever.

The same protocol writes what a connection's responses write in one turn of the event loop at once
(`CoalescedWrites`): a response's head and body in one system call, not two (server CPU per jobs.get: -20%,
benchmarks/README.md).
"""

from __future__ import annotations

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0

_TIMEOUT_MESSAGE = "The request was not received in time: {what} took longer than {seconds:g} s."


def _error_body(what: str, seconds: float) -> bytes:
    message = _TIMEOUT_MESSAGE.format(what=what, seconds=seconds)
    # Google's error shape; 408 has no google.rpc.Code of its own, DEADLINE_EXCEEDED is the closest.
    return orjson.dumps({"error": {"code": 408, "message": message, "status": "DEADLINE_EXCEEDED"}})


def header_timeout_protocol(seconds: float) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, closing connections whose request headers take longer than `seconds`."""

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        header_timeout_s = seconds
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            # Every write of this connection's (its responses', and uvicorn's own answers) in one order.
            self.coalesced = CoalescedWrites(transport, self.loop)
            self.transport = self.coalesced  # type: ignore[assignment]  # a Transport in all uvicorn uses
            self._arm_header_timer()

        _in_headers = False  # a request's first bytes came, not yet the end of its headers

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # A further request on a kept-alive connection is timed from its first byte, which came in this
            # data; most requests come whole, headers and all, and need no timer (1.9 us a request).
            if self._in_headers and self._header_timer is None:
                self._arm_header_timer()

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._cancel_header_timer()
            super().on_headers_complete()

        def handle_websocket_upgrade(self) -> None:
            # The WebSocket protocol takes the connection over, with the socket's own transport.
            self.coalesced.flush()
            self.transport = self.coalesced.transport
            super().handle_websocket_upgrade()

        def connection_lost(self, exc) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            body = _error_body("the request line and headers", self.header_timeout_s)
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json; charset=UTF-8\r\n"
                b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )
            self.transport.close()

    return HeaderTimeoutProtocol


class CoalescedWrites:
    """A connection's transport as its responses write to it: what they write in one turn of the event loop
    goes out in one write at the end of that turn. uvicorn writes a response's head and its body separately,
    two system calls and often two wake-ups of the client, where one does."""

    def __init__(self, transport, loop):
        self.transport, self._loop = transport, loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self.transport.is_closing():  # the client left meanwhile: as uvicorn, write nothing
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name):  # is_closing, get_extra_info, pause_reading...
        return getattr(self.transport, name)


class _BodyTooSlow(BaseException):
    """Raised out of the application's read of a body that came too slowly. A BaseException, as a
    cancellation is: no handler of the application's (`except Exception`) answers it; BodyTimeout does."""


class BodyTimeout:
    """ASGI middleware: an HTTP request's body must arrive within `seconds` of the application's first read."""

    def __init__(self, app, seconds: float = DEFAULT_BODY_TIMEOUT_S):
        self.app = app
        self.seconds = seconds

    def __getattr__(self, name):  # the wrapped application's attributes (its `state`, for one)
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A request without Content-Length or Transfer-Encoding (or with a length of 0) has no body to wait for.
        expects_body = any(
            (name == b"content-length" and value.strip() not in (b"", b"0")) or name == b"transfer-encoding"
            for name, value in scope.get("headers", ())
        )
        if not expects_body:  # nothing to time, nor to close the connection for (most calls: every GET)
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        state = {"deadline": None, "body_done": False, "started": False}

        async def timed_receive():
            if state["body_done"]:
                return await receive()  # after the body: only a disconnect can come; no limit
            if state["deadline"] is None:
                state["deadline"] = loop.time() + self.seconds
            try:
                async with asyncio.timeout_at(state["deadline"]):
                    message = await receive()
            except TimeoutError:
                raise _BodyTooSlow from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def guarded_send(message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                if not state["body_done"]:  # answered without the whole body: let none of the rest trickle in
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except _BodyTooSlow:
            if state["started"]:
                raise RuntimeError("the request body came too slowly, after the answer had started") from None
            body = _error_body("the request body", self.seconds)
            await send(
                {
                    "type": "http.response.start",
                    "status": 408,
                    "headers": [
                        (b"content-type", b"application/json; charset=UTF-8"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
