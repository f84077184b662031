"""Search over a decoder: greedy, sampling and beam search, with constraints and forced prefixes.

The search sees the decoder only through a DecoderRunner — `step(previous_ids)` advances every live row by one token
and `select(rows)` keeps, reorders or repeats rows of the cached states — so it is tested with fake runners and knows
nothing of sessions or buffers. Rows that finish are dropped with `select`, so finished rows, beams and inputs stop
costing compute; beam search also uses it to make the cached states follow the surviving beams. Bookkeeping is
vectorized over rows, so large batches do not pay Python per row and step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .config import GenerationOptions


Stop = Callable[[], bool]  # asked between steps: True ends the search with DecodingStopped


class DecodingStopped(Exception):
    """A search was stopped between two steps because its `stop` callable said so (a deadline passed, every caller
    went away, or the service is shutting down); the caller decides what to answer."""


def check_stop(stop: Stop | None) -> None:
    if stop is not None and stop():
        raise DecodingStopped()


class DecoderRunner(Protocol):
    """The decoder as the search drives it (implementation: s2s_runtime.runner.StepRunner)."""

    selects: bool  # whether greedy_step is available (the graph chooses the next token itself)
    top_k: int     # how many candidates per row top_k_step returns (0: not available)

    def step(self, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """previous_ids (rows,) → log-probs (rows, vocab) and attention (rows, source_length) or None."""

    def greedy_step(self, previous_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One step choosing the argmax in the graph → (next ids, their log-probs); None continues the chain."""

    def top_k_step(self, previous_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Like step, but only each row's top_k best log-probs and their ids, both (rows, top_k) and best first
        (equal values: lower id first), and the attention or None."""

    def select(self, rows: np.ndarray) -> None:
        """Keep only `rows` (indices into the current rows; may reorder or repeat) of every cached tensor."""


@dataclass
class Candidate:
    """One finished (or length-limited) hypothesis."""

    ids: list[int]                  # output ids, eos excluded (forced prefix included)
    score: float = 0.0              # sum of the chosen tokens' log-probs (and of eos when emitted)
    finished: bool = False          # ended with eos (False: stopped by the length limit)
    attention: list[np.ndarray] = field(default_factory=list)  # one (src_len,) row per step, if collected

    def steps(self) -> int:
        return len(self.ids) + int(self.finished)


@dataclass(frozen=True)
class RowLimits:
    """Per-input decoding bounds: a forced prefix and the length limits (counted in output tokens, eos excluded)."""

    prefix: tuple[int, ...]
    min_length: int
    max_length: int


@dataclass
class Rows:
    """Per-row state of a search, in arrays indexed by row: output ids so far, lengths, scores, limits."""

    ids: np.ndarray         # (rows, max_length) int64
    lengths: np.ndarray     # (rows,)
    scores: np.ndarray      # (rows,) float64
    prefix: np.ndarray      # (rows, longest prefix) int64
    prefix_lengths: np.ndarray
    min_lengths: np.ndarray
    max_lengths: np.ndarray

    @classmethod
    def start(cls, limits: list[RowLimits]) -> "Rows":
        count = len(limits)
        longest_prefix = max((len(lim.prefix) for lim in limits), default=0)
        prefix = np.zeros((count, max(longest_prefix, 1)), dtype=np.int64)
        for row, lim in enumerate(limits):
            prefix[row, :len(lim.prefix)] = lim.prefix
        return cls(np.zeros((count, max(lim.max_length for lim in limits) + 1), dtype=np.int64),
                   np.zeros(count, dtype=np.int64), np.zeros(count), prefix,
                   np.array([len(lim.prefix) for lim in limits]), np.array([lim.min_length for lim in limits]),
                   np.array([lim.max_length for lim in limits]))

    def take(self, rows: np.ndarray) -> "Rows":
        return Rows(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))

    def histories(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.ids, self.lengths)]


def normalized_score(candidate: Candidate, options: GenerationOptions) -> float:
    """Score used to rank hypotheses: score / length^α ("power"; α = 0 none, α = 1 average) or the GNMT penalty
    score / ((5 + length) / 6)^α, where length counts the scored steps (eos included)."""
    alpha, length = options.length_penalty, max(candidate.steps(), 1)
    if options.length_normalization == "gnmt":
        return candidate.score / ((5 + length) / 6) ** alpha
    return candidate.score / length ** alpha


def constrain(log_probs: np.ndarray, rows: Rows, options: GenerationOptions, eos_id: int, suppressed: np.ndarray
              ) -> np.ndarray:
    """Apply repetition_penalty, suppress_tokens, min_length and no_repeat_ngram_size to (rows, vocab) log-probs
    (a copy when anything applies). Banned tokens get -inf; a row left with nothing allowed may still end (eos)."""
    too_short = rows.lengths < rows.min_lengths
    if not options.has_constraints and not suppressed.size and not too_short.any():
        return log_probs
    out = log_probs.astype(np.float64)  # (rows, vocab)
    if options.repetition_penalty != 1.0:
        for row, history in enumerate(rows.histories()):
            if history:
                out[row, np.unique(history)] *= options.repetition_penalty  # log-probs ≤ 0: a penalty > 1 lowers
        out -= np.logaddexp.reduce(out, axis=1, keepdims=True)  # renormalize
    if suppressed.size:
        out[:, suppressed] = -np.inf
    out[too_short, eos_id] = -np.inf
    n = options.no_repeat_ngram_size
    if n:
        for row, history in enumerate(rows.histories()):
            if len(history) >= n - 1:
                tail = history[len(history) - n + 1:] if n > 1 else []
                banned = [history[i + n - 1] for i in range(len(history) - n + 1) if history[i:i + n - 1] == tail]
                out[row, banned] = -np.inf
    stuck = ~np.isfinite(out).any(axis=1)
    out[stuck, eos_id] = log_probs[stuck, eos_id]
    return out


def sampling_distribution(log_probs: np.ndarray, options: GenerationOptions) -> np.ndarray:
    """Probabilities (rows, vocab) after temperature, top-k and top-p (nucleus) filtering, in float64 log space.

    Each row's best token is moved to log-prob 0 before the temperature divides anything, so it keeps probability
    mass whatever the temperature (1e-45 sends every other token to -inf, never the whole row to NaN), and the
    nucleus always holds it (an empty nucleus is impossible even at top_p = 1e-50)."""
    scaled = log_probs.astype(np.float64)  # (rows, vocab)
    scaled -= scaled.max(axis=1, keepdims=True)  # best token at 0; banned tokens stay -inf
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        scaled /= options.temperature or 1.0
    top_k, top_p = options.top_k, options.top_p if options.top_p is not None else 1.0
    if top_k and top_k < scaled.shape[1]:
        kth = -np.partition(-scaled, top_k - 1, axis=1)[:, top_k - 1:top_k]  # (rows, 1): the k-th largest
        scaled = np.where(scaled >= kth, scaled, -np.inf)
    probs = np.exp(scaled)  # the best token is exp(0) = 1, so every row sums to ≥ 1
    probs /= probs.sum(axis=1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-probs, axis=1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=1)
        before = np.cumsum(sorted_probs, axis=1) - sorted_probs  # mass of strictly more likely tokens
        keep = np.zeros_like(before, dtype=bool)
        np.put_along_axis(keep, order, before < top_p, axis=1)  # the smallest set whose mass reaches top_p
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=1, keepdims=True)
    return probs


def forced_tokens(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
    """Which rows are still inside their forced prefix, and the token each such row must take."""
    forced = rows.lengths < rows.prefix_lengths
    position = np.minimum(rows.lengths, rows.prefix.shape[1] - 1)
    return forced, rows.prefix[np.arange(len(position)), position]


def choose(processed: np.ndarray, raw: np.ndarray, rows: Rows | None, options: GenerationOptions,
           rngs: list[np.random.Generator] | None) -> tuple[np.ndarray, np.ndarray]:
    """Next token per row (forced prefix when `rows` has one, sample or argmax) and the log-prob it scores."""
    if rngs is None:
        chosen = processed.argmax(axis=1)
    else:
        probs = sampling_distribution(processed, options)
        cumulative = np.cumsum(probs, axis=1)  # (rows, vocab)
        draws = np.array([rng.random() for rng in rngs])[:, None] * cumulative[:, -1:]
        chosen = np.minimum((cumulative <= draws).sum(axis=1), probs.shape[1] - 1)
        chosen = np.where(probs[np.arange(len(chosen)), chosen] > 0, chosen, probs.argmax(axis=1))
    index = np.arange(len(chosen))
    if rows is None:
        return chosen, processed[index, chosen]
    forced, prefix_token = forced_tokens(rows)
    chosen = np.where(forced, prefix_token, chosen)
    return chosen, np.where(forced, raw[index, chosen], processed[index, chosen])  # forced: the model's log-prob


@dataclass
class StepEvent:
    """What one step of sample_search produced, for streaming: the rows (original indices) that got a token."""

    rows: np.ndarray
    tokens: np.ndarray
    log_probs: np.ndarray
    ended: np.ndarray  # this token was eos


def sample_search(runner: DecoderRunner, *, start_id: int, eos_id: int, limits: list[RowLimits],
                  options: GenerationOptions, rngs: list[np.random.Generator] | None = None,
                  suppressed: np.ndarray = np.zeros(0, dtype=np.int64), collect_attention: bool = False,
                  stop: Stop | None = None) -> Iterator[StepEvent]:
    """Greedy (rngs=None) or sampled decoding of every row: a generator of StepEvents whose return value (the
    StopIteration value; see `run_sample_search`) is one Candidate per row. `stop` is asked before every step."""
    state = Rows.start(limits)
    attention: list[list[np.ndarray]] = [[] for _ in limits]
    finished = np.zeros(len(limits), dtype=bool)
    active = np.arange(len(limits))  # original row of each row in the runner (some may be done, see below)
    done = np.zeros(len(limits), dtype=bool)  # per runner row: finished, still computed until the next compaction
    previous = np.full(len(limits), start_id, dtype=np.int64)
    # Without constraints or prefixes the per-row bookkeeping is skipped: the common case stays lean.
    has_prefix = bool(state.prefix_lengths.any())
    constrained = options.has_constraints or bool(suppressed.size) or bool(state.min_lengths.any())
    in_graph = rngs is None and chooses_in_graph(runner.selects, limits, options, suppressed, collect_attention)
    chain, some_done = previous, False
    while active.size:
        check_stop(stop)
        live = np.flatnonzero(~done) if some_done else None
        if in_graph:
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
            rows = state.take(live_rows) if constrained or has_prefix else None
            processed = constrain(raw, rows, options, eos_id, suppressed) if constrained else raw
            chosen, scores = choose(processed, raw, rows if has_prefix else None, options,
                                    None if rngs is None else [rngs[r] for r in live_rows])
        state.scores[live_rows] += scores
        if collect_attention and weights is not None:
            for position, row in enumerate(live_rows):
                attention[row].append(np.array(weights[position]))  # the runner may reuse its buffer
        ended = chosen == eos_id
        if has_prefix:
            ended &= rows.lengths >= rows.prefix_lengths
        finished[live_rows[ended]] = True
        growing = live_rows[~ended]
        state.ids[growing, state.lengths[growing]] = chosen[~ended]
        state.lengths[growing] += 1
        yield StepEvent(live_rows, chosen, scores, ended)
        stopped = ended | (state.lengths[live_rows] >= state.max_lengths[live_rows])
        if some_done:
            done[live[stopped]] = True
            previous = np.full(active.size, eos_id, dtype=np.int64)  # done rows are fed anything; outputs ignored
            previous[live] = chosen
        else:
            done |= stopped
            previous = chosen
        # Compaction re-lays the runner's buffers, which costs about as much as a few steps of a small model:
        # drop finished rows once they are a quarter of the batch, not one at a time.
        finished_in_runner = int(done.sum())
        if finished_in_runner == active.size:
            break
        some_done = finished_in_runner > 0
        if finished_in_runner * 4 >= active.size:
            kept = np.flatnonzero(~done)
            runner.select(kept)
            active, previous, done, some_done = active[kept], previous[kept], done[kept], False
    return [Candidate(state.ids[row, :state.lengths[row]].tolist(), float(state.scores[row]), bool(finished[row]),
                      attention[row]) for row in range(len(limits))]


def needs_full_log_probs(limits: list[RowLimits], options: GenerationOptions, suppressed: np.ndarray) -> bool:
    """Whether the search must see every token's log-prob: constraints, suppressed tokens, min lengths and forced
    prefixes rewrite or override them, so the graph's own choice or top candidates would not do."""
    return bool(options.has_constraints or suppressed.size or any(lim.min_length or lim.prefix for lim in limits))


def chooses_in_graph(selects: bool, limits: list[RowLimits], options: GenerationOptions, suppressed: np.ndarray,
                     collect_attention: bool) -> bool:
    """Whether greedy decoding can let the graph choose each token: only (rows,) ids and log-probs leave it, and the
    ids chain from one step to the next inside the runner's bound buffers. Not when the search needs the full
    log-probs, nor with attention. `selects`: the step graph outputs its choice."""
    return selects and not (collect_attention or needs_full_log_probs(limits, options, suppressed))


def greedy_in_graph(runner: DecoderRunner, *, start_id: int, eos_id: int, limits: list[RowLimits],
                    stop: Stop | None = None) -> list[Candidate]:
    """Greedy decoding where chooses_in_graph allows it, without streaming: the result of sample_search with
    rngs=None, for less Python per step — each step only records the chosen ids and log-probs; lengths, stops and
    scores are worked out once at the end."""
    if len(limits) == 1:
        return [_greedy_one_row(runner, start_id, eos_id, limits[0].max_length, stop)]
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
        check_stop(stop)
        chosen, scores = runner.greedy_step(previous)  # (runner rows,) each, valid until the next step
        previous = None  # from now on the runner chains the ids it chose itself
        if active is None:
            ids[step], log_probs[step] = chosen, scores
        else:
            ids[step, active], log_probs[step, active] = chosen, scores
        ended |= np.equal(chosen, eos_id, out=chose_eos)
        if step + 1 >= first_expiry:
            ended |= expires <= step + 1
        finished_in_runner = int(np.count_nonzero(ended))
        if finished_in_runner == ended.size:
            break
        if finished_in_runner * 4 >= ended.size:  # compaction, as in sample_search
            kept = np.flatnonzero(~ended)
            runner.select(kept)
            active = kept if active is None else active[kept]
            expires, ended, chose_eos = expires[kept], ended[kept], chose_eos[kept]
            first_expiry = int(expires.min())
    steps = np.arange(step + 1)[:, None]  # (steps, 1)
    is_eos = (ids[:step + 1] == eos_id) & (steps < max_lengths)  # (steps, rows): eos within each row's limit
    finished = is_eos.any(axis=0)
    lengths = np.where(finished, is_eos.argmax(axis=0), max_lengths)  # tokens before eos, or up to the limit
    totals = np.cumsum(log_probs[:step + 1], axis=0)[np.where(finished, lengths, lengths - 1), np.arange(count)]
    per_row = ids[:step + 1].T.tolist()  # plain lists, sliced below: cheaper than a numpy slice per row
    return [Candidate(row_ids[:length], total, done)
            for row_ids, length, total, done in zip(per_row, lengths.tolist(), totals.tolist(), finished.tolist())]


def _greedy_one_row(runner: DecoderRunner, start_id: int, eos_id: int, max_length: int, stop: Stop | None
                    ) -> Candidate:
    """greedy_in_graph for a single input (a service's common case), in plain Python scalars: at batch 1 the
    array bookkeeping would cost as much as the step itself."""
    ids: list[int] = []
    score = 0.0
    check_stop(stop)
    chosen, log_probs = runner.greedy_step(np.array([start_id], dtype=np.int64))  # (1,) each
    while True:
        score += float(log_probs[0])
        token = int(chosen[0])
        if token == eos_id:
            return Candidate(ids, score, True)
        ids.append(token)
        if len(ids) >= max_length:
            return Candidate(ids, score, False)
        check_stop(stop)
        chosen, log_probs = runner.greedy_step()


def run_sample_search(search: Iterator[StepEvent]) -> list[Candidate]:
    """Run a sample_search generator to the end and return its candidates."""
    while True:
        try:
            next(search)
        except StopIteration as done:
            return done.value


def beam_search(runner: DecoderRunner, *, start_id: int, eos_id: int, limits: list[RowLimits],
                options: GenerationOptions, suppressed: np.ndarray = np.zeros(0, dtype=np.int64),
                collect_attention: bool = False, stop: Stop | None = None) -> list[list[Candidate]]:
    """Beam search; returns each input's n-best (num_hypotheses candidates, best first by normalized score). The
    runner holds each input `options.beam` times, input-major (rows 0..beam-1 are input 0, and so on).

    Stopping rule: an input stops once beam_size hypotheses have ended with eos, or when its beams reach its max
    length (the unfinished beams then compete with the finished hypotheses). Each step, every live beam is extended by
    every token; the 2 × beam_size best extensions by summed log-prob (ties: earlier beam, then lower id) are visited
    best first: an eos extension becomes a finished hypothesis, any other extension a live beam, until beam_size live
    beams are found. Only each beam's own 2 × beam_size best tokens can be among those, so when the runner ranks at
    least that many in the graph (runner.top_k) and nothing needs the full log-probs, only those candidates leave the
    graph.
    """
    beam, inputs = options.beam, len(limits)
    finished: list[list[Candidate]] = [[] for _ in range(inputs)]
    done_count = np.zeros(inputs, dtype=np.int64)
    # Live rows: (input, beam) pairs, input-major; row bookkeeping follows `select`. The runner starts with every
    # input `beam` times, of which only the first is live (the copies score -inf and are never extended), so the row
    # count — and with it the runner's bound buffers — stays the same from the first step on.
    row_input = np.repeat(np.arange(inputs), beam)
    rows = Rows.start([lim for lim in limits for _ in range(beam)])
    rows.scores[np.arange(row_input.size) % beam != 0] = -np.inf
    attention: list[list[np.ndarray]] = [[] for _ in row_input]
    previous = np.full(row_input.size, start_id, dtype=np.int64)
    ranked_in_graph = runner.top_k >= 2 * beam and not needs_full_log_probs(limits, options, suppressed)
    while row_input.size:
        check_stop(stop)
        if ranked_in_graph:  # each row's best candidates, (rows, top_k): `candidate_ids` maps them to tokens
            processed, candidate_ids, weights = runner.top_k_step(previous)
        else:
            raw, weights = runner.step(previous)  # (rows, vocab)
            processed, candidate_ids = constrain(raw, rows, options, eos_id, suppressed), None
            forced, prefix_token = forced_tokens(rows)
            if forced.any():  # inside a forced prefix a row has one allowed token, scored by the model
                only = np.full((int(forced.sum()), raw.shape[1]), -np.inf)
                only[np.arange(len(only)), prefix_token[forced]] = raw[forced, prefix_token[forced]]
                processed = processed.astype(np.float64, copy=True)
                processed[forced] = only
        width = processed.shape[1]
        totals = rows.scores[:, None] + processed  # (rows, width)
        # Lay rows out as (input, beam slot, candidate) so each input's candidates are one flat, ordered row.
        slot = np.arange(len(row_input)) - np.searchsorted(row_input, row_input)  # rank among its input's rows
        grid = np.full((inputs, beam, width), -np.inf)
        grid[row_input, slot] = totals
        flat = grid.reshape(inputs, beam * width)
        order = np.argsort(-flat, axis=1, kind="stable")[:, :2 * beam]  # (inputs, 2·beam)
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
        for index, position in zip(*np.nonzero(ends | stops)):
            if not active_inputs[index]:
                continue
            row = parent[index, position]
            ids = rows.ids[row, :rows.lengths[row]].tolist()
            trace = attention[row] + [np.array(weights[row])] if collect_attention and weights is not None else []
            if ends[index, position]:
                finished[index].append(Candidate(ids, float(best[index, position]), True, trace))
                done_count[index] += 1
            else:
                finished[index].append(Candidate(ids + [int(token[index, position])], float(best[index, position]),
                                                 False, trace))
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
    return [sorted(f, key=lambda c: -normalized_score(c, options))[:options.num_hypotheses] for f in finished]
