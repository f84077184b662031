"""Stopping an onnxruntime call from outside: a call that decodes a whole batch (the greedy graph) runs for as long
as its longest row, so a deadline or a cancellation cannot wait for it to return.

One daemon thread per process polls the `stop` callables of the calls in flight, every INTERVAL seconds, and sets
the RunOptions.terminate of each call whose stop says so; onnxruntime then ends that call with an error, which
`watching` turns into CallStopped. Registering a call only wakes the thread when it sleeps: it keeps polling for
LINGER seconds after the last call ended (a service's calls follow each other closely, and a wake-up per call would
cost more than the polls), then sleeps on a condition until the next call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("s2s_runtime")

INTERVAL = 0.002  # seconds between two looks at a call's stop: the most a stopped call overruns, plus a kernel
LINGER = 0.1  # seconds the thread keeps polling after the last call before it sleeps


class CallStopped(Exception):
    """An onnxruntime call was terminated because its stop said so."""


class Watchdog:
    """See the module docstring.

    Examples:
        >>> with WATCHDOG.watching(stop, run_options):  # doctest: +SKIP
        ...     session.run(None, feeds, run_options)
    """

    def __init__(self, interval: float = INTERVAL, linger: float = LINGER):
        self.interval, self.linger = interval, linger
        self._calls: dict[int, tuple[Callable[[], bool], Any]] = {}
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._sleeping = False  # the thread waits on the condition: a new call must wake it
        self._last_call = 0.0  # monotonic time the last call ended
        self._next = 0

    @contextmanager
    def watching(self, stop: Callable[[], bool], run_options: Any) -> Iterator[None]:
        """Watch `stop` while the block runs its call with `run_options`; CallStopped if the call was terminated."""
        with self._changed:
            key, self._next = self._next, self._next + 1
            self._calls[key] = (stop, run_options)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="s2s-watchdog", daemon=True)
                self._thread.start()
            elif self._sleeping:
                self._changed.notify()
        try:
            yield
        except Exception:
            if run_options.terminate:
                raise CallStopped() from None
            raise
        finally:
            with self._changed:
                del self._calls[key]
                self._last_call = time.monotonic()

    def _watch(self) -> None:
        while True:
            with self._changed:
                if not self._calls and time.monotonic() - self._last_call > self.linger:
                    self._sleeping = True
                    while not self._calls:
                        self._changed.wait()
                    self._sleeping = False
            self._look()
            time.sleep(self.interval)

    def _look(self) -> None:
        """One look at every call in flight. Its own frame: nothing of a finished call's (its stop, and what that
        holds: a batcher, a model) stays referenced while the thread waits."""
        with self._changed:
            calls = list(self._calls.values())
        for stop, run_options in calls:
            try:
                if stop():
                    run_options.terminate = True
            except Exception:  # a stop that fails ends its call: it can no longer say it wants it
                log.exception("s2s_runtime: a stop check failed; ending its call")
                run_options.terminate = True


WATCHDOG = Watchdog()  # the process's one watchdog thread
