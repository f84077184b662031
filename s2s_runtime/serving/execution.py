"""What a worker thread does: take the next batch from the queue, decode it — a batch through
`Seq2SeqModel.start(...).run(stop)`, a stream token by token — and answer every request of it.

The worker loop holds the queue, the answers and the model, never the Batcher, so a Batcher dropped without
`close()` can be collected: its finalizer closes the queue and the workers end (s2s_runtime.serving.batcher).

Between decoder steps the search asks `stop`: once the batcher aborts (close's timeout passed) or every caller of
the batch has gone (cancelled, or past its deadline), decoding ends and each request gets the error that says why.
A batch that raises is decoded again one input at a time, so an error reaches only the caller whose input caused
it; an unexpected error becomes an InternalError naming its cause.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Protocol

from ..generation import DecodingStopped
from ..model import Seq2SeqModel
from .answers import Answers
from .errors import BatcherClosed, InternalError, RequestTimeout, as_request_error
from .queue import RequestQueue
from .requests import WORKER, Request
from .workers import Workers

log = logging.getLogger("s2s_runtime.serving")


class BatcherObserver(Protocol):
    """Hooks for metrics (the HTTP service counts requests itself, once each)."""

    def batch_done(self, size: int, seconds: float, tokens: int) -> None: ...

    def queue_depth(self, depth: int) -> None: ...


class NoObserver:
    def batch_done(self, size: int, seconds: float, tokens: int) -> None:
        pass

    def queue_depth(self, depth: int) -> None:
        pass


class Execution:
    """Decodes the batches and streams of one batcher's queue and answers their requests (see the module
    docstring)."""

    def __init__(
        self,
        model: Seq2SeqModel,
        observer: BatcherObserver,
        queue: RequestQueue,
        answers: Answers,
        max_batch_size: int,
    ):
        self.model, self.observer, self.answers = model, observer, answers
        self._queue, self._max_batch_size = queue, max_batch_size
        self.workers: Workers | None = None  # set by the batcher, which makes them with `work` as their body

    def work(self, slot: int, warm_up: bool) -> None:
        """A worker thread's life: warm up, then decode batch after batch until the queue is closed and drained. It
        never dies with requests in hand: what it held is answered (InternalError) and a replacement is started."""
        workers = self.workers
        assert workers is not None  # set before any worker starts
        held: list[Request] = []
        WORKER.queue = self._queue
        try:
            if warm_up:
                self._warm_up()
            workers.warmed_up()
            while True:
                held = self._queue.next_batch(self._claim)
                self.observer.queue_depth(len(self._queue))
                if not held:
                    return
                self.run(held)
                held = []
        except BaseException as error:  # a worker must never take requests down with it
            log.exception("batcher worker %d died; restarting it", slot)
            for request in held:
                try:
                    self.answers.fail(
                        request, InternalError(f"the batcher worker failed: {type(error).__name__}: {error}")
                    )
                except Exception:
                    log.exception("answering request after a worker failure failed")
            workers.restart_later(slot)

    def _warm_up(self) -> None:
        vocab = self.model.bundle.source.vocab
        symbols = [t for i, t in enumerate(vocab.tokens) if i not in vocab.special_ids.values()] or vocab.tokens
        try:
            self.model.generate([[symbols[0]] * 4] * min(8, self._max_batch_size), max_length=4)
        except Exception:  # warm-up is an optimisation; a model that cannot run will fail real requests clearly
            log.exception("batcher warm-up failed")

    def _claim(self, request: Request) -> bool:
        """Take a queued request for decoding: False if it was cancelled or its deadline passed (it is answered)."""
        if request.expired(time.monotonic()):
            self.answers.fail(request, RequestTimeout("the request's deadline passed while it was queued"))
            return False
        if not request.future.set_running_or_notify_cancel():
            self.answers.forget(request)
            return False
        return True

    def run(self, batch: list[Request]) -> None:
        if batch[0].stream is not None:
            self._stream(batch[0])
        else:
            self._decode(batch)

    def _stop_check(self, batch: list[Request]) -> Callable[[], bool]:
        """What the search asks between steps (all() stops at the first caller still waiting, so this costs one
        check in the common case)."""

        def stop() -> bool:
            if self._queue.aborting:
                return True
            now = time.monotonic()
            return all(request.gone(now) for request in batch)

        return stop

    def _decode(self, batch: list[Request]) -> None:
        started = time.perf_counter()
        try:
            # The batch goes to the decoder whole: it is already as large as this batcher's max_batch_size allows.
            generation = self.model.start([r.item for r in batch], batch[0].plan)
            results = generation.run(stop=self._stop_check(batch))
        except DecodingStopped:
            for request in batch:
                self.answers.fail(request, self._stopped(request))
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
            self.answers.fail(batch[0], as_request_error(error))
            return
        for request, result in zip(batch, results, strict=True):
            if request.future.abandoned:
                self.answers.fail(request, CancelledError())
            else:
                self.answers.answer(request, result)
        tokens = sum(len(h.ids) + h.finished for r in results for h in r.hypotheses)
        self.observer.batch_done(len(batch), time.perf_counter() - started, tokens)

    def _stream(self, request: Request) -> None:
        stream = request.stream
        assert stream is not None  # only streaming requests are decoded here
        started = time.perf_counter()
        tokens = 0
        try:
            for token in self.model.stream(request.item, request.plan, stop=self._stop_check([request])):
                stream.put(token)
                tokens += 1
        except DecodingStopped:
            self.answers.fail(request, self._stopped(request))
        except Exception as error:  # noqa: BLE001 (any failure becomes this request's answer)
            self.answers.fail(request, as_request_error(error))
        else:
            self.answers.answer(request, None)
            self.observer.batch_done(1, time.perf_counter() - started, tokens + 1)
        finally:
            stream.end()

    def _stopped(self, request: Request) -> Exception:
        if request.future.abandoned:
            return CancelledError()
        if request.expired(time.monotonic()):
            return RequestTimeout("the request's deadline passed while it was being decoded")
        return BatcherClosed("the batcher closed while this request was being decoded")
