"""CUDA graph capture of the decoder step, per batch-size bucket (opt-in: `load(..., cuda_graph=True)`).

On a GPU a small recurrent decoder step is bound by launching its kernels, one per node; a captured CUDA graph
replays the whole step with one launch. onnxruntime captures one graph per `gpu_graph_id` (a run option) on a session
created with `enable_cuda_graph`, and each replay must see the same input and output addresses and shapes. Hence:

- a batch's rows are padded up to a bucket (1, 2, 4, …, 256) and its source length up to a power of two (at least
  8); padded source positions get a very negative memory bias, so attention gives them exactly zero weight;
- each (rows bucket, source bucket, beam candidates top_k) has one BufferSet for the life of the model: every step
  input and output as a device tensor, double-buffered where a step reads one and writes the other, bound once per
  parity under its own graph id. Batches write into these tensors in place (host-to-device copies into the same
  allocation, device gathers whose output is bound to them) and never allocate;
- rows are never dropped from a bucket (compaction only reorders within it): a replay costs the same for any number
  of live rows, and the padding rows just compute garbage nobody reads;
- a BufferSet serves one batch at a time; a batch that finds its set busy (another thread) runs uncaptured.

The encoder is not captured: it runs once per batch, and a GRU encoder's Scans (control flow) cannot be.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import roles
from ..schema import TensorSpec
from .device import OrtValueDevice
from .padding import padded
from .runner import StepGraph

ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MIN_SOURCE_BUCKET = 8
NP_DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64}


def row_bucket(rows: int) -> int | None:
    """The smallest bucket holding `rows` rows, or None when a batch is larger than every bucket (it runs uncaptured).

    Examples:
        >>> row_bucket(3), row_bucket(256), row_bucket(257)
        (4, 256, None)
    """
    return next((bucket for bucket in ROW_BUCKETS if bucket >= rows), None)


def source_bucket(length: int) -> int:
    """Source length padded to a power of two (at least MIN_SOURCE_BUCKET), so few graphs cover all lengths.

    Examples:
        >>> source_bucket(5), source_bucket(9), source_bucket(16)
        (8, 16, 16)
    """
    return max(MIN_SOURCE_BUCKET, 1 << (length - 1).bit_length())


def _source_axis(spec: TensorSpec) -> int | None:
    return spec.shape.index(roles.SOURCE_DIM) if roles.SOURCE_DIM in spec.shape else None


@dataclass
class BufferSet:
    """The fixed device tensors and bindings of one (rows bucket, source bucket), see the module docstring."""

    rows: int
    source: int | None
    top_k: int
    states: tuple[dict[str, Any], dict[str, Any]]  # per parity: a step with parity p reads states[p], writes [1 - p]
    ids: tuple[Any, Any]  # previous ids, chained like the states when the graph selects
    statics: dict[str, Any]
    outputs: dict[str, Any]  # log-probs, next log-probs, top-k, attention: read after a step
    bindings: tuple[Any, Any]
    run_options: tuple[Any, Any]  # each parity's gpu_graph_id
    top_k_input: Any  # the (1,) top_k input when the graph ranks, else None
    lock: threading.Lock = field(default_factory=threading.Lock)


class GraphCapture:
    """The BufferSets of one captured step session; hands out CapturedBuffers per batch (or None: run uncaptured).

    Examples:
        >>> capture = GraphCapture(step_graph, device)  # doctest: +SKIP
        >>> buffers = capture.buffers(states, statics, with_attention=False)  # doctest: +SKIP
    """

    def __init__(self, graph: StepGraph, device: OrtValueDevice):
        self.graph, self.device = graph, device
        self._sets: dict[tuple[int, int | None, int], BufferSet] = {}  # (rows, source, top_k) bucket
        self._lock = threading.Lock()

    def buffers(
        self, states: dict[str, np.ndarray], statics: dict[str, np.ndarray], with_attention: bool, top_k: int = 1
    ) -> CapturedBuffers | None:
        role, value = next(iter(states.items()))
        rows = value.shape[self.graph.batch_axes[role]]
        bucket = row_bucket(rows)
        if bucket is None:
            return None
        source_axes = {role: _source_axis(self.graph.spec.inputs[role]) for role in statics}
        lengths = [value.shape[axis] for role, value in statics.items() if (axis := source_axes[role]) is not None]
        key = (bucket, source_bucket(lengths[0]) if lengths else None, top_k)
        with self._lock:
            if key not in self._sets:
                self._sets[key] = self._buffer_set(*key, first_graph_id=1 + 2 * len(self._sets))
            buffers = self._sets[key]
        if not buffers.lock.acquire(blocking=False):
            return None
        return CapturedBuffers(self, buffers, states, statics, rows, lengths[0] if lengths else None, with_attention)

    def _buffer_set(self, rows: int, source: int | None, top_k: int, first_graph_id: int) -> BufferSet:
        spec = self.graph.spec
        sizes = {roles.BATCH_DIM: rows, roles.SOURCE_DIM: source, roles.TOP_K: top_k}
        device = self.device

        def tensor(io: TensorSpec) -> Any:
            shape = tuple(int(sizes.get(d, d)) for d in io.shape)  # every named size is given
            return device.empty(shape, NP_DTYPES[io.dtype])

        def state_tensors() -> dict[str, Any]:
            return {role: tensor(spec.inputs[role]) for role in self.graph.state_roles}

        states = (state_tensors(), state_tensors())  # one set per parity
        ids = (tensor(spec.inputs[roles.PREVIOUS_IDS]), tensor(spec.inputs[roles.PREVIOUS_IDS]))
        statics = {
            role: tensor(io)
            for role, io in spec.inputs.items()
            if role not in roles.CONTROL_INPUTS and not roles.is_state(role)
        }
        chained = roles.TOP_IDS if self.graph.ranks and top_k == 1 else None  # the greedy choice: chained ids
        outputs = {
            role: tensor(io) for role, io in spec.outputs.items() if role != chained and not roles.is_state(role)
        }
        bindings, run_options = [], []
        top_k_input = None
        if self.graph.ranks:  # a constant input, but bound like the rest: a captured graph reads fixed addresses
            top_k_input = device.upload(np.array([top_k], dtype=np.int64))
        for parity in (0, 1):
            binding = self.graph.session.io_binding()
            device.bind(binding, spec.inputs[roles.PREVIOUS_IDS].name, ids[parity])
            if top_k_input is not None:
                device.bind(binding, spec.inputs[roles.TOP_K].name, top_k_input)
            if chained:  # the chosen ids become the next step's previous ids without leaving the device
                device.bind_view(binding, spec.outputs[chained].name, ids[1 - parity], (rows, 1))  # the top-1 ids
            for role in self.graph.state_roles:
                device.bind(binding, spec.inputs[role].name, states[parity][role])
                device.bind(binding, spec.outputs[role].name, states[1 - parity][role], output=True)
            for role, value in statics.items():
                device.bind(binding, spec.inputs[role].name, value)
            for role, value in outputs.items():
                device.bind(binding, spec.outputs[role].name, value, output=True)
            options = device.run_options(gpu_graph_id=first_graph_id + parity)
            bindings.append(binding)
            run_options.append(options)
        return BufferSet(
            rows, source, top_k, states, ids, statics, outputs, tuple(bindings), tuple(run_options), top_k_input
        )


class CapturedBuffers:
    """The Buffers (see s2s_runtime.engine.runner) of one batch over one BufferSet; `release` it when the batch is
    done."""

    def __init__(
        self,
        capture: GraphCapture,
        buffers: BufferSet,
        states: dict[str, np.ndarray],
        statics: dict[str, np.ndarray],
        rows: int,
        source_length: int | None,
        with_attention: bool,
    ):
        self.graph, self._device, self._buffers = capture.graph, capture.device, buffers
        self._gather = capture.device.gather
        self._rows, self._source_length, self._with_attention = rows, source_length, with_attention
        inputs, bias = self.graph.spec.inputs, self.graph.padding_bias
        for role, value in states.items():
            self._device.write(buffers.states[0][role], padded(value, inputs[role], buffers.rows, buffers.source, bias))
        for role, value in statics.items():
            self._device.write(buffers.statics[role], padded(value, inputs[role], buffers.rows, buffers.source, bias))
        self._parity = 0

    def release(self) -> None:
        self._buffers.lock.release()

    def set_previous(self, ids: np.ndarray) -> None:
        filled = np.zeros(self._buffers.rows, dtype=np.int64)  # (bucket,)
        filled[: self._rows] = ids
        self._device.write(self._buffers.ids[self._parity], filled)

    def run(self, reads: str) -> None:
        buffers = self._buffers
        self.graph.session.run_with_iobinding(buffers.bindings[self._parity], buffers.run_options[self._parity])
        self._parity = 1 - self._parity

    def log_probs(self) -> np.ndarray:
        return self._device.read(self._buffers.outputs[roles.LOG_PROBS])[: self._rows]  # (rows, vocab)

    def attention(self) -> np.ndarray | None:
        if not self._with_attention:
            return None
        return self._device.read(self._buffers.outputs[roles.ATTENTION])[
            : self._rows, : self._source_length
        ]  # (rows, source)

    def chosen(self) -> tuple[np.ndarray, np.ndarray]:
        chosen = self._device.read(self._buffers.ids[self._parity])[: self._rows]  # written by the step just run
        return chosen, self._device.read(self._buffers.outputs[roles.TOP_LOG_PROBS])[: self._rows].reshape(-1)

    def top(self) -> tuple[np.ndarray, np.ndarray]:
        outputs = self._buffers.outputs
        values = self._device.read(outputs[roles.TOP_LOG_PROBS])[: self._rows]  # (rows, top_k)
        if self._buffers.top_k == 1:  # the ids went to the chained buffer
            return values, self._device.read(self._buffers.ids[self._parity])[: self._rows, None]
        return values, self._device.read(outputs[roles.TOP_IDS])[: self._rows]

    def select(self, rows: np.ndarray) -> None:
        """Keep `rows` at the top of the same bucket: gather the current states into the other parity's buffers
        (then swap parity), the statics through a scratch tensor back into their own."""
        buffers, axes = self._buffers, self.graph.batch_axes
        index = np.zeros(buffers.rows, dtype=np.int64)  # (bucket,) the padding rows repeat row 0
        index[: len(rows)] = rows
        current, spare = buffers.states[self._parity], buffers.states[1 - self._parity]
        for role, value in current.items():
            self._gather(value, index, axes[role], out=spare[role])
        chained = self._device.read(buffers.ids[self._parity])
        self._device.write(buffers.ids[1 - self._parity], chained[index])
        identity = np.arange(buffers.rows, dtype=np.int64)
        for role, value in buffers.statics.items():
            self._gather(self._gather(value, index, axes[role]), identity, axes[role], out=value)
        self._parity, self._rows = 1 - self._parity, len(rows)
