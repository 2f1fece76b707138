"""Connection-level limits of ``metarec serve``: header size, read time-outs, connection count.

uvicorn's HTTP protocol (on httptools) is used as it is, with its own settings where it has one:
``timeout_keep_alive`` closes an idle keep-alive connection. What it lacks is added by
:func:`limited_protocol`, a subclass of uvicorn's ``HttpToolsProtocol`` that enforces
:class:`HttpLimits`:

* **header size**: a request line plus headers over ``max_header_bytes`` is answered ``431``
  and the connection closed, as soon as that many bytes have arrived (a 200 MiB header block is
  never buffered);
* **header time-out**: a connection that has not sent a complete request head within
  ``header_timeout`` seconds of opening (or of a request's first byte) is closed (``408`` when
  part of a head had arrived): idle and slow (1 byte/s) clients cannot hold a connection;
* **body time-out**: a request body not complete within ``body_timeout`` seconds of its head is
  answered ``408`` and closed;
* **connections**: beyond ``max_connections`` open connections a new one is answered ``503`` at
  once and closed, so the process never runs out of file descriptors and its answer is fast.

Each answer is a one-line JSON ``{"error": ...}`` naming the limit and its flag.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from metarec._errors import ConfigError

__all__ = ["HttpLimits", "limited_protocol"]


@dataclass(frozen=True)
class HttpLimits:
    """Limits and time-outs of the HTTP connections (see the module docstring).

    Args:
        max_header_bytes: largest request line + headers (bytes); over: ``431``.
        header_timeout: seconds for a request head to arrive; over: closed (``408``).
        body_timeout: seconds for a request body to arrive after its head; over: ``408``.
        keep_alive: seconds an idle keep-alive connection stays open (uvicorn's own).
        max_connections: most open connections; beyond: ``503`` at once.
    """

    max_header_bytes: int = 16 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive: float = 5.0
    max_connections: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_header_bytes", "max_connections"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}={v!r}: must be an int >= 1")
        for name in ("header_timeout", "body_timeout", "keep_alive"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError(f"{name}={v!r}: must be a number of seconds > 0")


_REASONS = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def _response(status: int, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
    ) + body


def limited_protocol(limits: HttpLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol class with ``limits`` enforced (pass it as ``uvicorn.Config(http=...)``)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    too_big = _response(
        431,
        f"request headers: over the server's limit of {limits.max_header_bytes:,} bytes (--max-header-bytes); "
        "send fewer or shorter headers",
    )
    busy = _response(
        503,
        f"the server holds its limit of {limits.max_connections:,} connections (--max-connections); retry "
        "shortly, or through another instance",
    )
    slow_head = _response(
        408,
        f"request head: not complete within {limits.header_timeout:g} s (--header-timeout); send the whole "
        "request at once",
    )
    slow_body = _response(
        408,
        f"request body: not complete within {limits.body_timeout:g} s (--body-timeout); send the whole "
        "request at once",
    )

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """``HttpToolsProtocol`` with the header-size, read-time-out and connection limits."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True  # reading a request head
            self._head = 0  # bytes of the current head so far
            self._tail = b""  # the last bytes seen, to find a head's end across reads
            self._timer: asyncio.TimerHandle | None = None
            self._refused = False

        # ------------------------------------------------------------------ connection
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            if len(self.connections) >= limits.max_connections:
                self._refused = True
                self.transport = transport
                transport.write(busy)
                transport.close()
                return
            super().connection_made(transport)
            self._arm(limits.header_timeout, self._head_late)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._refused:
                return
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused or self.transport.is_closing():
                return
            if self._in_head:
                if self._timer is None:  # a new request's first byte (after a keep-alive wait)
                    self._arm(limits.header_timeout, self._head_late)
                seen = self._tail + data
                end = seen.find(b"\r\n\r\n")
                self._head += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
                self._tail = seen[-3:]
                if self._head > limits.max_header_bytes:
                    self._close_with(too_big)
                    return
            super().data_received(data)

        # ------------------------------------------------------------------ parser callbacks
        def on_headers_complete(self) -> None:
            self._in_head, self._head, self._tail = False, 0, b""
            self._disarm()
            super().on_headers_complete()
            if not self.transport.is_closing():
                self._arm(limits.body_timeout, self._body_late)

        def on_message_complete(self) -> None:
            self._disarm()
            self._in_head = True  # the next bytes are the next request's head
            super().on_message_complete()

        # ------------------------------------------------------------------ timers
        def _arm(self, seconds: float, fn: Any) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, fn)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _head_late(self) -> None:
            self._timer = None
            if self.transport.is_closing() or not self._in_head:
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a pipelined request is still being answered; its timers apply
            if self._head:
                self._close_with(slow_head)
            else:
                self.transport.close()  # idle: nothing to answer

        def _body_late(self) -> None:
            self._timer = None
            if not self.transport.is_closing() and not self._in_head:
                self._close_with(slow_body)

        def _close_with(self, response: bytes) -> None:
            self._disarm()
            if self.cycle is not None:
                self.cycle.disconnected = True  # the app's later sends are dropped
            self.transport.write(response)
            self.transport.close()

    return LimitedHttpToolsProtocol
