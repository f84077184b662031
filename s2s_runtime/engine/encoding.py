"""The encoder: source ids in, the decoder step's initial states and per-sequence statics out.

The encoder graph computes every row up to the batch's longest source, so a large batch of mixed lengths is encoded
in groups of similar length and reassembled with what the encoder itself puts at padded positions (zeros, and the
manifest's memory_bias_padding for the memory bias); each row's values do not depend on its group. Groups are cut in
length order, only where the length changes, once they hold GROUP_ROWS rows: a common length is never split, so
most groups need no padding at all. Outputs are fetched by name, in role order, never by the graph's output order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import roles
from ..bundle import GraphSpec
from .padding import padded, padded_sources

# Large batches of mixed lengths are encoded in groups of at least this many rows: small enough to cut the padding,
# large enough for efficient matmuls and few calls.
GROUP_ROWS = 32

Encoded = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # (states, statics) by role


class Encoder:
    """The encoder session of a model (s2s_runtime.load builds it).

    Examples:
        >>> states, statics = model.encoder.encode([[4, 5, 6], [7, 8]])  # doctest: +SKIP
        >>> states["state.h"].shape  # doctest: +SKIP
        (1, 2, 16)
    """

    def __init__(self, session: Any, spec: GraphSpec, step: GraphSpec, pad_id: int, padding_bias: float | None):
        self.session, self.spec = session, spec
        self._roles = list(spec.outputs)
        self._output_names = [spec.outputs[role].name for role in self._roles]
        self._input_names = (spec.inputs[roles.SOURCE_IDS].name, spec.inputs[roles.SOURCE_LENGTHS].name)
        needed = [r for r in step.inputs if r not in roles.CONTROL_INPUTS]  # what the encoder gives the step
        self.state_roles = [r for r in needed if roles.is_state(r)]
        self.static_roles = [r for r in needed if not roles.is_state(r)]
        self._pad, self._padding_bias = pad_id, padding_bias

    def encode(self, sources: list[list[int]]) -> Encoded:
        """Encode a batch of source ids (each row its own length); returns the step's initial states and statics."""
        lengths = np.array([len(s) for s in sources], dtype=np.int64)  # (batch,)
        encoded: dict[str, np.ndarray]
        if len(sources) <= GROUP_ROWS or lengths.min() == lengths.max():
            encoded = self.run(sources)
        else:
            order = np.argsort(lengths, kind="stable")
            cuts: list[int] = []
            start = 0
            for change in np.flatnonzero(np.diff(lengths[order])) + 1:  # positions where a longer length starts
                if change - start >= GROUP_ROWS:
                    cuts.append(int(change))
                    start = int(change)
            encoded = {}
            for group in np.split(order, cuts):
                for role, value in self.run([sources[i] for i in group]).items():
                    spec = self.spec.outputs[role]
                    if role not in encoded:  # no row yet: what the encoder puts at padded rows and positions
                        none = value.take([], axis=spec.shape.index(roles.BATCH_DIM))
                        encoded[role] = padded(none, spec, len(sources), int(lengths.max()), self._padding_bias)
                    target: list[Any] = [slice(None)] * value.ndim  # this group's rows (and its source positions)
                    target[spec.shape.index(roles.BATCH_DIM)] = group  # every encoder output has one
                    if roles.SOURCE_DIM in spec.shape:
                        axis = spec.shape.index(roles.SOURCE_DIM)
                        target[axis] = slice(0, value.shape[axis])
                    encoded[role][tuple(target)] = value
        return {r: encoded[r] for r in self.state_roles}, {r: encoded[r] for r in self.static_roles}

    def run(self, sources: list[list[int]]) -> dict[str, np.ndarray]:
        """One call of the encoder graph over the batch padded to its longest source; every output by role."""
        ids, lengths = padded_sources(sources, self._pad)  # (batch, source_length), (batch,)
        values = self.session.run(self._output_names, {self._input_names[0]: ids, self._input_names[1]: lengths})
        return dict(zip(self._roles, values, strict=True))
