"""Decoder-step runners: the decoder step over one batch, its states cached between steps.

One StepRunner implements what the searches call (search.DecoderRunner: step, greedy_step, top_k_step, select)
over a buffer backend, a small part that only allocates, binds, runs and moves rows:
- ArrayBuffers: `session.run` with numpy arrays; simple, used when IO binding is off.
- BoundBuffers: onnxruntime IO binding on a Device. States live in preallocated, double-buffered buffers (step t
  reads buffer A and writes buffer B, step t+1 the reverse) bound once per batch, so nothing is allocated or bound
  per step; with in-graph ranking the greedy ids chain from one step's output buffer to the next step's input. On
  the host the buffers are numpy arrays; on a GPU they stay on the device, and rows move there.
- CapturedBuffers (s2s_runtime.engine.capture): fixed device buffers per batch bucket, replayed as CUDA graphs.
Each state buffer is allocated by the bundle contract's rule (s2s_runtime.schema): a state keeps its shape from
step to step. `Runners` (s2s_runtime.engine.runners) picks the backend for a batch and keeps idle bound runners for
reuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .. import roles
from ..bundle import GraphSpec
from .device import Device

LOG_PROBS, CHOICE, TOP = "log_probs", "choice", "top"  # what a step reads


def take_rows(values: dict[str, np.ndarray], rows: np.ndarray, batch_axes: dict[str, int]) -> dict[str, np.ndarray]:
    """Keep (or repeat, or reorder) `rows` of every tensor along its own batch axis."""
    return {role: np.take(value, rows, axis=batch_axes[role]) for role, value in values.items()}


@dataclass(frozen=True)
class StepGraph:
    """What a runner needs to know about the decoder-step graph."""

    session: Any
    spec: GraphSpec
    state_roles: tuple[str, ...]  # recurrent: output of step t is input of step t + 1
    batch_axes: dict[str, int]
    padding_bias: float | None  # the memory bias at padded source positions (attention models)

    @classmethod
    def of(cls, session: Any, spec: GraphSpec, padding_bias: float | None = None) -> StepGraph:
        state_roles = tuple(role for role in spec.outputs if roles.is_state(role))
        batch_axes = {role: axis for role, io in spec.inputs.items() if (axis := io.batch_axis) is not None}
        return cls(session, spec, state_roles, batch_axes, padding_bias)

    @property
    def ranks(self) -> bool:
        """Whether the graph also outputs each row's top_k best tokens (top_log_probs, top_ids): optimized exports
        do; with top_k = 1 those are the greedy choice."""
        return roles.TOP_K in self.spec.inputs and roles.TOP_IDS in self.spec.outputs

    @property
    def vocab_size(self) -> int:
        return self.spec.outputs[roles.LOG_PROBS].shape[-1]

    def output_names(self, first: tuple[str, ...], with_attention: bool) -> list[str]:
        """Names of the outputs `first`, then the states, then (if asked) the attention."""
        wanted = [*first, *self.state_roles] + ([roles.ATTENTION] if with_attention else [])
        return [self.spec.outputs[role].name for role in wanted]


class Buffers(Protocol):
    """A runner's backend: the batch's tensors and how one step runs over them."""

    def set_previous(self, ids: np.ndarray) -> None:
        """The previous ids of the next step ((rows,) int64)."""

    def run(self, reads: str) -> None:
        """Run one step that reads LOG_PROBS, CHOICE or TOP (and the attention, if the backend was made for it).
        After a CHOICE step the chosen ids are the next step's previous ids."""

    def log_probs(self) -> np.ndarray:
        """(rows, vocab) of the last step; valid until the next."""

    def attention(self) -> np.ndarray | None:
        """(rows, source_length) of the last step, or None; valid until the next."""

    def chosen(self) -> tuple[np.ndarray, np.ndarray]:
        """The last CHOICE step's ids and their log-probs, (rows,) each; valid until the next step."""

    def top(self) -> tuple[np.ndarray, np.ndarray]:
        """The last TOP step's best log-probs and their ids, (rows, top_k) each, best first."""

    def select(self, rows: np.ndarray) -> None:
        """Keep only `rows` (indices into the current rows; may reorder or repeat) of every cached tensor."""


