"""Answering: every admitted request is answered exactly once — with its result or an error — and the batcher knows
which ones are still waiting (so that close() leaves nobody unanswered)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from .requests import Request


class Answers:
    """The admitted requests not yet answered. `lock` is the batcher's condition."""

    def __init__(self, lock: threading.Condition):
        self._lock = lock
        self._unanswered: set[Request] = set()

    def admitted(self, requests: Iterable[Request]) -> None:
        """Under the lock: these requests now wait for an answer."""
        self._unanswered.update(requests)

    def waiting(self) -> list[Request]:
        with self._lock:
            return list(self._unanswered)

    def __bool__(self) -> bool:
        """Under the lock: whether any admitted request is unanswered."""
        return bool(self._unanswered)

    def answer(self, request: Request, result: Any) -> None:
        if not request.future.done():
            request.future.set_result(result)
        self.forget(request)

    def fail(self, request: Request, error: BaseException) -> None:
        """Answer a request with an error, whether queued (unless its caller cancelled it) or running."""
        future = request.future
        if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
            future.set_exception(error)
        if request.stream is not None:
            request.stream.end()
        self.forget(request)

    def forget(self, request: Request) -> None:
        """The request is answered (or its caller cancelled it before it ran)."""
        with self._lock:
            self._unanswered.discard(request)
