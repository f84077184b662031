"""Running the service: uvicorn with the transport guard, draining on SIGTERM, SIGINT or SIGHUP — /readyz turns 503,
new requests get 503, in-flight requests get `shutdown_grace_s` to finish, then what is left is stopped (503 JSON),
the last answers get SHUTDOWN_SLACK_S to be written, and `serve` returns 0 (the exit status of `s2s serve`). A second
signal stops at once: what is in flight is stopped at its next decoder step (503), and `serve` returns 1. The signal
is not raised again after the drain (no KeyboardInterrupt traceback, no 143/130 exit status for a clean stop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

from ...model import Seq2SeqModel
from ..config import BatcherConfig
from .app import create_app
from .config import ServerConfig
from .observability import access_log
from .state import AppState
from .transport import uvicorn_config

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # SIGHUP: a closed terminal or a supervisor's stop


class DrainingServer:
    """uvicorn.Server that drains on the first signal (see the module docstring and AppState.drain) and only then
    stops; a second signal stops at once. `drain()` does the same without a signal (tests, embedding)."""

    def __init__(
        self,
        app: Any,
        config: ServerConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        access_log: bool = True,
    ):
        import uvicorn

        state: AppState = app.state.s2s
        grace = config.shutdown_grace_s

        class Server(uvicorn.Server):
            draining = False
            forced = False

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                previous = {sig: signal.signal(sig, self.handle_exit) for sig in SIGNALS}
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

            def handle_exit(self, sig: int, frame: Any) -> None:
                if self.draining or self.should_exit:
                    self.stop_now()
                else:
                    self.start_drain()

            def start_drain(self) -> None:
                if not self.draining:
                    self.draining = True
                    threading.Thread(target=self._drain, name="s2s-drain", daemon=True).start()

            def stop_now(self) -> None:
                self.forced = self.should_exit = self.force_exit = True
                if state.batcher is not None:  # in flight: stopped at the next decoder step, answered 503
                    threading.Thread(target=state.batcher.close, kwargs={"drain": False, "timeout": 0}).start()

            async def serve(self, sockets: Any = None) -> None:
                self.loop = asyncio.get_running_loop()
                await super().serve(sockets)

            def _drain(self) -> None:
                state.drain(grace)
                self.loop.call_soon_threadsafe(self._drop_unfinished)
                self.should_exit = True

            def _drop_unfinished(self) -> None:
                """Every answer is written: a connection whose request is still unfinished is a client still sending
                its body, and is not waited for."""
                for connection in list(self.server_state.connections):
                    cycle = getattr(connection, "cycle", None)  # the guarded httptools protocol: always one
                    if cycle is not None and not cycle.response_complete:
                        connection.transport.abort()

        self.server = Server(
            uvicorn_config(app, config, host=host, port=port, log_level=log_level, access_log=access_log)
        )
        self.host = host

    def run(self) -> int:
        """Serve until a signal (or `drain`); 0 after a completed drain, 1 when a second signal cut it short."""
        self.server.run()
        return 1 if self.server.forced else 0

    def drain(self) -> None:
        self.server.start_drain()


def serve(
    model: Seq2SeqModel,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    batcher_config: BatcherConfig = BatcherConfig(),
    config: ServerConfig = ServerConfig(),
    log_level: str = "info",
    log_format: str = "text",
) -> int:
    """Run the service with uvicorn until SIGTERM, SIGINT or SIGHUP, then drain (loopback by default); the exit
    status (see the module docstring). `log_format="json"`: one JSON access-log line per request
    (s2s_runtime.serving.http.observability) instead of uvicorn's text lines.

    Examples:
        >>> serve(s2s_runtime.load("g2p-en"), port=8000)  # doctest: +SKIP
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"log_format: {log_format!r} is not one of text, json")
    json_lines = log_format == "json"
    if json_lines:  # one JSON line per request on stderr, instead of uvicorn's text access log
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
    app = create_app(model, batcher_config, config, access_log_json=json_lines)
    return DrainingServer(app, config, host=host, port=port, log_level=log_level, access_log=not json_lines).run()
