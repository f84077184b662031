"""Search over a decoder step function: greedy, sampling and beam search, with constraints and forced prefixes.

The step function is whatever the model provides (onnxruntime sessions behind role-keyed dicts); the search only sees
numpy arrays, so it is tested without any graph. Rows that finish are dropped from the states and statics (beam
search also gathers them to follow the surviving beams), so finished rows, beams and inputs stop costing compute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .config import GenerationOptions

# (previous_ids (rows,), states, statics) → (log_probs (rows, vocab), new states, attention (rows, src_len) or None)
StepFunction = Callable[[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]],
                        tuple[np.ndarray, dict[str, np.ndarray], "np.ndarray | None"]]


@dataclass
class Candidate:
    """One hypothesis under construction or finished."""

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


def take_rows(values: dict[str, np.ndarray], rows: np.ndarray, batch_axes: dict[str, int]) -> dict[str, np.ndarray]:
    """Keep (or repeat, or reorder) `rows` of every tensor along its own batch axis."""
    return {role: np.take(value, rows, axis=batch_axes[role]) for role, value in values.items()}


def normalized_score(candidate: Candidate, options: GenerationOptions) -> float:
    """Score used to rank finished hypotheses: score / length^α ("power"; α = 0 none, α = 1 average) or the GNMT
    penalty score / ((5 + length) / 6)^α, where length counts the scored steps (eos included)."""
    alpha, length = options.length_penalty, max(candidate.steps(), 1)
    if options.length_normalization == "gnmt":
        return candidate.score / ((5 + length) / 6) ** alpha
    return candidate.score / length ** alpha


def constrain(log_probs: np.ndarray, histories: list[list[int]], limits: list[RowLimits], options: GenerationOptions,
              eos_id: int, suppressed: np.ndarray) -> np.ndarray:
    """Apply repetition_penalty, suppress_tokens, min_length and no_repeat_ngram_size to a copy of (rows, vocab)
    log-probs. Banned tokens get -inf; a row left with nothing allowed may still end (eos)."""
    if not options.has_constraints and not suppressed.size and all(lim.min_length == 0 for lim in limits):
        return log_probs
    out = log_probs.astype(np.float64)  # (rows, vocab)
    if options.repetition_penalty != 1.0:
        for row, history in enumerate(histories):
            if history:
                seen = np.unique(history)
                out[row, seen] *= options.repetition_penalty  # log-probs are ≤ 0: a penalty > 1 lowers them
        out -= np.logaddexp.reduce(out, axis=1, keepdims=True)  # renormalize
    if suppressed.size:
        out[:, suppressed] = -np.inf
    n = options.no_repeat_ngram_size
    for row, history in enumerate(histories):
        if len(history) < limits[row].min_length:
            out[row, eos_id] = -np.inf
        if n and len(history) >= n - 1:
            tail = history[len(history) - n + 1:] if n > 1 else []
            banned = [history[i + n - 1] for i in range(len(history) - n + 1) if history[i:i + n - 1] == tail]
            out[row, banned] = -np.inf
        if not np.isfinite(out[row]).any():
            out[row, eos_id] = log_probs[row, eos_id]
    return out


def sampling_distribution(log_probs: np.ndarray, options: GenerationOptions) -> np.ndarray:
    """Probabilities (rows, vocab) after temperature, top-k and top-p (nucleus) filtering."""
    scaled = log_probs / (options.temperature or 1.0)
    top_k, top_p = options.top_k, options.top_p if options.top_p is not None else 1.0
    if top_k and top_k < scaled.shape[1]:
        kth = -np.partition(-scaled, top_k - 1, axis=1)[:, top_k - 1:top_k]  # (rows, 1): the k-th largest
        scaled = np.where(scaled >= kth, scaled, -np.inf)
    probs = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    if top_p < 1.0:
        order = np.argsort(-probs, axis=1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=1)
        before = np.cumsum(sorted_probs, axis=1) - sorted_probs  # mass of strictly more likely tokens
        keep_sorted = before < top_p  # the smallest set whose mass reaches top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=1, keepdims=True)
    return probs


def choose(processed: np.ndarray, raw: np.ndarray, histories: list[list[int]], limits: list[RowLimits],
           options: GenerationOptions, rngs: list[np.random.Generator] | None) -> tuple[np.ndarray, np.ndarray]:
    """Next token per row (forced prefix, sample or argmax) and the log-prob it scores."""
    if rngs is None:
        chosen = processed.argmax(axis=1)
    else:
        probs = sampling_distribution(processed, options)
        cumulative = np.cumsum(probs, axis=1)  # (rows, vocab)
        draws = np.array([rng.random() for rng in rngs])[:, None] * cumulative[:, -1:]
        chosen = np.minimum((cumulative <= draws).sum(axis=1), probs.shape[1] - 1)
        chosen = np.where(probs[np.arange(len(chosen)), chosen] > 0, chosen, probs.argmax(axis=1))
    scores = processed[np.arange(len(chosen)), chosen]
    for row, history in enumerate(histories):
        prefix = limits[row].prefix
        if len(history) < len(prefix):  # forced: scored by the model's own log-prob
            chosen[row] = prefix[len(history)]
            scores[row] = raw[row, chosen[row]]
    return chosen, scores


def sample_search(step: StepFunction, states: dict[str, np.ndarray], statics: dict[str, np.ndarray],
                  batch_axes: dict[str, int], *, start_id: int, eos_id: int, limits: list[RowLimits],
                  options: GenerationOptions, rngs: list[np.random.Generator] | None = None,
                  suppressed: np.ndarray = np.zeros(0, dtype=np.int64), collect_attention: bool = False
                  ) -> Iterator[tuple[int, Candidate]]:
    """Greedy (rngs=None) or sampled decoding of every row. Yields (row, candidate) after each token a row gets, so
    callers can stream; a candidate is complete when `finished` is set or it reached its max length.

    Example:
        >>> def step(previous, states, statics):  # prefers token 2 for two steps, then eos (0)
        ...     t = states["state.t"] + 1
        ...     log_probs = np.log(np.where(t[:, None] > 2, [[0.9, 0.05, 0.05]], [[0.1, 0.1, 0.8]]))
        ...     return log_probs, {"state.t": t}, None
        >>> rows = list(sample_search(step, {"state.t": np.zeros(1)}, {}, {"state.t": 0}, start_id=1, eos_id=0,
        ...                           limits=[RowLimits((), 0, 5)], options=GenerationOptions()))
        >>> rows[-1][1].ids, rows[-1][1].finished
        ([2, 2], True)
    """
    candidates = [Candidate([]) for _ in limits]
    active = np.arange(len(limits))  # original row of each row still decoding
    previous = np.full(len(limits), start_id, dtype=np.int64)
    while active.size:
        raw, states, attention = step(previous, states, statics)  # (active, vocab)
        histories = [candidates[row].ids for row in active]
        active_limits = [limits[row] for row in active]
        processed = constrain(raw, histories, active_limits, options, eos_id, suppressed)
        chosen, scores = choose(processed, raw, histories, active_limits, options,
                                None if rngs is None else [rngs[row] for row in active])
        keep = np.ones(active.size, dtype=bool)
        for position, row in enumerate(active):
            candidate = candidates[row]
            candidate.score += float(scores[position])
            if collect_attention and attention is not None:
                candidate.attention.append(attention[position])
            if chosen[position] == eos_id and len(candidate.ids) >= len(limits[row].prefix):
                candidate.finished, keep[position] = True, False
            else:
                candidate.ids.append(int(chosen[position]))
                keep[position] = len(candidate.ids) < limits[row].max_length
            yield int(row), candidate
        if not keep.all():
            kept = np.flatnonzero(keep)
            states, statics = take_rows(states, kept, batch_axes), take_rows(statics, kept, batch_axes)
            active, chosen = active[kept], chosen[kept]
        previous = chosen.astype(np.int64)


def beam_search(step: StepFunction, states: dict[str, np.ndarray], statics: dict[str, np.ndarray],
                batch_axes: dict[str, int], *, start_id: int, eos_id: int, limits: list[RowLimits],
                options: GenerationOptions, suppressed: np.ndarray = np.zeros(0, dtype=np.int64),
                collect_attention: bool = False) -> list[list[Candidate]]:
    """Beam search; returns each input's n-best (num_hypotheses candidates, best first by normalized score).

    Stopping rule: an input stops once beam_size hypotheses have ended with eos, or when its beams reach its max
    length (the unfinished beams then compete with the finished hypotheses). Each step, every live beam is extended by
    every token; the 2 × beam_size best extensions by summed log-prob are visited best first: an eos extension
    becomes a finished hypothesis, any other extension a live beam, until beam_size live beams are found.
    """
    beam = options.beam
    inputs = len(limits)
    # Each input starts with one live beam; rows are (input, beam) pairs, states gathered to follow them.
    row_input = np.arange(inputs)
    states, statics = take_rows(states, row_input, batch_axes), take_rows(statics, row_input, batch_axes)
    live: list[Candidate] = [Candidate([]) for _ in range(inputs)]
    finished: list[list[Candidate]] = [[] for _ in range(inputs)]
    previous = np.full(inputs, start_id, dtype=np.int64)
    while live:
        raw, states, attention = step(previous, states, statics)  # (rows, vocab)
        row_limits = [limits[i] for i in row_input]
        processed = constrain(raw, [c.ids for c in live], row_limits, options, eos_id, suppressed)
        for row, candidate in enumerate(live):  # forced prefix: a single allowed token, scored by the model
            prefix = row_limits[row].prefix
            if len(candidate.ids) < len(prefix):
                token = prefix[len(candidate.ids)]
                forced = np.full(processed.shape[1], -np.inf)
                forced[token] = raw[row, token]
                processed[row] = forced
        totals = np.array([c.score for c in live])[:, None] + processed  # (rows, vocab)
        next_rows, next_live, next_tokens = [], [], []
        for index in range(inputs):
            rows = np.flatnonzero(row_input == index)
            if rows.size == 0:
                continue
            flat = totals[rows].ravel()
            best = np.argsort(-flat, kind="stable")[:2 * beam]
            survivors = 0
            for position in best:
                total = flat[position]
                if not np.isfinite(total):
                    break
                row, token = rows[position // totals.shape[1]], int(position % totals.shape[1])
                parent = live[row]
                trace = parent.attention + [attention[row]] if collect_attention and attention is not None else []
                if token == eos_id:
                    finished[index].append(Candidate(list(parent.ids), float(total), True, trace))
                    continue
                child = Candidate(parent.ids + [token], float(total), False, trace)
                if len(child.ids) >= limits[index].max_length:
                    finished[index].append(child)  # length limit reached: competes unfinished
                else:
                    next_rows.append(row)
                    next_live.append(child)
                    next_tokens.append(token)
                survivors += 1
                if survivors == beam:
                    break
            if len([c for c in finished[index] if c.finished]) >= beam:
                drop = [i for i, r in enumerate(next_rows) if row_input[r] == index]
                for i in reversed(drop):
                    del next_rows[i], next_live[i], next_tokens[i]
        if not next_rows:
            break
        gather = np.array(next_rows)
        states, statics = take_rows(states, gather, batch_axes), take_rows(statics, gather, batch_axes)
        row_input, live, previous = row_input[gather], next_live, np.array(next_tokens, dtype=np.int64)
    return [sorted(f, key=lambda c: -normalized_score(c, options))[:options.num_hypotheses] for f in finished]
