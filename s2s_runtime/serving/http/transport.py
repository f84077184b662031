"""The transport guard: limits uvicorn does not have for its httptools protocol — request line and headers at most
max_header_bytes (431, before the rest is parsed), headers within read_timeout_s of the connection or of the request's
first byte (408; a connection that sends nothing is closed), and at most max_connections open (503) — and the
uvicorn settings `s2s serve` runs with."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .config import ServerConfig
from .metrics import Metrics


def guarded_protocol(config: ServerConfig, metrics: Metrics) -> type:
    """uvicorn's httptools protocol with the limits uvicorn does not have for it: request line and headers at most
    max_header_bytes (431, before the rest is parsed), headers within read_timeout_s of the connection or of the
    request's first byte (408; a connection that sends nothing is closed), and at most max_connections open (503)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._awaiting_headers, self._header_bytes = True, 0
            self._read_timer: asyncio.TimerHandle | None = None
            if len(self.connections) > config.max_connections:
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
                f"HTTP/1.1 {status} {'Request Timeout' if status == 408 else 'Error'}\r\ncontent-type: "
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
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            self._awaiting_headers, self._header_bytes = True, 0  # the next request's headers; idle: keep-alive
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedProtocol


def uvicorn_config(app: Any, config: ServerConfig, *, host: str, port: int, log_level: str) -> Any:
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
        http=guarded_protocol(config, metrics),
        timeout_keep_alive=config.keep_alive_s,  # type: ignore[arg-type]  # typed int, used as call_later's float
        timeout_graceful_shutdown=1,
        limit_concurrency=config.max_connections + 16,
    )
