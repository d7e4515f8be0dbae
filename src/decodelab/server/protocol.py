"""uvicorn, configured for the server's limits: a time limit on request headers, and a connection cap.

uvicorn times out idle keep-alive connections but not a client that connects and sends half a request
line: that connection stays open forever (a slow-loris). `HeaderTimeoutH11` gives every request
`header_timeout` seconds from its first byte (or from the connection) to finish its headers; the body has
its own limit in `guard.RequestGuard`.
"""

from __future__ import annotations

import asyncio

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from decodelab.server.limits import ServerLimits

_TIMEOUT_REPLY = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


def header_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request's line and headers."""

    class HeaderTimeoutH11(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self.conn.their_state is h11.IDLE:  # bytes of a new request: its headers are on the clock
                self._arm()
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.IDLE:  # the next request (maybe pipelined, half-sent) starts now
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_deadline is None:
                self._header_deadline = self.loop.call_later(seconds, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                message = (
                    b'{"error": {"message": "the request headers did not arrive within %g s: send the whole '
                    b'request at once", "type": "invalid_request_error", "param": null, "code": '
                    b'"request_timeout"}}' % seconds
                )
                if self.conn.our_state is h11.IDLE:
                    self.transport.write(_TIMEOUT_REPLY % (len(message), message))
                self.transport.close()

    return HeaderTimeoutH11


def uvicorn_config(app, host: str, port: int, limits: ServerLimits, log_level: str = "info") -> uvicorn.Config:
    """How `decodelab serve` (and the tests' live server) runs the app."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        http=header_timeout_protocol(limits.header_timeout),
        limit_concurrency=limits.max_connections,
    )
