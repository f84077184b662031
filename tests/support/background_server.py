"""The service on a background thread, for the tests (not production code)."""

from __future__ import annotations

import threading
import time
from typing import Any

from s2s_runtime.serving.http import DrainingServer, ServerConfig


class BackgroundServer:
    """The service on a background thread (an ephemeral port by default), for the tests.

    Examples:
        >>> with BackgroundServer(create_app(model)) as server:  # doctest: +SKIP
        ...     httpx.get(f"{server.url}/healthz")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, config: ServerConfig | None = None):
        self.config = config or app.state.s2s.config
        self.draining = DrainingServer(app, self.config, host=host, port=port)
        self.server = self.draining.server
        self.thread = threading.Thread(target=self.server.run, name="s2s-server", daemon=True)
        self.host = host

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def drain(self) -> None:
        """Begin a graceful shutdown, as SIGTERM does; the thread ends once it is done."""
        self.draining.drain()

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
