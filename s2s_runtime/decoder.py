"""Decoder runners: drive the decoder-step session over one batch, keeping its states cached between steps.

Two implementations of search.DecoderRunner:
- ArrayRunner: `session.run` with numpy arrays; simple, used when IO binding is off.
- BoundRunner: onnxruntime IO binding. States live in preallocated, double-buffered buffers (step t reads buffer A
  and writes buffer B, step t+1 the reverse) bound once per batch, so nothing is allocated or bound per step; with an
  optimized graph the greedy ids chain from one step's output buffer to the next step's input. On the CPU the
  buffers are numpy arrays bound by address; on CUDA they are OrtValues on the device, together with the encoder's
  statics, and compaction / beam reordering runs a small Gather graph there, so the per-step host traffic is the
  previous ids in and the (greedy choice or) log-probs out. A finished BoundRunner can be `reset` for the next batch
  of the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import roles
from .bundle import GraphSpec
from .sessions import import_onnxruntime

GRAPHS_DIR = Path(__file__).resolve().parent / "graphs"


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
    def of(cls, session: Any, spec: GraphSpec, padding_bias: float | None = None) -> "StepGraph":
        state_roles = tuple(role for role in spec.outputs if roles.is_state(role))
        return cls(session, spec, state_roles, {role: io.batch_axis for role, io in spec.inputs.items()},
                   padding_bias)

    @property
    def selects(self) -> bool:
        """Whether the graph can output its greedy choice: optimized exports can (see choice_roles)."""
        return self.choice_roles(1) is not None

    def choice_roles(self, top_k: int) -> tuple[str, str] | None:
        """The outputs (ids, log-probs) holding each row's greedy choice when the runner asks `top_k` candidates:
        the ranked candidates, (batch, 1), when top_k is 1; else None."""
        if self.ranks and top_k == 1:
            return roles.TOP_IDS, roles.TOP_LOG_PROBS
        return None

    @property
    def ranks(self) -> bool:
        """Whether the graph also outputs each row's top_k best tokens (top_log_probs, top_ids): optimized exports do."""
        return roles.TOP_K in self.spec.inputs and roles.TOP_IDS in self.spec.outputs

    def output_names(self, first: tuple[str, ...], with_attention: bool) -> list[str]:
        """Names of the outputs `first`, then the states, then (if asked) the attention."""
        wanted = [*first, *self.state_roles] + ([roles.ATTENTION] if with_attention else [])
        return [self.spec.outputs[role].name for role in wanted]


