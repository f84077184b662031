"""The queue of admitted requests and how a batch is formed from it.

The oldest request is always served next; queued requests with the same generation options join its batch (up to
max_batch_size, waiting at most max_wait_ms after it for more), requests with other options wait for their own
batch in arrival order, and a stream is decoded alone. A request whose caller cancelled it, or whose deadline
passed while it waited, is answered and skipped (`claim`).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable

from ..plan import DecodingPlan
from .config import BatcherConfig
from .requests import Request

Claim = Callable[[Request], bool]  # take a request for decoding, or answer it and say False


class RequestQueue:
    """Admitted requests waiting for a worker. `condition` is the batcher's one lock: the batcher guards its own
    counters with it too, so admission and queueing happen atomically."""

    def __init__(self, config: BatcherConfig):
        self.config = config
        self.condition = threading.Condition()
        self.closing = False  # set under the condition: workers return [] once it is drained
        self.aborting = False  # in-flight work stops at its next step (close's timeout passed, or nobody holds it)
        self.open_streams = 0  # admitted streams not yet answered
        self._waiting: collections.deque[Request] = collections.deque()

    def is_closing(self) -> bool:
        return self.closing

    def __len__(self) -> int:
        return len(self._waiting)

    def push(self, requests: Iterable[Request]) -> None:
        """Under the condition: queue `requests` and wake a worker."""
        self._waiting.extend(requests)
        self.condition.notify()

    def stream_done(self, future: object) -> None:
        """A stream's future is done (a done callback): its slot is free."""
        with self.condition:
            self.open_streams -= 1

    def prune(self, gone: Callable[[Request], bool]) -> list[Request]:
        """Under the condition: remove and return the waiting requests nobody waits for any more."""
        kept: collections.deque[Request] = collections.deque()
        removed: list[Request] = []
        for request in self._waiting:
            (removed if gone(request) else kept).append(request)
        self._waiting = kept
        return removed

    def pop_all(self) -> list[Request]:
        """Under the condition: every waiting request, removed."""
        taken = list(self._waiting)
        self._waiting.clear()
        return taken

    def next_batch(self, claim: Claim) -> list[Request]:
        """The oldest request, plus queued requests with the same options (streams go alone), waiting up to
        max_wait_ms for more; [] once the queue is closing and drained. Blocks until there is one."""
        with self.condition:
            while True:
                while not self._waiting:
                    if self.closing:
                        return []
                    self.condition.wait()
                first = self._waiting.popleft()
                if claim(first):
                    break
            batch = [first]
            if first.stream is None:
                wait_until = time.monotonic() + self.config.max_wait_ms / 1000
                while len(batch) < self.config.max_batch_size:
                    batch += [
                        r for r in self._take_matching(first.plan, self.config.max_batch_size - len(batch)) if claim(r)
                    ]
                    remaining = wait_until - time.monotonic()
                    if len(batch) >= self.config.max_batch_size or remaining <= 0 or self.closing:
                        break
                    self.condition.wait(remaining)
        return batch

    def _take_matching(self, plan: DecodingPlan, limit: int) -> list[Request]:
        taken: list[Request] = []
        kept: collections.deque[Request] = collections.deque()
        while self._waiting:
            request = self._waiting.popleft()
            fits = (
                request.stream is None
                and len(taken) < limit
                and (request.plan is plan or request.plan.options == plan.options)
            )
            (taken if fits else kept).append(request)
        self._waiting = kept
        return taken
