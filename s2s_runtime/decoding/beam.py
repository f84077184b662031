"""Beam search: the beam_size best partial hypotheses of each input, extended by every token at every step."""

from __future__ import annotations

import numpy as np

from ..config import GenerationOptions
from .hypotheses import Candidate, RowLimits, Rows, StepEvent
from .processors import Processors
from .ranking import ranked
from .strategy import DecoderRunner, Search, SearchTask, Strategy, input_rows, register


@register
class BeamSearch(Strategy):
    name = "beam"
    own_options = ("beam_size", "coverage_penalty")
    beams = True

    @classmethod
    def check(cls, options: GenerationOptions) -> None:
        if options.num_hypotheses > options.beam:
            raise ValueError(f"num_hypotheses: {options.num_hypotheses} is more than beam_size {options.beam}")

    def rows_per_input(self) -> int:
        return self.options.beam

    def top_k(self, ranks: bool, vocab_size: int, processors: Processors) -> int:
        """2 × beam_size ranked candidates per row when the graph ranks, there are that many tokens, and no rule
        needs the full log-probs (see beam_search); else 1 (and the full log-probs)."""
        wanted = 2 * self.options.beam
        return wanted if ranks and wanted <= vocab_size and not processors else 1

    def search(self, runner: DecoderRunner, task: SearchTask) -> Search:
        return (
            yield from beam_search(
                runner,
                start_id=task.start_id,
                eos_id=task.eos_id,
                limits=task.limits,
                options=self.options,
                processors=task.processors,
                collect_attention=task.collect_attention,
                source_lengths=[len(source) for source in task.sources],
            )
        )


def beam_search(
    runner: DecoderRunner,
    *,
    start_id: int,
    eos_id: int,
    limits: list[RowLimits],
    options: GenerationOptions,
    processors: Processors,
    collect_attention: bool = False,
    source_lengths: list[int] | None = None,
) -> Search:
    """Beam search; returns each input's n-best (num_hypotheses candidates, best first by normalized score). The
    runner holds each input `options.beam` times, input-major (rows 0..beam-1 are input 0, and so on).

    Stopping rule: an input stops once beam_size hypotheses have ended with eos, or when its beams reach its max
    length (the unfinished beams then compete with the finished hypotheses). Each step, every live beam is extended by
    every token; the 2 × beam_size best extensions by summed log-prob (ties: earlier beam, then lower id) are visited
    best first: an eos extension becomes a finished hypothesis, any other extension a live beam, until beam_size live
    beams are found. Only each beam's own 2 × beam_size best tokens can be among those, so when the runner ranks at
    least that many in the graph (runner.top_k) and no processor needs the full log-probs, only those candidates
    leave the graph. One StepEvent per step: each live beam's input, new token and running score.
    """
    beam, inputs = options.beam, len(limits)
    finished: list[list[Candidate]] = [[] for _ in range(inputs)]
    done_count = np.zeros(inputs, dtype=np.int64)
    # Live rows: (input, beam) pairs, input-major; row bookkeeping follows `select`. The runner starts with every
    # input `beam` times, of which only the first is live (the copies score -inf and are never extended), so the row
    # count — and with it the runner's bound buffers — stays the same from the first step on.
    row_input = input_rows(inputs, beam)
    rows = Rows.start([lim for lim in limits for _ in range(beam)])
    rows.scores[np.arange(row_input.size) % beam != 0] = -np.inf
    attention: list[list[np.ndarray]] = [[] for _ in row_input]
    previous = np.full(row_input.size, start_id, dtype=np.int64)
    ranked_in_graph = runner.top_k >= 2 * beam and not processors
    while row_input.size:
        if ranked_in_graph:  # each row's best candidates, (rows, top_k): `candidate_ids` maps them to tokens
            processed, candidate_ids, weights = runner.top_k_step(previous)
        else:
            raw, weights = runner.step(previous)  # (rows, vocab)
            processed, candidate_ids = processors(raw, rows), None
        width = processed.shape[1]
        totals = rows.scores[:, None] + processed  # (rows, width)
        # Lay rows out as (input, beam slot, candidate) so each input's candidates are one flat, ordered row.
        slot = np.arange(len(row_input)) - np.searchsorted(row_input, row_input)  # rank among its input's rows
        grid = np.full((inputs, beam, width), -np.inf)
        grid[row_input, slot] = totals
        flat = grid.reshape(inputs, beam * width)
        order = np.argsort(-flat, axis=1, kind="stable")[:, : 2 * beam]  # (inputs, 2·beam)
        best = np.take_along_axis(flat, order, axis=1)
        source_row = np.full((inputs, beam), -1)
        source_row[row_input, slot] = np.arange(len(row_input))
        parent = source_row[np.arange(inputs)[:, None], order // width]  # (inputs, 2·beam) row index or -1
        safe_parent = np.where(parent >= 0, parent, 0)
        token = order % width if candidate_ids is None else candidate_ids[safe_parent, order % width]
        valid = np.isfinite(best) & (parent >= 0)
        is_eos = token == eos_id
        # Visit candidates best first until `beam` non-eos survivors: a candidate counts if fewer than `beam`
        # non-eos candidates come before it.
        non_eos = valid & ~is_eos
        before = np.cumsum(non_eos, axis=1) - non_eos
        visited = valid & (before < beam)
        parent_length = rows.lengths[safe_parent]
        at_limit = parent_length + 1 >= rows.max_lengths[safe_parent]
        ends = visited & is_eos
        stops = visited & ~is_eos & at_limit
        grows = visited & ~is_eos & ~at_limit
        active_inputs = np.zeros(inputs, dtype=bool)
        active_inputs[row_input] = True
        for index, position in zip(*np.nonzero(ends | stops), strict=True):
            if not active_inputs[index]:
                continue
            row = parent[index, position]
            ids = rows.ids[row, : rows.lengths[row]].tolist()
            trace = attention[row] + [np.array(weights[row])] if collect_attention and weights is not None else []
            if ends[index, position]:
                finished[index].append(Candidate(ids, float(best[index, position]), True, trace))
                done_count[index] += 1
            else:
                finished[index].append(
                    Candidate(ids + [int(token[index, position])], float(best[index, position]), False, trace)
                )
        grows &= (done_count < beam)[:, None] & active_inputs[:, None]
        child_input, child_position = np.nonzero(grows)
        if child_input.size == 0:
            break
        parents = parent[child_input, child_position]
        runner.select(parents)
        new_tokens = token[child_input, child_position]
        rows = rows.take(parents)
        rows.ids[np.arange(len(parents)), rows.lengths] = new_tokens
        rows.lengths += 1
        rows.scores = best[child_input, child_position].astype(np.float64)
        if collect_attention and weights is not None:
            attention = [attention[p] + [np.array(weights[p])] for p in parents]
        else:
            attention = [[] for _ in parents]
        row_input, previous = child_input, new_tokens.astype(np.int64)
        yield StepEvent(row_input, new_tokens, rows.scores, np.zeros(len(new_tokens), dtype=bool))
    lengths: list[int | None] = list(source_lengths) if source_lengths else [None] * inputs
    return [ranked(f, options, length)[: options.num_hypotheses] for f, length in zip(finished, lengths, strict=True)]
