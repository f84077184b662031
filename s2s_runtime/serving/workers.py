"""The batcher's worker threads: start, readiness after warm-up, and restart after a death.

A worker runs the batcher's loop (`body(slot, warm_up)`); when that loop dies the batcher answers what it held and
asks for a restart, which starts a fresh worker in the same slot after restart_delay_s (not ready meanwhile). Once
the batcher closes, no worker is restarted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Workers:
    """The worker slots of one batcher. `lock` is the batcher's condition; `closing()` is asked under it."""

    def __init__(
        self,
        count: int,
        restart_delay_s: float,
        lock: threading.Condition,
        body: Callable[[int, bool], None],
        closing: Callable[[], bool],
    ):
        self._delay, self._lock, self._body, self._closing = restart_delay_s, lock, body, closing
        self.ready = threading.Event()  # every worker warmed up once (alive() says whether they still are)
        self._warming = count
        self._threads: list[threading.Thread | None] = [None] * count
        self._restarts: list[threading.Timer] = []

    def start_all(self, *, warm_up: bool) -> None:
        for slot in range(len(self._threads)):
            self.start(slot, warm_up=warm_up)

    def start(self, slot: int, *, warm_up: bool) -> None:
        with self._lock:
            if self._closing() and self._threads[slot] is not None:
                return
            thread = threading.Thread(target=self._body, args=(slot, warm_up), name=f"s2s-batcher-{slot}", daemon=True)
            self._threads[slot] = thread
        thread.start()

    def warmed_up(self) -> None:
        """A worker finished its warm-up: ready once every one has."""
        with self._lock:
            if not self.ready.is_set():
                self._warming -= 1
                if not self._warming:
                    self.ready.set()

    def restart_later(self, slot: int) -> None:
        """Start a replacement for the worker in `slot` (which died) after the restart delay, unless closing."""
        with self._lock:
            if self._closing():
                return
            timer = threading.Timer(self._delay, self.start, args=(slot,), kwargs={"warm_up": False})
            timer.daemon = True
            self._restarts = [t for t in self._restarts if t.is_alive()] + [timer]
        timer.start()

    def cancel_restarts(self) -> None:
        """Under the lock: no pending restart will start."""
        for timer in self._restarts:
            timer.cancel()

    def alive(self) -> bool:
        return all(thread is not None and thread.is_alive() for thread in self._threads)

    def any_alive(self) -> bool:
        return any(thread is not None and thread.is_alive() for thread in self._threads)

    def join(self, deadline: float | None) -> None:
        for thread in list(self._threads):
            if thread is not None and thread is not threading.current_thread():
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