class ArrayRunner:
    """Runs the step with `session.run`; states and statics are numpy arrays."""

    def __init__(self, graph: StepGraph, states: dict[str, np.ndarray], statics: dict[str, np.ndarray],
                 with_attention: bool, top_k: int = 1):
        self.graph, self.states, self.statics = graph, states, statics
        self.with_attention = with_attention
        choice = graph.choice_roles(top_k)
        self.selects = choice is not None
        self.top_k = top_k if graph.ranks else 0
        self._names = graph.output_names((roles.LOG_PROBS,), with_attention)
        self._greedy_names = graph.output_names(choice, False) if choice else []
        self._top_names = graph.output_names((roles.TOP_LOG_PROBS, roles.TOP_IDS), with_attention) if self.top_k else []
        self._feed_names = {role: io.name for role, io in graph.spec.inputs.items()}
        self._controls = {roles.TOP_K: np.array([max(top_k, 1)], dtype=np.int64)} if graph.ranks else {}
        self._previous = np.zeros(0, dtype=np.int64)

    def _run(self, names: list[str], previous_ids: np.ndarray) -> list[np.ndarray]:
        feeds = {self._feed_names[roles.PREVIOUS_IDS]: previous_ids}
        for values in (self.states, self.statics, self._controls):
            feeds.update({self._feed_names[role]: value for role, value in values.items()})
        return self.graph.session.run(names, feeds)

    def step(self, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        log_probs, *rest = self._run(self._names, previous_ids)
        self.states = dict(zip(self.graph.state_roles, rest))
        return log_probs, rest[-1] if self.with_attention else None

    def greedy_step(self, previous_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        next_ids, next_log_probs, *states = self._run(self._greedy_names,
                                                      self._previous if previous_ids is None else previous_ids)
        next_ids, next_log_probs = next_ids.reshape(-1), next_log_probs.reshape(-1)  # (rows,): top-1 is (rows, 1)
        self.states, self._previous = dict(zip(self.graph.state_roles, states)), next_ids
        return next_ids, next_log_probs

    def top_k_step(self, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        values, ids, *rest = self._run(self._top_names, previous_ids)
        self.states = dict(zip(self.graph.state_roles, rest))
        return values, ids, rest[-1] if self.with_attention else None

    def select(self, rows: np.ndarray) -> None:
        self.states = take_rows(self.states, rows, self.graph.batch_axes)
        self.statics = take_rows(self.statics, rows, self.graph.batch_axes)
        if self._previous.size:
            self._previous = self._previous[rows]


class DeviceGather:
    """Gather along a batch axis on the device where the tensors live, with the shipped Gather graphs."""

    def __init__(self, providers: list, device_type: str, device_id: int):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.device_type, self.device_id = device_type, device_id
        self._sessions = {path.stem: ort.InferenceSession(str(path), options, providers=providers)
                          for path in sorted(GRAPHS_DIR.glob("gather_*.onnx"))}

    def __call__(self, value: Any, rows: np.ndarray, axis: int, *, out: Any = None) -> Any:
        """`rows` of `value` along `axis`, as a new device tensor or written into `out` (which must not be
        `value`: the gather does not work in place)."""
        dtype = {"tensor(float)": "float32", "tensor(float16)": "float16"}[value.data_type()]
        session = self._sessions[f"gather_{dtype}_rank{len(value.shape())}_axis{axis}"]
        binding = session.io_binding()
        binding.bind_ortvalue_input("values", value)
        binding.bind_cpu_input("indices", rows.astype(np.int64))
        if out is None:
            binding.bind_output("gathered", self.device_type, self.device_id)
        else:
            binding.bind_ortvalue_output("gathered", out)
        session.run_with_iobinding(binding)
        return out if out is not None else binding.get_outputs()[0]


class BoundRunner:
    """Runs the step with IO binding and double-buffered state buffers (see the module docstring).

    On the CPU every cached tensor is a numpy array this runner owns, bound by address (no OrtValue per tensor), and
    selecting rows is a numpy take. With a `gather` (a DeviceGather, for a device) they are OrtValues living on
    that device and rows are gathered there.
    """

    def __init__(self, graph: StepGraph, states: dict[str, np.ndarray], statics: dict[str, np.ndarray],
                 with_attention: bool, *, top_k: int = 1, device_type: str = "cpu", device_id: int = 0,
                 gather: DeviceGather | None = None):
        self.graph, self.with_attention = graph, with_attention
        self._choice = graph.choice_roles(top_k)
        self.selects = self._choice is not None
        # With top_k = 1 the ranked candidates are the greedy choice: one set of outputs, bound to the chained ids.
        self._choice_is_top = self._choice == (roles.TOP_IDS, roles.TOP_LOG_PROBS)
        self.top_k = top_k if graph.ranks else 0
        self._top_k_input = np.array([max(top_k, 1)], dtype=np.int64)
        self.device_type, self.device_id, self._gather = device_type, device_id, gather
        self._ort = import_onnxruntime()
        self._in = {role: io.name for role, io in graph.spec.inputs.items()}
        self._out = {role: io.name for role, io in graph.spec.outputs.items()}
        # States are copied: their buffers are reused as outputs, and the caller's arrays must stay untouched.
        self._states = {role: self._upload(np.array(value)) for role, value in states.items()}
        self._statics = {role: self._upload(value) for role, value in statics.items()}
        role, value = next(iter(states.items()))
        self._rows = value.shape[graph.batch_axes[role]]
        self._chained_ids = np.zeros(self._rows, dtype=np.int64)
        # The optional outputs the search has read so far, bound from then on: each binding costs ≈ 3 µs, and a
        # compaction re-binds everything, so a greedy search never binds the log-probs or the ranked candidates.
        self._reads: set[str] = set()
        self._allocate()

    # -- tensors: numpy arrays on the host, OrtValues on a device ----------------------------------------------------

    def _upload(self, array: np.ndarray) -> Any:
        array = np.ascontiguousarray(array)
        if self._gather is None:
            return array
        return self._ort.OrtValue.ortvalue_from_numpy(array, self.device_type, self.device_id)

    def _empty(self, shape: tuple[int, ...]) -> Any:
        if self._gather is None:
            return np.empty(shape, dtype=np.float32)
        return self._ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, self.device_type,
                                                                self.device_id)

    @staticmethod
    def _shape(tensor: Any) -> tuple[int, ...]:
        return tensor.shape if isinstance(tensor, np.ndarray) else tuple(tensor.shape())

    def _bind(self, binding: Any, name: str, tensor: Any, *, output: bool = False) -> None:
        """Bind a device OrtValue, or a host array in place: through an OrtValue over the array's own memory
        (onnxruntime documents that one made from a numpy array on the CPU does not copy it; the array lives as long
        as this runner). ≈ 1.7 µs, where binding by address costs ≈ 3 µs — a compaction binds a dozen."""
        if isinstance(tensor, np.ndarray):
            tensor = self._ort.OrtValue.ortvalue_from_numpy(tensor)
        if output:
            binding.bind_ortvalue_output(name, tensor)
        else:
            binding.bind_ortvalue_input(name, tensor)

    def _take(self, tensor: Any, rows: np.ndarray, axis: int) -> Any:
        if self._gather is None:
            return np.take(tensor, rows, axis=axis)
        return self._gather(tensor, rows, axis)

    # -- DecoderRunner ---------------------------------------------------------------------------------------------

    def _allocate(self) -> None:
        """Allocate the spare state buffers, the previous-ids input and the host outputs for the current row count.
        The next step binds them, once: one IOBinding per buffer parity, so later steps only write the ids and run."""
        self._key = None  # the shapes change with the row count
        spare = {role: self._empty(self._shape(value)) for role, value in self._states.items()}
        self._buffers = (self._states, spare)  # a step with parity p reads buffers[p] and writes buffers[1 - p]
        self._parity = 0
        # Previous ids, double-buffered too: with in-graph selection, step p writes its next ids where step p + 1
        # reads them, so greedy decoding never copies ids into the graph.
        self._ids = (self._chained_ids, np.zeros(self._rows, dtype=np.int64))
        self._next_log_probs = np.empty(self._rows, dtype=np.float32)
        vocab = self.graph.spec.outputs[roles.LOG_PROBS].shape[-1]
        self._log_probs = np.empty((self._rows, vocab), dtype=np.float32)  # rewritten in place every step
        self._attention = None
        if self.with_attention:
            source_length = self._shape(self._statics[roles.MEMORY_BIAS])[1]
            self._attention = np.empty((self._rows, source_length), dtype=np.float32)
        width = int(self._top_k_input[0])  # (rows, top_k) candidates: log-probs and ids
        self._top = (np.empty((self._rows, width), dtype=np.float32), np.empty((self._rows, width), dtype=np.int64))
        self._bindings: list[Any] | None = None  # made by the next step, once it is known what the search reads

    def _binding(self, parity: int) -> Any:
        """The IOBinding of the steps with this parity: inputs, states, attention and the outputs read so far (an
        output left unbound is still computed, into memory onnxruntime manages)."""
        binding = self.graph.session.io_binding()
        self._bind(binding, self._in[roles.PREVIOUS_IDS], self._ids[parity])
        if self.graph.ranks:
            self._bind(binding, self._in[roles.TOP_K], self._top_k_input)
        if "top" in self._reads:
            self._bind(binding, self._out[roles.TOP_LOG_PROBS], self._top[0], output=True)
            self._bind(binding, self._out[roles.TOP_IDS], self._top[1], output=True)
        if "choice" in self._reads:
            ids_role, log_prob_role = self._choice
            shape = (self._rows, 1) if self._choice_is_top else (self._rows,)  # views: bound by address
            self._bind(binding, self._out[ids_role], self._ids[1 - parity].reshape(shape), output=True)
            self._bind(binding, self._out[log_prob_role], self._next_log_probs.reshape(shape), output=True)
        if "log_probs" in self._reads:
            self._bind(binding, self._out[roles.LOG_PROBS], self._log_probs, output=True)
        for role, value in self._statics.items():
            self._bind(binding, self._in[role], value)
        for role in self.graph.state_roles:
            self._bind(binding, self._in[role], self._buffers[parity][role])
            self._bind(binding, self._out[role], self._buffers[1 - parity][role], output=True)
        if self._attention is not None:
            self._bind(binding, self._out[roles.ATTENTION], self._attention, output=True)
        return binding

    def _read(self, outputs: str) -> None:
        """Bind `outputs` ("log_probs", "choice" or "top") from this step on, if not already."""
        if outputs not in self._reads:
            self._reads.add(outputs)
            self._bindings = None

    @classmethod
    def key_of(cls, states: dict[str, Any], statics: dict[str, Any], with_attention: bool, top_k: int) -> tuple:
        """The shapes a runner must hold for `reset` to take these states and statics (the roles are the same for
        every runner of one model, so the shapes in role order say it)."""
        return (with_attention, top_k, *[cls._shape(value) for value in states.values()],
                *[cls._shape(value) for value in statics.values()])

    def key(self) -> tuple:
        """key_of the shapes this runner holds now (compaction may have changed them)."""
        if self._key is None:
            self._key = self.key_of(self._buffers[0], self._statics, self.with_attention, int(self._top_k_input[0]))
        return self._key

    def reset(self, states: dict[str, np.ndarray], statics: dict[str, np.ndarray]) -> bool:
        """Start a new batch in the existing buffers and bindings if every shape matches (then True): a service
        decoding one input at a time pays for buffers and bindings once, not per call."""
        if self._gather is not None:
            return False
        current = self._buffers[0]
        if any(current[r].shape != v.shape for r, v in states.items()) or \
                any(self._statics[r].shape != v.shape for r, v in statics.items()):
            return False
        for role, value in states.items():
            np.copyto(current[role], value)
        for role, value in statics.items():
            np.copyto(self._statics[role], value)
        self._parity, self._states = 0, current
        return True

    def step(self, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        self._read("log_probs")
        self._ids[self._parity][:] = previous_ids
        self._run()
        return self._log_probs, self._attention

    def greedy_step(self, previous_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One step choosing in the graph: (next ids, their log-probs), both (rows,), valid until the next step.
        previous_ids=None continues from the ids the last step chose."""
        self._read("choice")
        if previous_ids is not None:
            self._ids[self._parity][:] = previous_ids
        self._run()
        return self._ids[self._parity], self._next_log_probs

    def top_k_step(self, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One step returning each row's top_k best (log-probs, ids), best first, and the attention (or None); all
        valid until the next step."""
        self._read("choice" if self._choice_is_top else "top")
        self._ids[self._parity][:] = previous_ids
        self._run()
        if self._choice_is_top:
            return self._next_log_probs[:, None], self._ids[self._parity][:, None], self._attention
        return self._top[0], self._top[1], self._attention

    def _run(self) -> None:
        if self._bindings is None:
            self._bindings = [self._binding(parity) for parity in (0, 1)]
        self.graph.session.run_with_iobinding(self._bindings[self._parity])
        self._parity = 1 - self._parity
        self._states = self._buffers[self._parity]  # what the step just wrote

    def select(self, rows: np.ndarray) -> None:
        axes = self.graph.batch_axes
        chained = self._ids[self._parity]  # the ids the last step chose (the next step's previous ids)
        if len(rows) == self._rows and self._gather is None:
            # Same row count (beam search reorders every step): gather in place, the bindings stay valid.
            for values in (self._states, self._statics):
                for role, array in values.items():
                    array[...] = np.take(array, rows, axis=axes[role])
            chained[...] = chained[rows]
            return
        self._chained_ids = chained[rows]
        self._states = {role: self._take(value, rows, axes[role]) for role, value in self._states.items()}
        self._statics = {role: self._take(value, rows, axes[role]) for role, value in self._statics.items()}
        self._rows = len(rows)
        self._allocate()
