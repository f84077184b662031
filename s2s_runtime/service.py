"""Dynamic batching for services: concurrent requests are collected into batches for one model.

A recurrent decoder gets its throughput from batching (one batch-64 step costs far less than 64 batch-1 steps), and a
service must never lose, mix up or hang a request, nor let one request hurt the others. The Batcher:
- checks and tokenizes every request when it is submitted (`Seq2SeqModel.plan` and `prepare`): a bad input or option
  fails at once, alone, and never reaches a batch; a request past the model's RequestLimits is refused before it
  costs anything;
- collects requests with the same generation options into batches of up to `max_batch_size` inputs, waiting at most
  `max_wait_ms` after the first one (requests with other options wait for their own batch, in arrival order, so
  the oldest request is always served next);
- bounds its queue: a full queue raises Overloaded at once, for the whole request (a multi-input request is admitted
  whole or not at all);
- enforces deadlines while queued and between decoder steps; a cancelled request frees its slot, and a batch whose
  every caller has gone (cancelled or past its deadline) stops at the next step;
- survives anything a batch raises: the batch's requests get the error (an unexpected one as InternalError naming
  the cause, each input retried alone first so it fails only its own caller), and the worker goes on; a worker that
  dies anyway is restarted, and `is_ready()` is False until it is;
- streams one input token by token through the same queue, limits and deadlines (`stream`);
- on close, drains the queue (or fails every queued request with BatcherClosed), stops in-flight work past the
  close timeout, and returns only when every request has its answer;
- decodes with `workers` threads (default 1), each taking the next batch when it is free: onnxruntime releases the
  GIL, so on a machine with spare cores a second batch runs while the first is decoding (like a second model
  instance in Triton), and every worker keeps its own decoder buffers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from .config import GenerationOptions
from .generation import DecodingStopped
from .inputs import PreparedInput
from .model import Seq2SeqModel, check_streamable
from .plan import DecodingPlan
from .results import Result, StreamedToken

log = logging.getLogger("s2s_runtime.service")


class Overloaded(RuntimeError):
    """The batcher's queue (or its stream slots) is full; retry later (HTTP 503)."""


class RequestTimeout(TimeoutError):
    """The request's deadline passed before it was answered (HTTP 504)."""


class BatcherClosed(RuntimeError):
    """The batcher is shut down (or shutting down) and takes no more requests, or stopped this one (HTTP 503)."""


class InternalError(RuntimeError):
    """Decoding failed for a reason that is not the request's fault; the message names the original error, which
    is also its __cause__ (HTTP 500)."""


class BatcherObserver(Protocol):
    """Hooks for metrics (s2s_runtime.server counts requests itself, once each)."""

    def batch_done(self, size: int, seconds: float, tokens: int) -> None: ...

    def queue_depth(self, depth: int) -> None: ...


class _NoObserver:
    def batch_done(self, size: int, seconds: float, tokens: int) -> None:
        pass

    def queue_depth(self, depth: int) -> None:
        pass


@dataclass(frozen=True)
class BatcherConfig:
    """Batcher settings.

    Arguments:
        max_batch_size: inputs decoded together at most.
        max_wait_ms: how long the first request of a batch waits for more.
        max_queue: inputs waiting at most (each stream counts one); past it, Overloaded.
        timeout_s: default deadline per request, queue and decoding included (None: no deadline).
        warmup: decode a small batch in each worker before reporting ready.
        workers: threads decoding batches at the same time.
        max_streams: streams admitted at the same time (queued or decoding); past it, Overloaded.
        restart_delay_s: how long a worker that died waits before its replacement starts (not ready meanwhile).

    Examples:
        >>> BatcherConfig(max_batch_size=32, max_wait_ms=1.0).max_queue
        1024
    """

    max_batch_size: int = 64
    max_wait_ms: float = 2.0
    max_queue: int = 1024
    timeout_s: float | None = None
    warmup: bool = True
    workers: int = 1
    max_streams: int = 64
    restart_delay_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_queue", "workers", "max_streams"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: must be an int ≥ 1, got {value!r}")
        for name, positive in (("max_wait_ms", False), ("timeout_s", True), ("restart_delay_s", False)):
            value = getattr(self, name)
            if value is None and name == "timeout_s":
                continue
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
                or (positive and value == 0)
            ):
                raise ValueError(f"{name}: must be a finite number {'> 0' if positive else '≥ 0'}, got {value!r}")


