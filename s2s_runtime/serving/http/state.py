"""The HTTP application's state: its batcher, its metrics, the requests in progress, and whether it is draining."""

from __future__ import annotations

import threading
import time

from ...model import Seq2SeqModel
from ..batcher import Batcher
from ..config import BatcherConfig
from .config import ServerConfig
from .metrics import Metrics
from .transport import SHUTDOWN_SLACK_S


class AppState:
    """What the route handlers share (`request.app.state.s2s`): the batcher starts with the app (`start`) and
    `drain` ends it gracefully."""

    def __init__(self, model: Seq2SeqModel, batcher_config: BatcherConfig, config: ServerConfig):
        self.model, self.batcher_config, self.config = model, batcher_config, config
        self.metrics = Metrics()
        self.metrics.watch(model)
        self.batcher: Batcher | None = None
        self.draining = False
        self._active = 0  # /v1/generate requests in progress, body reading included
        self._reading = 0  # of those, the ones still reading their body
        self._lock = threading.Lock()

    def start(self) -> Batcher:
        self.batcher = Batcher(self.model, self.batcher_config, observer=self.metrics)
        return self.batcher

    def ready(self) -> bool:
        return self.batcher is not None and not self.draining and self.batcher.is_ready()

    def busy(self) -> bool:
        with self._lock:
            return self._active > 0 or (self.batcher is not None and self.batcher.busy())

    def enter(self) -> None:
        with self._lock:
            self._active += 1

    def leave(self) -> None:
        with self._lock:
            self._active -= 1

    def reading(self, delta: int) -> None:
        """A handler starts (+1) or ends (-1) reading its body."""
        with self._lock:
            self._reading += delta

    def answering(self) -> int:
        """Handlers past their body: decoding or writing an answer."""
        with self._lock:
            return self._active - self._reading

    def drain(self, grace_s: float) -> None:
        """Stop taking requests (readiness and new requests answer 503), give in-flight ones `grace_s` to finish,
        then stop what is left (503) and give those answers SHUTDOWN_SLACK_S to be written; a client still sending
        its body then is not waited for (the server closes its connection). Blocking: run it off the event loop."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.batcher is not None:
            self.batcher.close(drain=True, timeout=max(0.0, deadline - time.monotonic()))
        while self.answering() and time.monotonic() < deadline + SHUTDOWN_SLACK_S:  # handlers writing answers
            time.sleep(0.01)
