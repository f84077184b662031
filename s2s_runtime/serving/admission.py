"""Admission: whether a request may enter the batcher, and its deadline — pure arithmetic over counts and limits,
tested without a model. A request is admitted whole or not at all, before it costs anything."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..inputs import PreparedInput
from .config import BatcherConfig
from .errors import BatcherClosed, Overloaded


@dataclass(frozen=True)
class Admission:
    """The admission rules of one batcher: its queue and stream caps, its default deadline, and the model's cap on
    one request's decoder tokens (RequestLimits.max_request_tokens).

    Examples:
        >>> rules = Admission(BatcherConfig(max_queue=2), max_request_tokens=100)
        >>> rules.check_room(queued=1, count=2, closing=False)
        Traceback (most recent call last):
        ...
        s2s_runtime.serving.errors.Overloaded: queue full (1 of 2 requests waiting, 2 more asked)
    """

    config: BatcherConfig
    max_request_tokens: int

    def deadline(self, timeout: float | None, now: float) -> float | None:
        """The monotonic deadline of a request submitted at `now` with `timeout` (None: the batcher's default)."""
        timeout = self.config.timeout_s if timeout is None else timeout
        if timeout is not None and (not isinstance(timeout, (int, float)) or not timeout > 0):
            raise ValueError(f"timeout: must be a number > 0, got {timeout!r}")
        return None if timeout is None else now + min(timeout, 1e9)

    def check_work(self, items: Sequence[PreparedInput]) -> None:
        """A request's decoder tokens (rows × max output length, summed over its inputs) within the model's cap."""
        work = sum(item.tokens_bound for item in items)
        if work > self.max_request_tokens:
            raise ValueError(
                f"request: {len(items)} input(s) may need {work} decoder tokens (rows × max output "
                f"length), more than max_request_tokens {self.max_request_tokens} (see RequestLimits)"
            )

    def check_room(self, *, queued: int, count: int, closing: bool) -> None:
        """Raise unless `count` more inputs may queue behind `queued` ones."""
        if closing:
            raise BatcherClosed("the batcher is closed")
        if queued + count > self.config.max_queue:
            raise Overloaded(f"queue full ({queued} of {self.config.max_queue} requests waiting, {count} more asked)")

    def check_stream_slot(self, open_streams: int) -> None:
        """Raise unless one more stream may open."""
        if open_streams >= self.config.max_streams:
            raise Overloaded(f"{open_streams} streams open, the limit is {self.config.max_streams}")
