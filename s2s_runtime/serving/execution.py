"""How a worker decodes what the queue gave it: a batch through `Seq2SeqModel.start(...).run(stop)`, a stream
token by token, and every request of it answered.

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
from .errors import BatcherClosed, RequestTimeout, as_request_error
from .requests import Request

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
    """Decodes batches and streams of one batcher and answers their requests."""

    def __init__(self, model: Seq2SeqModel, observer: BatcherObserver, answers: Answers, aborting: Callable[[], bool]):
        self.model, self.observer, self.answers, self._aborting = model, observer, answers, aborting

    def run(self, batch: list[Request]) -> None:
        if batch[0].stream is not None:
            self._stream(batch[0])
        else:
            self._decode(batch)

    def _stop_check(self, batch: list[Request]) -> Callable[[], bool]:
        """What the search asks between steps (all() stops at the first caller still waiting, so this costs one
        check in the common case)."""

        def stop() -> bool:
            if self._aborting():
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
