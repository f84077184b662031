"""Running the service: uvicorn with the transport guard, draining on SIGTERM/SIGINT — /readyz turns 503, new requests
get 503, in-flight requests get `shutdown_grace_s` to finish, then what is left is stopped (503) and the process
exits."""

from __future__ import annotations

import threading
from typing import Any

from ...model import Seq2SeqModel
from ..config import BatcherConfig
from .app import create_app
from .config import ServerConfig
from .state import AppState
from .transport import uvicorn_config


class DrainingServer:
    """uvicorn.Server that drains on the first SIGTERM/SIGINT (see AppState.drain) and only then stops; a second
    signal stops at once. `drain()` does the same without a signal (tests, embedding)."""

    def __init__(
        self, app: Any, config: ServerConfig, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ):
        import uvicorn

        state: AppState = app.state.s2s
        grace = config.shutdown_grace_s

        class Server(uvicorn.Server):
            draining = False

            def handle_exit(self, sig: int, frame: Any) -> None:
                if self.draining or self.should_exit:
                    return super().handle_exit(sig, frame)
                self._captured_signals.append(sig)
                self.start_drain()

            def start_drain(self) -> None:
                if not self.draining:
                    self.draining = True
                    threading.Thread(target=self._drain, name="s2s-drain", daemon=True).start()

            def _drain(self) -> None:
                state.drain(grace)
                self.should_exit = True

        self.server = Server(uvicorn_config(app, config, host=host, port=port, log_level=log_level))
        self.host = host

    def run(self) -> None:
        self.server.run()

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
) -> None:
    """Run the service with uvicorn until SIGTERM or SIGINT, then drain (loopback by default).

    Examples:
        >>> serve(s2s_runtime.load("g2p-en"), port=8000)  # doctest: +SKIP
    """
    DrainingServer(create_app(model, batcher_config, config), config, host=host, port=port, log_level=log_level).run()
