"""uvicorn's HTTP/1.1 (h11) protocol with request deadlines and a 431 (private; for jnn.serve).

uvicorn closes idle keep-alive connections but puts no deadline on a request
that is being received, so a client sending its headers or body a byte at a
time holds a connection for ever; and an oversized header block is a 400 and
a close while the client is still sending, which the client sees as a reset
connection. This protocol adds, per connection:

- a header deadline: the request line and headers must arrive within
  ``header_timeout`` seconds of the connection opening (or of the previous
  response on a kept-alive connection), else 408 and close;
- a body deadline: the body must arrive within ``body_timeout`` seconds of
  the headers, else 408 and close;
- a header size limit: ``max_header_bytes`` of request line and headers,
  else 431, sent before the rest is read and discarded for a moment (a
  "lingering close"), so the client reads the answer instead of a reset.

The time the model takes is the app's concern (``compute_timeout_s``).
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

LINGER_S = 2.0  # how long to drain a refused request's remaining bytes before closing


def limited_protocol(
    *, header_timeout: float, body_timeout: float, max_header_bytes: int
) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass with these limits (uvicorn's ``Config(http=...)``)."""

    class LimitedH11Protocol(_Limited):
        pass

    LimitedH11Protocol.limits = (float(header_timeout), float(body_timeout), int(max_header_bytes))
    return LimitedH11Protocol


class _Limited(H11Protocol):
    limits: tuple[float, float, int] = (10.0, 30.0, 1 << 16)
    _phase = "headers"  # headers -> body -> app -> (next request) headers; or closing
    _received = 0  # bytes received in the current phase
    _timer: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._start("headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == "closing":
            return  # a refused request's remaining bytes: drop them
        self._received += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            self._stop()
            return
        state = self.conn.their_state
        if self._phase == "headers":
            if state is h11.SEND_BODY:
                self._start("body")
            elif state is not h11.IDLE:
                self._start("app")
            elif self._received > self.limits[2]:
                self._refuse(
                    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                    f"request line and headers over {self.limits[2]} bytes",
                )
        elif self._phase == "body" and state is not h11.SEND_BODY:
            self._start("app")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._start("headers")  # the next request on this kept-alive connection

    def _start(self, phase: str) -> None:
        self._stop()
        self._phase, self._received = phase, 0
        if phase in ("headers", "body"):
            delay = self.limits[0] if phase == "headers" else self.limits[1]
            self._timer = self.loop.call_later(delay, self._expired)

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self._phase == "headers" and self._received == 0:
            self.transport.close()  # an idle connection: nothing to answer
            return
        what = "headers" if self._phase == "headers" else "body"
        seconds = self.limits[0] if self._phase == "headers" else self.limits[1]
        self._refuse(HTTPStatus.REQUEST_TIMEOUT, f"request {what} not received within {seconds}s")

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        """Answer ``status`` and close, reading (and dropping) what the client still sends."""
        self._stop()
        self._phase = "closing"
        body = json.dumps({"detail": message}).encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
