"""BatcherConfig: how a Batcher batches, queues, times out and restarts, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from ..numbers import is_finite_number


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
            if not is_finite_number(value) or value < 0 or (positive and value == 0):
                raise ValueError(f"{name}: must be a finite number {'> 0' if positive else '≥ 0'}, got {value!r}")
