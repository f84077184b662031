"""Search over a decoder step function: greedy decoding with finished-row compaction.

The step function is whatever the model provides (an onnxruntime session behind role-keyed dicts); the search only
sees numpy arrays, so it is tested without any graph.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# (previous_ids (batch,), states by role, statics by role) → (log_probs (batch, vocab), new states by role)
StepFunction = Callable[[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]],
                        tuple[np.ndarray, dict[str, np.ndarray]]]


@dataclass
class Hypothesis:
    ids: list[int]      # generated ids, eos excluded
    score: float        # sum of the log-probs of the generated ids and of eos when it was emitted
    finished: bool      # True if eos was emitted, False if the length limit stopped it


def take_rows(values: dict[str, np.ndarray], rows: np.ndarray, batch_axes: dict[str, int]) -> dict[str, np.ndarray]:
    """Keep only `rows` of every tensor, along its own batch axis."""
    return {role: np.take(value, rows, axis=batch_axes[role]) for role, value in values.items()}


def greedy_search(step: StepFunction, states: dict[str, np.ndarray], statics: dict[str, np.ndarray],
                  batch_axes: dict[str, int], *, start_id: int, eos_id: int, max_lengths: np.ndarray
                  ) -> list[Hypothesis]:
    """Greedy decoding of a batch. Rows that finish (eos or their own max length) are dropped from the states and
    statics, so they stop costing compute; each row's result depends only on its own inputs.

    Example:
        >>> def step(previous, states, statics):  # always prefers token 2, then eos (0) after two steps
        ...     t = states["state.t"] + 1
        ...     log_probs = np.log(np.where(t[:, None] > 2, [[0.9, 0.05, 0.05]], [[0.1, 0.1, 0.8]]))
        ...     return log_probs, {"state.t": t}
        >>> [h.ids for h in greedy_search(step, {"state.t": np.zeros(1)}, {}, {"state.t": 0},
        ...                               start_id=1, eos_id=0, max_lengths=np.array([5]))]
        [[2, 2]]
    """
    batch = len(max_lengths)
    hypotheses = [Hypothesis([], 0.0, False) for _ in range(batch)]
    active = np.arange(batch)  # original row of each row still decoding
    previous = np.full(batch, start_id, dtype=np.int64)
    for _ in range(int(max_lengths.max(initial=0)) + 1):
        if active.size == 0:
            break
        log_probs, states = step(previous, states, statics)  # (active, vocab)
        chosen = log_probs.argmax(axis=1)  # (active,)
        chosen_log_probs = log_probs[np.arange(active.size), chosen]  # (active,)
        keep = np.ones(active.size, dtype=bool)
        for position, row in enumerate(active):
            hypothesis = hypotheses[row]
            hypothesis.score += float(chosen_log_probs[position])
            if chosen[position] == eos_id:
                hypothesis.finished, keep[position] = True, False
            else:
                hypothesis.ids.append(int(chosen[position]))
                keep[position] = len(hypothesis.ids) < max_lengths[row]
        if not keep.all():
            kept = np.flatnonzero(keep)
            states = take_rows(states, kept, batch_axes)
            statics = take_rows(statics, kept, batch_axes)
            active, chosen = active[kept], chosen[kept]
        previous = chosen.astype(np.int64)
    return hypotheses