class RequestFuture(Future):
    """A Future whose `cancel()` also stops a request that is already being decoded: the batch it is in stops at
    the next decoder step once every request in it is cancelled or past its deadline, and the future then raises
    CancelledError."""

    def __init__(self) -> None:
        super().__init__()
        self.abandoned = False

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

    def _put(self, token: StreamedToken) -> None:
        with self._changed:
            self._tokens.append(token)
            self._notify()

    def _notify(self) -> None:
        self._changed.notify_all()
        for loop, event in self._wakers:
            loop.call_soon_threadsafe(event.set)

    def _end(self) -> None:
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
                self._wakers.remove((loop, event))


_PENDING = object()  # TokenStream._next: no token yet


@dataclass(eq=False)
class _Request:
    item: PreparedInput
    plan: DecodingPlan
    deadline: float | None
    future: RequestFuture = field(default_factory=RequestFuture)
    stream: TokenStream | None = None

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline

    def gone(self, now: float) -> bool:
        """Nobody waits for the answer any more: cancelled, or past the deadline."""
        return self.future.abandoned or self.expired(now)


class Batcher:
    """Thread-safe dynamic batcher over one model; sync (`submit` → Future) and asyncio (`await generate`) APIs.

    Examples:
        >>> with Batcher(model, BatcherConfig(max_batch_size=64, max_wait_ms=2)) as batcher:  # doctest: +SKIP
        ...     future = batcher.submit("hello")
        ...     future.result().text
    """

    def __init__(
        self, model: Seq2SeqModel, config: BatcherConfig = BatcherConfig(), *, observer: BatcherObserver | None = None
    ):
        self.model, self.config = model, config
        self.observer = observer or _NoObserver()
        self._queue: collections.deque[_Request] = collections.deque()
        self._condition = threading.Condition()
        self._closing = False
        self._aborting = False  # in-flight work stops at its next step (close's timeout passed)
        self._streams = 0  # admitted streams not yet finished
        self._unanswered: set[_Request] = set()  # every admitted request until its future is done
        self.ready = threading.Event()  # every worker warmed up (is_ready() also needs them alive)
        self._warming = config.workers
        self._workers: list[threading.Thread | None] = [None] * config.workers
        self._restarts: list[threading.Timer] = []
        for slot in range(config.workers):
            self._start_worker(slot, warm_up=config.warmup)

    # ---- public API ----------------------------------------------------------------------------------------------

    def submit(
        self,
        source: Any,
        *,
        target_prefix: Any = None,
        options: GenerationOptions | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> RequestFuture:
        """Queue one input; the future resolves to its Result, or raises RequestTimeout, BatcherClosed,
        InternalError or CancelledError. A bad input or option raises here, at once (ValueError, TypeError), as
        does a full queue (Overloaded) or a closed batcher (BatcherClosed)."""
        prefixes = None if target_prefix is None else [target_prefix]
        return self.submit_many([source], target_prefixes=prefixes, options=options, timeout=timeout, **kwargs)[0]

    def submit_many(
        self,
        sources: Sequence[Any],
        *,
        target_prefixes: Sequence[Any] | None = None,
        options: GenerationOptions | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> list[RequestFuture]:
        """Queue the inputs of one request, all or none: every input is checked first (a ValueError or TypeError
        names the bad one), then the request's total work is checked against RequestLimits.max_request_tokens, and
        the queue must have room for all of them (else Overloaded). One future per input, in order."""
        plan = self.model.plan(GenerationOptions.from_kwargs(kwargs, options))
        if target_prefixes is not None and len(target_prefixes) != len(sources):
            raise ValueError(f"target_prefix: expected one prefix (or None) per input ({len(sources)})")
        items = [
            self.model.prepare(
                source, plan, target_prefix=None if target_prefixes is None else target_prefixes[index], index=index
            )
            for index, source in enumerate(sources)
        ]
        self._check_work(items)
        deadline = self._deadline(timeout)
        requests = [_Request(item, plan, deadline) for item in items]
        with self._condition:
            self._admit(len(requests))
            self._queue.extend(requests)
            self._unanswered.update(requests)
            self.observer.queue_depth(len(self._queue))
            self._condition.notify()
        return [request.future for request in requests]

    async def generate(
        self,
        source: Any,
        *,
        target_prefix: Any = None,
        options: GenerationOptions | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Result:
        """asyncio form of submit: `result = await batcher.generate("hello")`."""
        future = self.submit(source, target_prefix=target_prefix, options=options, timeout=timeout, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    def stream(
        self,
        source: Any,
        *,
        target_prefix: Any = None,
        options: GenerationOptions | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> TokenStream:
        """Queue one input for streaming (greedy or sampling): a TokenStream of its tokens as they are produced.
        Checked like `submit` (errors raised here, before any token), and admitted only while fewer than
        max_streams streams are open (else Overloaded)."""
        plan = self.model.plan(GenerationOptions.from_kwargs(kwargs, options))
        check_streamable(plan)
        item = self.model.prepare(source, plan, target_prefix=target_prefix)
        self._check_work([item])
        request = _Request(item, plan, self._deadline(timeout))
        request.stream = TokenStream(request.future)
        with self._condition:
            if self._streams >= self.config.max_streams:
                raise Overloaded(f"{self._streams} streams open, the limit is {self.config.max_streams}")
            self._admit(1)
            self._streams += 1
            request.future.add_done_callback(self._stream_done)
            self._queue.append(request)
            self._unanswered.add(request)
            self.observer.queue_depth(len(self._queue))
            self._condition.notify()
        return request.stream

    def queue_depth(self) -> int:
        with self._condition:
            return len(self._queue)

    def busy(self) -> bool:
        """Whether any admitted request is still unanswered (queued or decoding)."""
        with self._condition:
            return bool(self._unanswered)

    def is_ready(self) -> bool:
        """Warmed up, taking requests, and every worker alive."""
        with self._condition:
            return (
                self.ready.is_set()
                and not self._closing
                and all(worker is not None and worker.is_alive() for worker in self._workers)
            )

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests. drain=True decodes everything already queued; drain=False fails it with
        BatcherClosed. Work still running when `timeout` passes is stopped at its next decoder step (BatcherClosed).
        Returns once every request has its answer."""
        with self._condition:
            self._closing, self._drain = True, drain
            for timer in self._restarts:
                timer.cancel()
            if not drain:
                while self._queue:
                    self._fail(self._queue.popleft(), BatcherClosed("the batcher was closed before this request ran"))
            self._condition.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._join(deadline)
        if any(worker is not None and worker.is_alive() for worker in self._workers):
            with self._condition:
                self._aborting = True  # past the timeout: in-flight batches stop at their next step
                while self._queue:
                    self._fail(self._queue.popleft(), BatcherClosed("the batcher closed before this request ran"))
                self._condition.notify_all()
            self._join(time.monotonic() + 30)
        with self._condition:
            leftovers = list(self._unanswered)
        for request in leftovers:  # a worker that could not finish (or died): nobody is left unanswered
            self._fail(request, BatcherClosed("the batcher closed before this request was answered"))

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- admission -------------------------------------------------------------------------------------------------

    def _deadline(self, timeout: float | None) -> float | None:
        timeout = self.config.timeout_s if timeout is None else timeout
        if timeout is not None and (not isinstance(timeout, (int, float)) or not timeout > 0):
            raise ValueError(f"timeout: must be a number > 0, got {timeout!r}")
        return None if timeout is None else time.monotonic() + min(timeout, 1e9)

    def _check_work(self, items: list[PreparedInput]) -> None:
        work, cap = sum(item.tokens_bound for item in items), self.model.limits.max_request_tokens
        if work > cap:
            raise ValueError(
                f"request: {len(items)} input(s) may need {work} decoder tokens (rows × max output "
                f"length), more than max_request_tokens {cap} (see RequestLimits)"
            )

    def _admit(self, count: int) -> None:
        """Under the lock: raise unless `count` more inputs may queue now."""
        if self._closing:
            raise BatcherClosed("the batcher is closed")
        if len(self._queue) + count > self.config.max_queue:
            raise Overloaded(
                f"queue full ({len(self._queue)} of {self.config.max_queue} requests waiting, {count} more asked)"
            )

    def _stream_done(self, future: Future) -> None:
        with self._condition:
            self._streams -= 1

    # ---- workers -------------------------------------------------------------------------------------------------

    def _start_worker(self, slot: int, *, warm_up: bool) -> None:
        with self._condition:
            if self._closing and self._workers[slot] is not None:
                return
            worker = threading.Thread(target=self._run, args=(slot, warm_up), name=f"s2s-batcher-{slot}", daemon=True)
            self._workers[slot] = worker
        worker.start()

    def _join(self, deadline: float | None) -> None:
        for worker in list(self._workers):
            if worker is not None and worker is not threading.current_thread():
                worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _run(self, slot: int, warm_up: bool) -> None:
        held: list[_Request] = []
        try:
            if warm_up:
                self._warm_up()
            with self._condition:
                if not self.ready.is_set():
                    self._warming -= 1
                    if not self._warming:
                        self.ready.set()
            while True:
                held = self._next_batch()
                if not held:
                    return
                if held[0].stream is not None:
                    self._stream(held[0])
                else:
                    self._decode(held)
                held = []
        except BaseException as error:  # a worker must never take requests down with it
            log.exception("batcher worker %d died; restarting it in %.1f s", slot, self.config.restart_delay_s)
            for request in held:
                self._fail(request, InternalError(f"the batcher worker failed: {type(error).__name__}: {error}"))
            self._schedule_restart(slot)

    def _schedule_restart(self, slot: int) -> None:
        with self._condition:
            if self._closing:
                return
            timer = threading.Timer(
                self.config.restart_delay_s, self._start_worker, args=(slot,), kwargs={"warm_up": False}
            )
            timer.daemon = True
            self._restarts = [t for t in self._restarts if t.is_alive()] + [timer]
        timer.start()

    def _warm_up(self) -> None:
        vocab = self.model.bundle.source.vocab
        symbols = [t for i, t in enumerate(vocab.tokens) if i not in vocab.special_ids.values()] or vocab.tokens
        try:
            self.model.generate([[symbols[0]] * 4] * min(8, self.config.max_batch_size), max_length=4)
        except Exception:  # warm-up is an optimisation; a model that cannot run will fail real requests clearly
            log.exception("batcher warm-up failed")

    def _next_batch(self) -> list[_Request]:
        """The oldest request, plus queued requests with the same options (streams go alone), waiting up to
        max_wait_ms for more; [] once the batcher is closed and drained."""
        with self._condition:
            while True:
                while not self._queue:
                    if self._closing:
                        return []
                    self._condition.wait()
                first = self._queue.popleft()
                if self._claim(first):
                    break
            batch = [first]
            if first.stream is None:
                wait_until = time.monotonic() + self.config.max_wait_ms / 1000
                while len(batch) < self.config.max_batch_size:
                    batch += [
                        r
                        for r in self._take_matching(first.plan, self.config.max_batch_size - len(batch))
                        if self._claim(r)
                    ]
                    remaining = wait_until - time.monotonic()
                    if len(batch) >= self.config.max_batch_size or remaining <= 0 or self._closing:
                        break
                    self._condition.wait(remaining)
            self.observer.queue_depth(len(self._queue))
        return batch

    def _take_matching(self, plan: DecodingPlan, limit: int) -> list[_Request]:
        taken: list[_Request] = []
        kept: collections.deque[_Request] = collections.deque()
        while self._queue:
            request = self._queue.popleft()
            fits = (
                request.stream is None
                and len(taken) < limit
                and (request.plan is plan or request.plan.options == plan.options)
            )
            (taken if fits else kept).append(request)
        self._queue = kept
        return taken

    def _claim(self, request: _Request) -> bool:
        """Take a queued request for decoding: False if it was cancelled or its deadline passed (it is answered)."""
        if request.expired(time.monotonic()):
            self._fail(request, RequestTimeout("the request's deadline passed while it was queued"))
            return False
        if not request.future.set_running_or_notify_cancel():
            self._forget(request)
            return False
        return True

    # ---- decoding ----------------------------------------------------------------------------------------------

    def _stop_check(self, batch: list[_Request]):
        """What the search asks between steps: stop once the batcher aborts or every caller of the batch has gone
        (all() stops at the first caller still waiting, so this costs one check in the common case)."""

        def stop() -> bool:
            if self._aborting:
                return True
            now = time.monotonic()
            return all(request.gone(now) for request in batch)

        return stop

    def _decode(self, batch: list[_Request]) -> None:
        started = time.perf_counter()
        try:
            # The batch goes to the decoder whole: it is already as large as this batcher's max_batch_size allows.
            generation = self.model.start([r.item for r in batch], batch[0].plan)
            results = generation.run(stop=self._stop_check(batch))
        except DecodingStopped:
            for request in batch:
                self._fail(request, self._stopped(request))
            return
        except Exception as error:  # noqa: BLE001 (a batch's failure, whatever it is, fails only its requests)
            if len(batch) > 1:  # find whose input it is: each alone, so the error reaches only its own caller
                log.warning(
                    "a batch of %d failed (%s: %s); decoding its inputs one by one",
                    len(batch),
                    type(error).__name__,
                    error,
                )
                for request in batch:
                    self._decode([request])
                return
            self._fail(batch[0], _as_request_error(error))
            return
        for request, result in zip(batch, results, strict=True):
            if request.future.abandoned:
                self._fail(request, CancelledError())
            else:
                self._answer(request, result)
        tokens = sum(len(h.ids) + h.finished for r in results for h in r.hypotheses)
        self.observer.batch_done(len(batch), time.perf_counter() - started, tokens)

    def _stream(self, request: _Request) -> None:
        stream = request.stream
        assert stream is not None  # only streaming requests are decoded here
        started = time.perf_counter()
        tokens = 0
        try:
            for token in self.model.stream(request.item, request.plan, stop=self._stop_check([request])):
                stream._put(token)
                tokens += 1
        except DecodingStopped:
            self._fail(request, self._stopped(request))
        except Exception as error:  # noqa: BLE001 (any failure becomes this request's answer)
            self._fail(request, _as_request_error(error))
        else:
            self._answer(request, None)
            self.observer.batch_done(1, time.perf_counter() - started, tokens + 1)
        finally:
            stream._end()

    def _stopped(self, request: _Request) -> Exception:
        if request.future.abandoned:
            return CancelledError()
        if request.expired(time.monotonic()):
            return RequestTimeout("the request's deadline passed while it was being decoded")
        return BatcherClosed("the batcher closed while this request was being decoded")

    # ---- answers ---------------------------------------------------------------------------------------------------

    def _answer(self, request: _Request, result: Any) -> None:
        if not request.future.done():
            request.future.set_result(result)
        self._forget(request)

    def _fail(self, request: _Request, error: BaseException) -> None:
        """Answer a request with an error, whether queued (unless its caller cancelled it) or running."""
        future = request.future
        if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
            future.set_exception(error)
        if request.stream is not None:
            request.stream._end()
        self._forget(request)

    def _forget(self, request: _Request) -> None:
        with self._condition:
            self._unanswered.discard(request)


def _as_request_error(error: Exception) -> Exception:
    """What a caller gets for an exception from decoding: its own ValueError/TypeError as is, anything else as an
    InternalError naming the cause."""
    if isinstance(error, (ValueError, TypeError)):
        return error
    wrapped = InternalError(f"decoding failed: {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped
