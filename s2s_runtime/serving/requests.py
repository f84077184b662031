"""A request inside the batcher, the Future its caller holds, and the TokenStream of a streamed one."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any

from ..inputs import PreparedInput
from ..plan import DecodingPlan
from ..results import StreamedToken

WORKER = threading.local()  # `queue`: the RequestQueue whose batches this thread decodes (batcher workers only)


class RequestFuture(Future):
    """A Future whose `cancel()` also stops a request that is already being decoded: the batch it is in stops at
    the next decoder step once every request in it is cancelled or past its deadline, and the future then raises
    CancelledError. Waiting for it on one of its own batcher's worker threads (in a done callback of another of its
    requests) raises RuntimeError at once: that worker is the one that would have to answer it."""

    def __init__(self, queue: object = None) -> None:
        super().__init__()
        self.abandoned = False
        self._queue = queue

    def result(self, timeout: float | None = None) -> Any:
        self._refuse_deadlock()
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        self._refuse_deadlock()
        return super().exception(timeout)

    def _refuse_deadlock(self) -> None:
        if self._queue is not None and getattr(WORKER, "queue", None) is self._queue and not self.done():
            raise RuntimeError(
                "waiting for a batcher request on one of that batcher's own workers (inside a done callback) would "
                "never end: hand the wait to another thread, or chain with add_done_callback"
            )

    def cancel(self) -> bool:
        if super().cancel():
            return True
        if not self.done():
            self.abandoned = True
        return False


class TokenStream:
    """The tokens of one streamed request as the worker produces them; iterate it (`for token in stream`, or
    `async for` from asyncio). It ends when the output is complete, or raises the request's error (RequestTimeout,
    BatcherClosed, InternalError, CancelledError). `close()` gives up on it: decoding stops at the next step."""

    def __init__(self, future: RequestFuture):
        self.future = future
        self._tokens: collections.deque[StreamedToken] = collections.deque()
        self._changed = threading.Condition()
        self._wakers: list[Any] = []  # (loop, asyncio.Event) of async readers

    def put(self, token: StreamedToken) -> None:
        with self._changed:
            self._tokens.append(token)
            self._notify()

    def _notify(self) -> None:
        self._changed.notify_all()
        for waker in list(self._wakers):
            loop, event = waker
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # its loop was closed (without shutdown_asyncgens): nobody reads there any more
                self._wakers.remove(waker)

    def end(self) -> None:
        with self._changed:
            self._notify()

    def close(self) -> None:
        self.future.cancel()

    def _next(self) -> StreamedToken | object | None:
        """Under the lock: the next token, None at the end, _PENDING if none yet; raises the request's error once
        no token is left."""
        if self._tokens:
            return self._tokens.popleft()
        if not self.future.done():
            return _PENDING
        if self.future.cancelled():
            raise CancelledError()
        error = self.future.exception()
        if error is not None:
            raise error
        return None

    def __iter__(self) -> Iterator[StreamedToken]:
        while True:
            with self._changed:
                token = self._next()
                while token is _PENDING:
                    self._changed.wait()
                    token = self._next()
            if token is None:
                return
            yield token  # type: ignore[misc]

    async def __aiter__(self) -> AsyncIterator[StreamedToken]:
        event, loop = asyncio.Event(), asyncio.get_running_loop()
        with self._changed:
            self._wakers.append((loop, event))
        try:
            while True:
                with self._changed:
                    token = self._next()
                    if token is _PENDING:
                        event.clear()  # under the lock: a token put after this sets it again
                if token is None:
                    return
                if token is _PENDING:
                    await event.wait()
                    continue
                yield token  # type: ignore[misc]
        finally:
            with self._changed:
                if (loop, event) in self._wakers:
                    self._wakers.remove((loop, event))


_PENDING = object()  # TokenStream._next: no token yet


@dataclass(eq=False)
class Request:
    """One admitted input: prepared, planned, with its deadline, the future its caller holds and, when streamed,
    its TokenStream."""

    item: PreparedInput
    plan: DecodingPlan
    deadline: float | None
    future: RequestFuture = field(default_factory=RequestFuture)
    stream: TokenStream | None = None

    @classmethod
    def of(cls, item: PreparedInput, plan: DecodingPlan, deadline: float | None, queue: object) -> Request:
        """A request whose future knows the queue that will answer it."""
        return cls(item, plan, deadline, RequestFuture(queue))

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline

    def gone(self, now: float) -> bool:
        """Nobody waits for the answer any more: cancelled, or past the deadline."""
        return self.future.abandoned or self.expired(now)
