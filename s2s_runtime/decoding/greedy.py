"""Greedy decoding: the most likely token at every step.

The one implementation is the stepwise search (s2s_runtime.decoding.stepwise) choosing the argmax of the processed
log-probs. Where nothing needs the full log-probs — no rule, no attention — the graph can choose instead, and two
specializations of that case skip the per-step bookkeeping: many rows at once (each step only records the chosen
ids and log-probs; lengths, stops and scores are worked out once at the end), and a single input (a service's common
case) in plain Python scalars, where array bookkeeping would cost as much as the step itself. Tests prove both equal
to the stepwise search and to a row-by-row reference.
"""

from __future__ import annotations

import numpy as np

from ..config import GenerationOptions
from .hypotheses import Candidate, RowLimits
from .stepwise import argmax, should_compact, stepwise_search
from .strategy import DecoderRunner, Search, SearchOf, SearchTask, Strategy, register


@register
class Greedy(Strategy):
    name = "greedy"
    streamable = True

    @classmethod
    def check(cls, options: GenerationOptions) -> None:
        if options.num_hypotheses != 1:
            raise ValueError("num_hypotheses: greedy decoding gives one hypothesis; use strategy='beam' or 'sample'")

    def search(self, runner: DecoderRunner, task: SearchTask) -> Search:
        in_graph = runner.selects and not task.processors and not task.collect_attention
        if not in_graph or task.events:
            return (
                yield from stepwise_search(
                    runner,
                    start_id=task.start_id,
                    eos_id=task.eos_id,
                    limits=task.limits,
                    processors=task.processors,
                    choose=None if in_graph else argmax,
                    collect_attention=task.collect_attention,
                )
            )
        if len(task.limits) == 1:
            candidate = yield from greedy_one_row(runner, task.start_id, task.eos_id, task.limits[0].max_length)
            return [[candidate]]
        return [
            [c]
            for c in (
                yield from greedy_in_graph(runner, start_id=task.start_id, eos_id=task.eos_id, limits=task.limits)
            )
        ]


def greedy_in_graph(
    runner: DecoderRunner, *, start_id: int, eos_id: int, limits: list[RowLimits]
) -> SearchOf[list[Candidate]]:
    """Greedy decoding where the graph chooses, without per-step bookkeeping (one None per step): the result of
    the stepwise search, for less Python per step."""
    max_lengths = np.array([lim.max_length for lim in limits])  # (rows,)
    horizon, count = int(max_lengths.max()), len(limits)
    ids = np.full((horizon, count), eos_id, dtype=np.int64)  # (steps, rows): the token chosen at each step
    log_probs = np.zeros((horizon, count))  # (steps, rows)
    active = None  # original row of each runner row, once compaction has dropped some (None: all, in order)
    expires = max_lengths  # per runner row: the step count at which it reaches its max length
    ended = np.zeros(count, dtype=bool)  # per runner row: chose eos or reached its max length
    chose_eos = np.zeros(count, dtype=bool)
    first_expiry = int(expires.min())  # no row reaches its max length before this many steps
    previous: np.ndarray | None = np.full(count, start_id, dtype=np.int64)
    for step in range(horizon):
        chosen, scores = runner.greedy_step(previous)  # (runner rows,) each, valid until the next step
        previous = None  # from now on the runner chains the ids it chose itself
        if active is None:
            ids[step], log_probs[step] = chosen, scores
        else:
            ids[step, active], log_probs[step, active] = chosen, scores
        ended |= np.equal(chosen, eos_id, out=chose_eos)
        if step + 1 >= first_expiry:
            ended |= expires <= step + 1
        yield None
        finished_in_runner = int(np.count_nonzero(ended))
        if finished_in_runner == ended.size:
            break
        if should_compact(finished_in_runner, ended.size):
            kept = np.flatnonzero(~ended)
            runner.select(kept)
            active = kept if active is None else active[kept]
            expires, ended, chose_eos = expires[kept], ended[kept], chose_eos[kept]
            first_expiry = int(expires.min())
    return cut_choices(ids[: step + 1], log_probs[: step + 1], max_lengths, eos_id)


def cut_choices(ids: np.ndarray, log_probs: np.ndarray, max_lengths: np.ndarray, eos_id: int) -> list[Candidate]:
    """Each row's hypothesis from the tokens it chose at every step and their log-probs, both (steps, rows): its
    tokens up to its first eos within its max length (finished), else its first max-length tokens; its score the sum
    of its tokens' log-probs (in float64, eos included). What a row chose after it ended is ignored."""
    if ids.shape[1] == 1:
        return [cut_one_row(ids[:, 0].tolist(), log_probs[:, 0].tolist(), int(max_lengths[0]), eos_id)]
    steps = np.arange(len(ids))[:, None]  # (steps, 1)
    is_eos = (ids == eos_id) & (steps < max_lengths)  # (steps, rows): eos within each row's limit
    finished = is_eos.any(axis=0)
    lengths = np.where(finished, is_eos.argmax(axis=0), max_lengths)  # tokens before eos, or up to the limit
    ends = np.where(finished, lengths, lengths - 1)  # (rows,): the step of each row's last scored token
    totals = np.cumsum(log_probs, axis=0, dtype=np.float64)[ends, np.arange(ids.shape[1])]
    per_row = ids.T.tolist()  # plain lists, sliced below: cheaper than a numpy slice per row
    return [
        Candidate(row_ids[:length], total, done)
        for row_ids, length, total, done in zip(
            per_row, lengths.tolist(), totals.tolist(), finished.tolist(), strict=True
        )
    ]


def greedy_one_row(runner: DecoderRunner, start_id: int, eos_id: int, max_length: int) -> SearchOf[Candidate]:
    """greedy_in_graph for a single input, in plain Python scalars."""
    ids: list[int] = []
    score = 0.0
    chosen, log_probs = runner.greedy_step(np.array([start_id], dtype=np.int64))  # (1,) each
    while True:
        yield None
        score += float(log_probs[0])
        token = int(chosen[0])
        if token == eos_id:
            return Candidate(ids, score, True)
        ids.append(token)
        if len(ids) >= max_length:
            return Candidate(ids, score, False)
        chosen, log_probs = runner.greedy_step()


def cut_one_row(ids: list[int], log_probs: list[float], max_length: int, eos_id: int) -> Candidate:
    """cut_choices for a single row, in plain Python scalars (a service's common case, where array bookkeeping would
    cost more than the rest of the call); the score summed in the same order, so equal to the last bit."""
    try:
        length, finished = ids.index(eos_id, 0, max_length), True
    except ValueError:
        length, finished = max_length, False
    score = 0.0
    for value in log_probs[: length + finished]:
        score += value
    return Candidate(ids[:length], score, finished)
