"""The runners of one model: which backend decodes a batch, and the pool of idle bound runners kept for reuse —
one per model and process, bounded by bytes (SessionSettings.idle_buffer_bytes) and count."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .device import Device
from .runner import ArrayBuffers, BoundBuffers, StepGraph, StepRunner

# Idle bound runners kept for reuse, per model and process (one per recent shape: with attention, the source length is
# part of it), at most this many; their bytes are bounded by SessionSettings.idle_buffer_bytes.
IDLE_RUNNERS = 64


class Runners:
    """The runners of one model: a captured runner when the model captures and a bucket is free, else a bound one,
    else an array runner. Bound runners are kept when idle, by the shapes they hold, and reused by the next batch of
    the same shapes (a service decoding single inputs meets a handful of source lengths): one pool per model and
    process, whatever thread decodes, holding at most `idle_bytes_limit` bytes and IDLE_RUNNERS runners (least
    recently used leave first; a runner larger than the limit is never kept). A runner in use is never shared."""

    def __init__(
        self, graph: StepGraph, device: Device, *, io_binding: bool, capture: Any = None, idle_bytes_limit: int = 0
    ):
        self.graph, self.device, self.io_binding, self.capture = graph, device, io_binding, capture
        self.idle_bytes_limit = idle_bytes_limit
        self._idle: OrderedDict[tuple, BoundBuffers] = OrderedDict()  # by shapes, least recently used first
        self._idle_bytes = 0
        self._lock = threading.Lock()

    def use(self, graph: StepGraph) -> None:
        """Run the step through `graph` from now on (Engine.instrument); idle runners of the old one are dropped."""
        with self._lock:
            self.graph, self._idle, self._idle_bytes = graph, OrderedDict(), 0

    def idle_bytes(self) -> int:
        """The bytes idle runners hold now (kept for reuse)."""
        with self._lock:
            return self._idle_bytes

    @contextmanager
    def runner(
        self, states: dict[str, np.ndarray], statics: dict[str, np.ndarray], with_attention: bool, top_k: int = 1
    ) -> Iterator[StepRunner]:
        if not self.io_binding:
            yield StepRunner(self.graph, ArrayBuffers(self.graph, states, statics, with_attention, top_k), top_k)
            return
        captured = None if self.capture is None else self.capture.buffers(states, statics, with_attention, top_k)
        if captured is not None:  # else too many rows for a bucket, or its buffers are busy in another thread
            try:
                yield StepRunner(self.graph, captured, top_k)
            finally:
                captured.release()
            return
        buffers = self._take(BoundBuffers.key_of(self.device, states, statics, with_attention, top_k))
        if buffers is None or not buffers.reset(states, statics):
            buffers = BoundBuffers(self.graph, states, statics, with_attention, self.device, top_k)
        yield StepRunner(self.graph, buffers, top_k)
        self._keep(buffers)  # only after a clean finish: an abandoned stream keeps its own

    def _take(self, key: tuple) -> BoundBuffers | None:
        with self._lock:
            buffers = self._idle.pop(key, None)
            if buffers is not None:
                self._idle_bytes -= buffers.nbytes
            return buffers

    def _keep(self, buffers: BoundBuffers) -> None:
        if buffers.nbytes > self.idle_bytes_limit:
            return  # bigger than the whole pool: released now
        key = buffers.key()
        with self._lock:
            if key in self._idle:  # another thread returned the same shapes first: keep one
                return
            self._idle[key] = buffers
            self._idle_bytes += buffers.nbytes
            while self._idle_bytes > self.idle_bytes_limit or len(self._idle) > IDLE_RUNNERS:
                _, dropped = self._idle.popitem(last=False)
                self._idle_bytes -= dropped.nbytes