class StepRunner:
    """The decoder step of one batch as the searches drive it, over any backend (see the module docstring).

    Attributes:
        selects: greedy_step is available (the graph ranks, and one candidate is asked: its greedy choice).
        top_k: how many candidates top_k_step returns per row (0: not available).
    """

    def __init__(self, graph: StepGraph, buffers: Buffers, top_k: int = 1):
        self.graph, self.buffers = graph, buffers
        self.selects = graph.ranks and top_k == 1
        self.top_k = top_k if graph.ranks else 0

    @property
    def nbytes(self) -> int:
        """The bytes of the buffers this runner allocated for its batch (0 for fixed, captured ones)."""
        return getattr(self.buffers, "nbytes", 0)

    def step(self, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """previous_ids (rows,) → log-probs (rows, vocab) and attention (rows, source_length) or None."""
        self.buffers.set_previous(previous_ids)
        self.buffers.run(LOG_PROBS)
        return self.buffers.log_probs(), self.buffers.attention()

    def greedy_step(self, previous_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One step choosing the argmax in the graph → (next ids, their log-probs), both (rows,), valid until the
        next step; previous_ids=None continues from the ids the last step chose."""
        if previous_ids is not None:
            self.buffers.set_previous(previous_ids)
        self.buffers.run(CHOICE)
        return self.buffers.chosen()

    def top_k_step(self, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Like step, but only each row's top_k best log-probs and their ids, both (rows, top_k), best first (equal
        values: lower id first), and the attention or None."""
        self.buffers.set_previous(previous_ids)
        self.buffers.run(TOP)
        values, ids = self.buffers.top()
        return values, ids, self.buffers.attention()

    def select(self, rows: np.ndarray) -> None:
        self.buffers.select(rows)


class ArrayBuffers:
    """`session.run` with numpy arrays: states and statics are the arrays the last step returned."""

    def __init__(
        self,
        graph: StepGraph,
        states: dict[str, np.ndarray],
        statics: dict[str, np.ndarray],
        with_attention: bool,
        top_k: int = 1,
    ):
        self.graph, self.states, self.statics = graph, states, statics
        self._feed_names = {role: io.name for role, io in graph.spec.inputs.items()}
        self._controls = {roles.TOP_K: np.array([max(top_k, 1)], dtype=np.int64)} if graph.ranks else {}
        ranked = (roles.TOP_IDS, roles.TOP_LOG_PROBS)
        self._names = {
            LOG_PROBS: graph.output_names((roles.LOG_PROBS,), with_attention),
            CHOICE: graph.output_names(ranked, False) if graph.ranks else [],
            TOP: graph.output_names((roles.TOP_LOG_PROBS, roles.TOP_IDS), with_attention) if graph.ranks else [],
        }
        self._with_attention = with_attention
        self._previous = np.zeros(0, dtype=np.int64)
        self._first: list[np.ndarray] = []
        self._attention: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return sum(value.nbytes for values in (self.states, self.statics) for value in values.values())

    def set_previous(self, ids: np.ndarray) -> None:
        self._previous = ids

    def run(self, reads: str) -> None:
        feeds = {self._feed_names[roles.PREVIOUS_IDS]: self._previous}
        for values in (self.states, self.statics, self._controls):
            feeds.update({self._feed_names[role]: value for role, value in values.items()})
        outputs = self.graph.session.run(self._names[reads], feeds)
        count = 1 if reads == LOG_PROBS else 2
        self._first = outputs[:count]
        self.states = dict(
            zip(self.graph.state_roles, outputs[count : count + len(self.graph.state_roles)], strict=True)
        )
        self._attention = outputs[-1] if self._with_attention and reads != CHOICE else None
        if reads == CHOICE:
            self._previous = self._first[0].reshape(-1)  # (rows,): the top-1 ids are (rows, 1)

    def log_probs(self) -> np.ndarray:
        return self._first[0]

    def attention(self) -> np.ndarray | None:
        return self._attention

    def chosen(self) -> tuple[np.ndarray, np.ndarray]:
        return self._previous, self._first[1].reshape(-1)

    def top(self) -> tuple[np.ndarray, np.ndarray]:
        return self._first[0], self._first[1]

    def select(self, rows: np.ndarray) -> None:
        self.states = take_rows(self.states, rows, self.graph.batch_axes)
        self.statics = take_rows(self.statics, rows, self.graph.batch_axes)
        if self._previous.size:
            self._previous = self._previous[rows]


class BoundBuffers:
    """IO binding with double-buffered state buffers on a Device (see the module docstring). A finished batch's
    buffers can be `reset` for the next batch of the same shapes."""

    def __init__(
        self,
        graph: StepGraph,
        states: dict[str, np.ndarray],
        statics: dict[str, np.ndarray],
        with_attention: bool,
        device: Device,
        top_k: int = 1,
    ):
        self.graph, self.device, self.with_attention = graph, device, with_attention
        # The previous ids and every output the search reads are host arrays, whatever device keeps the states.
        self._host = device.host
        self._top_k_input = np.array([max(top_k, 1)], dtype=np.int64)
        self._in = {role: io.name for role, io in graph.spec.inputs.items()}
        self._out = {role: io.name for role, io in graph.spec.outputs.items()}
        # States are copied: their buffers are reused as outputs, and the caller's arrays must stay untouched.
        self._states = {role: device.upload(np.array(value)) for role, value in states.items()}
        self._statics = {role: device.upload(value) for role, value in statics.items()}
        role, value = next(iter(states.items()))
        self._rows = value.shape[graph.batch_axes[role]]
        self._chained_ids = np.zeros(self._rows, dtype=np.int64)
        # The outputs the search has read so far, bound from then on: each binding costs ≈ 3 µs, and a compaction
        # re-binds everything, so a greedy search never binds the log-probs or the ranked candidates.
        self._reads: set[str] = set()
        self._allocate()

    def _allocate(self) -> None:
        """Allocate the spare state buffers (by the contract's rule: the shape of the state they replace), the
        previous ids and the host outputs for the current row count. The next step binds them, once: one IOBinding
        per buffer parity, so later steps only write the ids and run."""
        self._key: tuple | None = None  # the shapes change with the row count
        spare = {role: self.device.empty(self.device.shape(value)) for role, value in self._states.items()}
        self._buffers = (self._states, spare)  # a step with parity p reads buffers[p] and writes buffers[1 - p]
        self._parity = 0
        # Previous ids, double-buffered too: with in-graph selection, step p writes its next ids where step p + 1
        # reads them, so greedy decoding never copies ids into the graph.
        self._ids = (self._chained_ids, np.zeros(self._rows, dtype=np.int64))
        self._next_log_probs = np.empty(self._rows, dtype=np.float32)
        self._log_probs = np.empty((self._rows, self.graph.vocab_size), dtype=np.float32)  # rewritten every step
        self._attention = None
        if self.with_attention:
            source_length = self.device.shape(self._statics[roles.MEMORY_BIAS])[1]
            self._attention = np.empty((self._rows, source_length), dtype=np.float32)
        width = int(self._top_k_input[0])  # (rows, top_k) candidates: log-probs and ids
        self._top = (np.empty((self._rows, width), dtype=np.float32), np.empty((self._rows, width), dtype=np.int64))
        self._bindings: list[Any] | None = None  # made by the next step, once it is known what the search reads
        host: list[np.ndarray] = [*self._ids, self._next_log_probs, self._log_probs, *self._top]
        if self._attention is not None:
            host.append(self._attention)
        device = [*self._states.values(), *spare.values(), *self._statics.values()]
        self.nbytes = sum(a.nbytes for a in host) + sum(self.device.nbytes(t) for t in device)

    def _binding(self, parity: int) -> Any:
        """The IOBinding of the steps with this parity: inputs, states, attention and the outputs read so far (an
        output left unbound is still computed, into memory onnxruntime manages). With top_k = 1 the ranked
        candidates are the greedy choice: bound to the chained ids."""
        binding = self.graph.session.io_binding()
        host = self._host
        host.bind(binding, self._in[roles.PREVIOUS_IDS], self._ids[parity])
        if self.graph.ranks:
            host.bind(binding, self._in[roles.TOP_K], self._top_k_input)
        if TOP in self._reads:
            host.bind(binding, self._out[roles.TOP_LOG_PROBS], self._top[0], output=True)
            host.bind(binding, self._out[roles.TOP_IDS], self._top[1], output=True)
        if CHOICE in self._reads:
            shape = (self._rows, 1)  # views of the (rows,) buffers: bound by address
            host.bind(binding, self._out[roles.TOP_IDS], self._ids[1 - parity].reshape(shape), output=True)
            host.bind(binding, self._out[roles.TOP_LOG_PROBS], self._next_log_probs.reshape(shape), output=True)
        if LOG_PROBS in self._reads:
            host.bind(binding, self._out[roles.LOG_PROBS], self._log_probs, output=True)
        for role, value in self._statics.items():
            self.device.bind(binding, self._in[role], value)
        for role in self.graph.state_roles:
            self.device.bind(binding, self._in[role], self._buffers[parity][role])
            self.device.bind(binding, self._out[role], self._buffers[1 - parity][role], output=True)
        if self._attention is not None:
            host.bind(binding, self._out[roles.ATTENTION], self._attention, output=True)
        return binding

    @staticmethod
    def key_of(
        device: Device, states: dict[str, Any], statics: dict[str, Any], with_attention: bool, top_k: int
    ) -> tuple:
        """The shapes buffers must hold for `reset` to take these states and statics (the roles are the same for
        every runner of one model, so the shapes in role order say it)."""
        return (
            with_attention,
            top_k,
            *[device.shape(value) for value in states.values()],
            *[device.shape(value) for value in statics.values()],
        )

    def key(self) -> tuple:
        """key_of the shapes these buffers hold now (compaction may have changed them)."""
        if self._key is None:
            self._key = self.key_of(
                self.device, self._buffers[0], self._statics, self.with_attention, int(self._top_k_input[0])
            )
        return self._key

    def reset(self, states: dict[str, np.ndarray], statics: dict[str, np.ndarray]) -> bool:
        """Start a new batch in the existing buffers and bindings if every shape matches (then True): a service
        decoding one input at a time pays for buffers and bindings once, not per call."""
        if not self.device.writes_in_place:
            return False
        current = self._buffers[0]
        if any(current[r].shape != v.shape for r, v in states.items()) or any(
            self._statics[r].shape != v.shape for r, v in statics.items()
        ):
            return False
        for role, value in states.items():
            np.copyto(current[role], value)
        for role, value in statics.items():
            np.copyto(self._statics[role], value)
        self._parity, self._states = 0, current
        return True

    def set_previous(self, ids: np.ndarray) -> None:
        self._ids[self._parity][:] = ids

    def run(self, reads: str) -> None:
        if reads == TOP and self._top_k_input[0] == 1:
            reads = CHOICE  # the top-1 candidates are the choice outputs, bound once
        if reads not in self._reads:
            self._reads.add(reads)
            self._bindings = None
        if self._bindings is None:
            self._bindings = [self._binding(parity) for parity in (0, 1)]
        self.graph.session.run_with_iobinding(self._bindings[self._parity])
        self._parity = 1 - self._parity
        self._states = self._buffers[self._parity]  # what the step just wrote

    def log_probs(self) -> np.ndarray:
        return self._log_probs

    def attention(self) -> np.ndarray | None:
        return self._attention

    def chosen(self) -> tuple[np.ndarray, np.ndarray]:
        return self._ids[self._parity], self._next_log_probs

    def top(self) -> tuple[np.ndarray, np.ndarray]:
        if self._top_k_input[0] == 1:
            return self._next_log_probs[:, None], self._ids[self._parity][:, None]
        return self._top

    def select(self, rows: np.ndarray) -> None:
        axes = self.graph.batch_axes
        chained = self._ids[self._parity]  # the ids the last step chose (the next step's previous ids)
        if len(rows) == self._rows and self.device.writes_in_place:
            # Same row count (beam search reorders every step): gather in place, the bindings stay valid.
            for values in (self._states, self._statics):
                for role, array in values.items():
                    array[...] = np.take(array, rows, axis=axes[role])
            chained[...] = chained[rows]
            return
        self._chained_ids = chained[rows]
        self._states = {role: self.device.take(value, rows, axes[role]) for role, value in self._states.items()}
        self._statics = {role: self.device.take(value, rows, axes[role]) for role, value in self._statics.items()}
        self._rows = len(rows)
        self._allocate()
