"""Dynamic batching for services: concurrent single requests are collected into batches for one model.

A recurrent decoder gets its throughput from batching (one batch-64 step costs far less than 64 batch-1 steps), and a
service must never lose, mix up or hang a request. The Batcher:
- collects requests with the same generation options into batches of up to `max_batch_size`, waiting at most
  `max_wait_ms` after the first one (requests with other options wait for their own batch, in arrival order);
- bounds its queue: a full queue raises Overloaded at once (backpressure instead of unbounded memory);
- fails requests whose deadline passes while queued with RequestTimeout; a cancelled future frees its slot;
- isolates bad inputs: if a batch fails, its requests are retried one by one so each gets its own answer or error;
- on close, drains the queue (or fails every pending request with BatcherClosed) — nothing is left unanswered;
- warms the model up before it reports ready;
- decodes with `workers` threads (default 1), each taking the next batch when it is free: onnxruntime releases the
  GIL, so on a machine with spare cores a second batch runs while the first is decoding (like a second model
  instance in Triton), and every worker keeps its own decoder buffers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import GenerationOptions
from .model import Result, Seq2SeqModel

log = logging.getLogger("s2s_runtime.service")


class Overloaded(RuntimeError):
    """The batcher's queue is full; retry later (HTTP 503)."""


class RequestTimeout(TimeoutError):
    """The request's deadline passed before it was decoded (HTTP 504)."""


class BatcherClosed(RuntimeError):
    """The batcher is shut down (or shutting down without draining) and takes no more requests."""


class BatcherObserver(Protocol):
    """Hooks for metrics; every method is optional to implement meaningfully."""

    def batch_done(self, size: int, seconds: float, tokens: int) -> None: ...

    def queue_depth(self, depth: int) -> None: ...

    def request_failed(self, kind: str) -> None: ...


class _NoObserver:
    def batch_done(self, size: int, seconds: float, tokens: int) -> None:
        pass

    def queue_depth(self, depth: int) -> None:
        pass

    def request_failed(self, kind: str) -> None:
        pass


@dataclass(frozen=True)
class BatcherConfig:
    """Batcher settings.

    Example:
        >>> BatcherConfig(max_batch_size=32, max_wait_ms=1.0).max_queue
        1024
    """

    max_batch_size: int = 64
    max_wait_ms: float = 2.0
    max_queue: int = 1024
    timeout_s: float | None = None  # default deadline per request (None: no deadline)
    warmup: bool = True
    workers: int = 1  # threads decoding batches at the same time

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_queue < 1 or self.workers < 1:
            raise ValueError("max_batch_size, max_queue and workers must be ≥ 1")
        if self.max_wait_ms < 0 or (self.timeout_s is not None and self.timeout_s <= 0):
            raise ValueError("max_wait_ms must be ≥ 0 and timeout_s > 0")


@dataclass
class _Request:
    source: Any
    prefix: Any
    options: GenerationOptions
    deadline: float | None
    future: Future = field(default_factory=Future)


class Batcher:
    """Thread-safe dynamic batcher over one model; sync (`submit` → Future) and asyncio (`await generate`) APIs.

    Example:
        >>> with Batcher(model, BatcherConfig(max_batch_size=64, max_wait_ms=2)) as batcher:  # doctest: +SKIP
        ...     future = batcher.submit("hello")
        ...     future.result().text
    """

    def __init__(self, model: Seq2SeqModel, config: BatcherConfig = BatcherConfig(), *,
                 observer: BatcherObserver | None = None):
        self.model, self.config = model, config
        self.observer = observer or _NoObserver()
        self._queue: collections.deque[_Request] = collections.deque()
        self._condition = threading.Condition()
        self._closing = False
        self._drain = True
        self.ready = threading.Event()
        self._warming = config.workers  # workers still warming up; ready once none is
        self._workers = [threading.Thread(target=self._run, name=f"s2s-batcher-{i}", daemon=True)
                         for i in range(config.workers)]
        for worker in self._workers:
            worker.start()

    # ---- public API ----------------------------------------------------------------------------------------------

    def submit(self, source: Any, *, target_prefix: Any = None, options: GenerationOptions | None = None,
               timeout: float | None = None, **kwargs: Any) -> Future:
        """Queue one input; the future resolves to its Result (or raises Overloaded, RequestTimeout, BatcherClosed,
        or the model's own ValueError/TypeError for a bad input or option)."""
        options = GenerationOptions.from_kwargs(kwargs, options)
        timeout = self.config.timeout_s if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        request = _Request(source, target_prefix, options, deadline)
        with self._condition:
            if self._closing:
                raise BatcherClosed("the batcher is closed")
            if len(self._queue) >= self.config.max_queue:
                self.observer.request_failed("overloaded")
                raise Overloaded(f"queue full ({self.config.max_queue} requests waiting)")
            self._queue.append(request)
            self.observer.queue_depth(len(self._queue))
            self._condition.notify()
        return request.future

    async def generate(self, source: Any, *, target_prefix: Any = None, options: GenerationOptions | None = None,
                       timeout: float | None = None, **kwargs: Any) -> Result:
        """asyncio form of submit: `result = await batcher.generate("hello")`."""
        future = self.submit(source, target_prefix=target_prefix, options=options, timeout=timeout, **kwargs)
        return await asyncio.wrap_future(future)

    def queue_depth(self) -> int:
        with self._condition:
            return len(self._queue)

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests. drain=True decodes everything already queued; drain=False fails it with
        BatcherClosed. Either way every pending request is answered before this returns (or `timeout` passes)."""
        with self._condition:
            self._closing, self._drain = True, drain
            if not drain:
                while self._queue:
                    self._fail(self._queue.popleft(), BatcherClosed("the batcher was closed before this request ran"))
            self._condition.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- worker --------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        if self.config.warmup:
            self._warm_up()
        with self._condition:
            self._warming -= 1
            if not self._warming:
                self.ready.set()
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch:
                self._decode(batch)

    def _warm_up(self) -> None:
        vocab = self.model.bundle.source.vocab
        symbols = [t for i, t in enumerate(vocab.tokens) if i not in vocab.special_ids.values()] or vocab.tokens
        try:
            self.model.generate([[symbols[0]] * 4] * min(8, self.config.max_batch_size), max_length=4)
        except Exception:  # warm-up is an optimisation; a model that cannot run will fail real requests clearly
            log.exception("batcher warm-up failed")

    def _next_batch(self) -> list[_Request] | None:
        """The oldest request plus queued requests with the same options, waiting up to max_wait_ms for more."""
        with self._condition:
            while not self._queue:
                if self._closing:
                    return None
                self._condition.wait()
            first = self._queue.popleft()
            batch = [first]
            wait_until = time.monotonic() + self.config.max_wait_ms / 1000
            while len(batch) < self.config.max_batch_size:
                batch += self._take_matching(first.options, self.config.max_batch_size - len(batch))
                remaining = wait_until - time.monotonic()
                if len(batch) >= self.config.max_batch_size or remaining <= 0 or self._closing:
                    break
                self._condition.wait(remaining)
            self.observer.queue_depth(len(self._queue))
        return [r for r in batch if self._start(r)]

    def _take_matching(self, options: GenerationOptions, limit: int) -> list[_Request]:
        taken, kept = [], collections.deque()
        while self._queue:
            request = self._queue.popleft()
            (taken if request.options == options and len(taken) < limit else kept).append(request)
        self._queue = kept
        return taken

    def _start(self, request: _Request) -> bool:
        """Claim a request for decoding: False if it was cancelled or its deadline passed (then it is answered)."""
        if request.deadline is not None and time.monotonic() > request.deadline:
            self.observer.request_failed("timeout")
            self._fail(request, RequestTimeout("the request's deadline passed while it was queued"))
            return False
        return request.future.set_running_or_notify_cancel()

    def _decode(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        try:
            results = self._generate(batch)
        except (ValueError, TypeError):
            results = None  # one bad input must not fail the others: answer each on its own
        if results is None:
            for request in batch:
                try:
                    self._finish(request, self._generate([request])[0])
                except Exception as error:  # the model's error for this input, delivered to its caller
                    self.observer.request_failed(type(error).__name__)
                    request.future.set_exception(error)
            return
        for request, result in zip(batch, results):
            self._finish(request, result)
        tokens = sum(len(h.ids) + h.finished for r in results for h in r.hypotheses)
        self.observer.batch_done(len(batch), time.perf_counter() - started, tokens)

    def _generate(self, batch: list[_Request]) -> list[Result]:
        prefixes = [r.prefix for r in batch]
        return self.model.generate([r.source for r in batch], options=batch[0].options,
                                   target_prefix=None if all(p is None for p in prefixes) else prefixes)

    @staticmethod
    def _finish(request: _Request, result: Result) -> None:
        if not request.future.done():
            request.future.set_result(result)

    @staticmethod
    def _fail(request: _Request, error: Exception) -> None:
        """Answer a still-queued request with an error (unless its caller already cancelled it)."""
        if request.future.set_running_or_notify_cancel():
            request.future.set_exception(error)
