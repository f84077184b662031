"""Dynamic batching for services: concurrent requests are collected into batches for one model.

A recurrent decoder gets its throughput from batching (one batch-64 step costs far less than 64 batch-1 steps), and a
service must never lose, mix up or hang a request, nor let one request hurt the others. The Batcher:
- checks and tokenizes every request when it is submitted (`Seq2SeqModel.plan` and `prepare`): a bad input or option
  fails at once, alone, and never reaches a batch; a request past the model's RequestLimits is refused before it
  costs anything (admission.py);
- collects requests with the same generation options into batches of up to `max_batch_size` inputs, waiting at most
  `max_wait_ms` after the first one (requests with other options wait for their own batch, in arrival order, so
  the oldest request is always served next; queue.py);
- bounds its queue: a full queue raises Overloaded at once, for the whole request (a multi-input request is admitted
  whole or not at all);
- enforces deadlines while queued and between decoder steps; a cancelled request frees its slot, and a batch whose
  every caller has gone (cancelled or past its deadline) stops at the next step (execution.py);
- survives anything a batch raises: the batch's requests get the error (an unexpected one as InternalError naming
  the cause, each input retried alone first so it fails only its own caller), and the worker goes on; a worker that
  dies anyway is restarted, and `is_ready()` is False until it is (workers.py);
- streams one input token by token through the same queue, limits and deadlines (`stream`);
- on close, drains the queue (or fails every queued request with BatcherClosed), stops in-flight work past the
  close timeout, and returns only when every request has its answer;
- decodes with `workers` threads (default 1), each taking the next batch when it is free: onnxruntime releases the
  GIL, so on a machine with spare cores a second batch runs while the first is decoding (like a second model
  instance in Triton), and every worker keeps its own decoder buffers.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import CancelledError
from typing import Any

from ..config import GenerationOptions
from ..model import Seq2SeqModel
from ..results import Result
from .admission import Admission
from .answers import Answers
from .config import BatcherConfig
from .errors import BatcherClosed, RequestTimeout
from .execution import BatcherObserver, Execution, NoObserver
from .queue import RequestQueue
from .requests import Request, RequestFuture, TokenStream
from .workers import Workers


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
        self.observer = observer or NoObserver()
        queue = self._queue = RequestQueue(config)
        self._condition = queue.condition  # the one lock of the batcher's state
        self._admission = Admission(config, model.limits.max_request_tokens)
        self._answers = Answers(self._condition)
        # The workers hold the queue, the answers and the execution, never `self`: a batcher dropped without close()
        # is collected, and its finalizer closes the queue so that they end.
        execution = Execution(model, self.observer, queue, self._answers, config.max_batch_size)
        self._workers = Workers(
            config.workers, config.restart_delay_s, self._condition, execution.work, queue.is_closing
        )
        execution.workers = self._workers
        self.ready = self._workers.ready  # every worker warmed up (is_ready() also needs them alive)
        weakref.finalize(self, _abandon, queue, self._answers, self._workers)
        self._workers.start_all(warm_up=config.warmup)

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
        self._admission.check_work(items)
        deadline = self._admission.deadline(timeout, time.monotonic())
        requests = [Request.of(item, plan, deadline, self._queue) for item in items]
        with self._condition:
            self._enqueue(requests)
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
        plan.check_streamable()
        item = self.model.prepare(source, plan, target_prefix=target_prefix)
        self._admission.check_work([item])
        request = Request.of(item, plan, self._admission.deadline(timeout, time.monotonic()), self._queue)
        request.stream = TokenStream(request.future)
        with self._condition:
            self._admission.check_stream_slot(self._queue.open_streams)
            self._enqueue([request])
            self._queue.open_streams += 1
            request.future.add_done_callback(self._queue.stream_done)
        return request.stream

    def queue_depth(self) -> int:
        with self._condition:
            return len(self._queue)

    def busy(self) -> bool:
        """Whether any admitted request is still unanswered (queued or decoding)."""
        with self._condition:
            return bool(self._answers)

    def is_ready(self) -> bool:
        """Warmed up, taking requests, and every worker alive."""
        with self._condition:
            return self.ready.is_set() and not self._queue.closing and self._workers.alive()

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests. drain=True decodes everything already queued; drain=False fails it with
        BatcherClosed. Work still running when `timeout` passes is stopped at its next decoder step (BatcherClosed).
        Returns once every request has its answer."""
        with self._condition:
            self._queue.closing = True
            self._workers.cancel_restarts()
            if not drain:
                self._fail_queued("the batcher was closed before this request ran")
            self._condition.notify_all()
        self._workers.join(None if timeout is None else time.monotonic() + timeout)
        if self._workers.any_alive():
            with self._condition:
                self._queue.aborting = True  # past the timeout: in-flight batches stop at their next step
                self._fail_queued("the batcher closed before this request ran")
                self._condition.notify_all()
            self._workers.join(time.monotonic() + 30)
        for request in self._answers.waiting():  # a worker that could not finish (or died): nobody is left unanswered
            self._answers.fail(request, BatcherClosed("the batcher closed before this request was answered"))

    def __enter__(self) -> Batcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- admission and the queue ---------------------------------------------------------------------------------

    def _enqueue(self, requests: list[Request]) -> None:
        """Under the lock: admit the requests whole (or raise), queue them and wake a worker. Waiting requests whose
        callers have gone (cancelled, disconnected, past their deadline) give their slots up first."""
        queue = self._queue
        if len(queue) + len(requests) > self.config.max_queue:
            now = time.monotonic()
            for request in queue.prune(lambda r: r.future.cancelled() or r.gone(now)):
                if request.future.cancelled():
                    self._answers.forget(request)
                else:
                    self._answers.fail(request, _gone_error(request, now))
        self._admission.check_room(queued=len(queue), count=len(requests), closing=queue.closing)
        queue.push(requests)
        self._answers.admitted(requests)
        self.observer.queue_depth(len(queue))

    def _fail_queued(self, message: str) -> None:
        """Under the lock: every queued request gets BatcherClosed."""
        for request in self._queue.pop_all():
            self._answers.fail(request, BatcherClosed(message))


def _gone_error(request: Request, now: float) -> Exception:
    return CancelledError() if request.future.abandoned else RequestTimeout("the deadline passed while queued")


def _abandon(queue: RequestQueue, answers: Answers, workers: Workers) -> None:
    """A batcher collected without close(): fail what it still holds, and let its workers end."""
    with queue.condition:
        queue.closing = queue.aborting = True
        workers.cancel_restarts()
        for request in queue.pop_all():
            answers.fail(request, BatcherClosed("the batcher was dropped without close()"))
        queue.condition.notify_all()
