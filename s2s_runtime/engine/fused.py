"""The greedy graph's session: a batch's whole greedy decode in one onnxruntime call (the bundle's encoder, then a Loop
over its step; s2s_export.greedy_graph), cut into each row's hypothesis by the same code as the step loop's
(decoding.greedy.cut_choices), so the two give identical ids and scores — the engine's probe checks that at load.

A call can be stopped from outside: with a `stop`, the process's watchdog terminates the call once stop says so
(CallStopped), so a deadline or a cancellation holds inside the one call as it does between steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import roles
from ..bundle import GraphSpec
from ..decoding.greedy import cut_choices, cut_one_row
from ..decoding.hypotheses import Candidate
from .padding import padded_sources
from .sessions import import_onnxruntime
from .watchdog import WATCHDOG


class FusedGreedy:
    """Greedy decoding in one call of the greedy graph.

    Examples:
        >>> [candidate] = model.engine.fused.decode([[5, 6, 7]], [10])  # doctest: +SKIP
        >>> candidate.ids, candidate.finished  # doctest: +SKIP
        ([12, 9], True)
    """

    def __init__(self, session: Any, spec: GraphSpec, pad_id: int, eos_id: int):
        self.session, self.spec = session, spec
        self._pad, self._eos = pad_id, eos_id
        inputs, outputs = spec.inputs, spec.outputs
        self._input_names = [inputs[r].name for r in (roles.SOURCE_IDS, roles.SOURCE_LENGTHS, roles.MAX_LENGTHS)]
        self._output_names = [outputs[r].name for r in (roles.CHOSEN_IDS, roles.CHOSEN_LOG_PROBS)]
        self._run_options = import_onnxruntime().RunOptions

    def decode(
        self, sources: list[list[int]], max_lengths: list[int], stop: Callable[[], bool] | None = None
    ) -> list[Candidate]:
        """Each source's greedy hypothesis (every source non-empty, every max length ≥ 1); CallStopped when `stop`
        says so during the call."""
        ids, lengths = padded_sources(sources, self._pad)  # (batch, source_length), (batch,)
        limits = np.array(max_lengths, dtype=np.int64)  # (batch,)
        feeds = dict(zip(self._input_names, (ids, lengths, limits), strict=True))
        if stop is None:
            chosen, log_probs = self.session.run(self._output_names, feeds)  # (steps, batch) each
        else:
            run_options = self._run_options()
            with WATCHDOG.watching(stop, run_options):
                chosen, log_probs = self.session.run(self._output_names, feeds, run_options)
        return cut_choices(chosen, log_probs, limits, self._eos)

    def decode_one(self, source: list[int], max_length: int) -> Candidate:
        """`decode` of a single source without a stop, with no padding or batch bookkeeping (the thin path)."""
        ids, length, limit = self._input_names
        chosen, log_probs = self.session.run(
            self._output_names,
            {
                ids: np.array([source], dtype=np.int64),  # (1, source_length)
                length: np.array([len(source)], dtype=np.int64),  # (1,)
                limit: np.array([max_length], dtype=np.int64),  # (1,)
            },
        )  # (steps, 1) each
        return cut_one_row(chosen[:, 0].tolist(), log_probs[:, 0].tolist(), max_length, self._eos)
