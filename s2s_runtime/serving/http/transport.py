"""The transport guard: limits uvicorn does not have for its httptools protocol — request line and headers at most
max_header_bytes (431, before the rest is parsed), headers within read_timeout_s of the connection or of the request's
first byte (408; a connection that sends nothing is closed), at most max_connections open (503, counted as an
overloaded request), a client that stops reading its answer cut off after write_timeout_s, a transfer coding other
than chunked refused (501, RFC 9112), and a `Connection: close` client that half-closes after its request still
answered — and the uvicorn settings `s2s serve` runs with. uvicorn's own `limit_concurrency` is not used: each
connection carries one request at a time, so max_connections bounds the requests too, and every 503 is the service's
JSON one."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .config import ServerConfig
from .metrics import Metrics

REASONS = {
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    503: "Service Unavailable",
}
SHUTDOWN_SLACK_S = 0.5  # after the drain's grace: for the last answers to be written (docs/limits.md: signals)


def guarded_protocol(config: ServerConfig, metrics: Metrics) -> type:
    """uvicorn's httptools protocol with the limits of the module docstring."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._awaiting_headers, self._header_bytes = True, 0
            self._read_timer: asyncio.TimerHandle | None = None
            self._write_timer: asyncio.TimerHandle | None = None
            if len(self.connections) > config.max_connections:
                metrics.request_done("overloaded", 0.0)
                self._reject(503, "overloaded", f"more than {config.max_connections} connections", "connections")
                return
            self._arm()

        def _arm(self) -> None:
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(config.read_timeout_s, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if self._awaiting_headers and (self.cycle is None or self.cycle.response_complete):
                self._reject(408, "timeout", f"no complete request within {config.read_timeout_s:g} s", "read_timeout")

        def _reject(self, status: int, kind: str, message: str, reason: str) -> None:
            metrics.rejected.labels(reason=reason).inc()
            body = json.dumps({"error": {"type": kind, "message": message}}).encode()
            head = (
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\ncontent-type: "
                f"application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
            ).encode()
            if not self.transport.is_closing():
                self.transport.write(head + body)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._awaiting_headers and self.transport is not None and not self.transport.is_closing():
                room = config.max_header_bytes - self._header_bytes
                if len(data) > room:  # feed what fits; if the headers are still not complete, refuse the rest
                    if room > 0:
                        self._header_bytes += room
                        super().data_received(data[:room])
                    if self._awaiting_headers:
                        self._reject(
                            431,
                            "too_large",
                            f"request line and headers exceed {config.max_header_bytes} bytes",
                            "headers_too_large",
                        )
                        return
                    data = data[max(room, 0) :]
                else:
                    self._header_bytes += len(data)
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._awaiting_headers, self._header_bytes = True, self._header_bytes
            self._arm()

        def on_headers_complete(self) -> None:
            self._awaiting_headers = False
            self._disarm()
            codings = [v.lower().strip() for n, v in self.headers if n.lower() == b"transfer-encoding"]
            if codings and codings != [b"chunked"]:  # gzip, chunked (and the like): a body we would misread
                coding = b", ".join(codings).decode("latin-1")
                self._reject(501, "not_implemented", f"transfer coding {coding!r}: only chunked is supported", "coding")
                return
            super().on_headers_complete()

        def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio.Protocol allows a bool
            """A client that announced `Connection: close` and then half-closes after a whole request still gets its
            answer (an orderly close, RFC 9112 §9.6). Any other end of input means the client is gone: the
            connection closes and its request is cancelled."""
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete and not cycle.more_body and not cycle.keep_alive:
                return True
            return None

        def pause_writing(self) -> None:
            """The client stopped reading (the transport's buffer is full): it has write_timeout_s to resume."""
            super().pause_writing()
            if self._write_timer is None:
                self._write_timer = self.loop.call_later(config.write_timeout_s, self._write_timed_out)

        def resume_writing(self) -> None:
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None
            super().resume_writing()

        def _write_timed_out(self) -> None:
            self._write_timer = None
            metrics.rejected.labels(reason="write_timeout").inc()
            self.transport.abort()  # drops the buffered answer; the connection's slot is free

        def on_response_complete(self) -> None:
            self._awaiting_headers, self._header_bytes = True, 0  # the next request's headers; idle: keep-alive
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._write_timer is not None:
                self._write_timer.cancel()
                self._write_timer = None
            super().connection_lost(exc)

    return GuardedProtocol


def uvicorn_config(
    app: Any, config: ServerConfig, *, host: str, port: int, log_level: str, access_log: bool = True
) -> Any:
    import uvicorn

    try:
        import httptools  # noqa: F401
    except ImportError:
        raise ImportError(
            "s2s serve needs httptools (pip install 's2s-runtime[serve]', which installs uvicorn[standard])"
        ) from None
    metrics: Metrics = app.state.s2s.metrics
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        http=guarded_protocol(config, metrics),
        timeout_keep_alive=config.keep_alive_s,  # type: ignore[arg-type]  # typed int, used as call_later's float
        timeout_graceful_shutdown=SHUTDOWN_SLACK_S,  # type: ignore[arg-type]  # typed int, used as a float
    )
