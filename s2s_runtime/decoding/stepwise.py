"""The stepwise search of greedy decoding and sampling: every live row gets one token per step, chosen from the
(processed) log-probs; finished rows leave the runner in batches.

Rows that finish are dropped with `runner.select`, so finished rows stop costing compute. Compaction re-lays the
runner's buffers, which costs about as much as a few steps of a small model, so finished rows are dropped once they
are a quarter of the batch, not one at a time. Bookkeeping is vectorized over rows, so large batches do not pay
Python per row and step; without logits processors (constraints, a forced prefix) the per-row bookkeeping is
skipped altogether.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .hypotheses import Candidate, RowLimits, Rows, StepEvent
from .processors import Processors
from .strategy import DecoderRunner, Search

# (processed log-probs of the live rows, their original row indices, every row's output length so far — indexed by
# original row) → chosen token per live row
Chooser = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def should_compact(finished: int, rows: int) -> bool:
    """Whether to drop the finished rows from the runner now: once they are a quarter of its rows (a compaction
    re-lays the runner's buffers, which costs about as much as a few steps of a small model)."""
    return finished * 4 >= rows


def argmax(processed: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Greedy choice: the most likely token (the first of equal ones)."""
    return processed.argmax(axis=1)


def stepwise_search(
    runner: DecoderRunner,
    *,
    start_id: int,
    eos_id: int,
    limits: list[RowLimits],
    processors: Processors,
    choose: Chooser | None,
    collect_attention: bool = False,
) -> Search:
    """Decode every row of the runner (one per entry of `limits`), one StepEvent per step; returns one single
    Candidate list per row. `choose` None: the graph chooses (runner.greedy_step; no processors, no attention),
    and the chosen ids chain from step to step inside the runner."""
    state = Rows.start(limits)
    attention: list[list[np.ndarray]] = [[] for _ in limits]
    finished = np.zeros(len(limits), dtype=bool)
    active = np.arange(len(limits))  # original row of each row in the runner (some may be done, see below)
    done = np.zeros(len(limits), dtype=bool)  # per runner row: finished, still computed until the next compaction
    previous = np.full(len(limits), start_id, dtype=np.int64)
    constrained = bool(processors)
    chain: np.ndarray | None = previous  # the graph's own ids, chained between greedy steps
    some_done = False
    while active.size:
        live = np.flatnonzero(~done) if some_done else None
        if choose is None:
            chosen, scores = (np.array(v) for v in runner.greedy_step(chain))  # copies: the buffers are reused
            chain, weights = None, None
            live_rows = active
            if some_done:
                chosen, scores, live_rows = chosen[live], scores[live], active[live]
        else:
            raw, weights = runner.step(previous)  # (runner rows, vocab)
            live_rows = active
            if some_done:
                raw, live_rows = raw[live], active[live]
                weights = None if weights is None else weights[live]
            # The processors decide every rule, a forced prefix included (its token is the only one left allowed).
            processed = processors(raw, state.take(live_rows)) if constrained else raw
            chosen = choose(processed, live_rows, state.lengths)
            scores = processed[np.arange(len(chosen)), chosen]
        state.scores[live_rows] += scores
        if collect_attention and weights is not None:
            for position, row in enumerate(live_rows):
                attention[row].append(np.array(weights[position]))  # the runner may reuse its buffer
        ended = chosen == eos_id  # never inside a prefix: eos cannot be in one (s2s_runtime.inputs)
        finished[live_rows[ended]] = True
        growing = live_rows[~ended]
        state.ids[growing, state.lengths[growing]] = chosen[~ended]
        state.lengths[growing] += 1
        yield StepEvent(live_rows, chosen, scores, ended)
        stopped = ended | (state.lengths[live_rows] >= state.max_lengths[live_rows])
        if live is not None:  # some rows were done before this step
            done[live[stopped]] = True
            previous = np.full(active.size, eos_id, dtype=np.int64)  # done rows are fed anything; outputs ignored
            previous[live] = chosen
        else:
            done |= stopped
            previous = chosen
        finished_in_runner = int(done.sum())
        if finished_in_runner == active.size:
            break
        some_done = finished_in_runner > 0
        if should_compact(finished_in_runner, active.size):
            kept = np.flatnonzero(~done)
            runner.select(kept)
            active, previous, done, some_done = active[kept], previous[kept], done[kept], False
    return [
        [
            Candidate(
                state.ids[row, : state.lengths[row]].tolist(),
                float(state.scores[row]),
                bool(finished[row]),
                attention[row],
            )
        ]
        for row in range(len(limits))
    ]
