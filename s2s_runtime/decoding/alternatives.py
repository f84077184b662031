"""Alternatives (CTranslate2's return_alternatives): the num_hypotheses most likely tokens at the first position
the forced target prefix leaves free, each continued greedily.

With target_prefix="sk" and num_hypotheses=3 the answer is three outputs starting "sk" that differ at the third
token — an autocompletion or a "did you mean" list. Each input takes num_hypotheses decoder rows; row r follows the
prefix, takes the r-th most likely token after the logits processors at the branching position (equal log-probs:
lower id first), then the argmax. Hypotheses keep that order (the branching token's log-prob, best first), not the
normalized-score order of beam search; an alternative the rules made impossible (-inf) is left out, so an input
may get fewer than num_hypotheses. Without a prefix the branching position is the first token.
"""

from __future__ import annotations

import numpy as np

from .hypotheses import Candidate
from .stepwise import Chooser, stepwise_search
from .strategy import DecoderRunner, Search, SearchTask, Strategy, input_rows, register


@register
class Alternatives(Strategy):
    name = "alternatives"

    def rows_per_input(self) -> int:
        return self.options.num_hypotheses

    def search(self, runner: DecoderRunner, task: SearchTask) -> Search:
        copies = self.options.num_hypotheses
        rows = input_rows(len(task.limits), copies)  # the runner holds each input `copies` times
        limits = [task.limits[i] for i in rows]
        branch_at = np.array([len(lim.prefix) for lim in limits])  # (rows,) output length at the branching position
        rank = np.arange(len(rows)) % copies  # (rows,) which alternative each row takes there
        candidates = yield from stepwise_search(
            runner,
            start_id=task.start_id,
            eos_id=task.eos_id,
            limits=limits,
            processors=task.processors,
            choose=brancher(branch_at, rank),
            collect_attention=task.collect_attention,
        )
        return [possible([c for (c,) in candidates[i * copies : (i + 1) * copies]]) for i in range(len(task.limits))]


def brancher(branch_at: np.ndarray, rank: np.ndarray) -> Chooser:
    """A stepwise chooser: the argmax, except at each row's branching position where it takes its rank-th best."""

    def choose(processed: np.ndarray, live_rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        chosen = processed.argmax(axis=1)
        branching = np.flatnonzero(lengths[live_rows] == branch_at[live_rows])
        if branching.size:
            order = np.argsort(-processed[branching], axis=1, kind="stable")  # (branching rows, vocab)
            ranks = np.minimum(rank[live_rows[branching]], processed.shape[1] - 1)
            chosen[branching] = order[np.arange(branching.size), ranks]
        return chosen

    return choose


def possible(candidates: list[Candidate]) -> list[Candidate]:
    """The alternatives in branching order, without impossible ones (score -inf) and without repeats (a
    vocabulary smaller than num_hypotheses, or a prefix that already reaches the max length)."""
    kept, seen = [], set()
    for candidate in candidates:
        key = tuple(candidate.ids)
        if np.isfinite(candidate.score) and key not in seen:
            kept.append(candidate)
            seen.add(key)
    return kept
