"""Logits processors: each one rule that rewrites a step's log-probs before a strategy chooses from them.

A strategy asks its Processors for the log-probs to choose from. With no rule active at a step the model's own
log-probs come back untouched (no copy); otherwise a float64 copy goes through each active rule in order —
repetition penalty, suppressed tokens, min length, no-repeat n-grams — then a row those left with nothing allowed
may still end (eos), and last a row inside its forced target prefix has exactly one allowed token, scored by the
model. Because
they rewrite or override log-probs, any active rule means the search needs the full log-probs of every row: neither
the graph's own greedy choice nor its ranked candidates would do. A new constraint is one class here and one line
in `processors_for`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import GenerationOptions
from .hypotheses import RowLimits, Rows


class LogitsProcessor:
    """One rule over (rows, vocab) float64 log-probs, applied in place. `raw` is the model's own log-probs."""

    def active(self, rows: Rows) -> bool:
        """Whether the rule changes anything at this step (inactive rules cost nothing)."""
        return True

    def __call__(self, log_probs: np.ndarray, raw: np.ndarray, rows: Rows) -> None:
        raise NotImplementedError


class RepetitionPenalty(LogitsProcessor):
    """Log-probs of tokens already in a row's output are multiplied by the penalty (> 1 lowers them: log-probs are
    ≤ 0), then every row is renormalized."""

    def __init__(self, penalty: float):
        self.penalty = penalty

    def __call__(self, log_probs: np.ndarray, raw: np.ndarray, rows: Rows) -> None:
        for row, history in enumerate(rows.histories()):
            if history:
                log_probs[row, np.unique(history)] *= self.penalty
        log_probs -= np.logaddexp.reduce(log_probs, axis=1, keepdims=True)


class SuppressTokens(LogitsProcessor):
    """Tokens never generated."""

    def __init__(self, ids: np.ndarray):
        self.ids = ids

    def __call__(self, log_probs: np.ndarray, raw: np.ndarray, rows: Rows) -> None:
        log_probs[:, self.ids] = -np.inf


class MinLength(LogitsProcessor):
    """No eos before a row has min_length tokens."""

    def __init__(self, eos_id: int):
        self.eos_id = eos_id

    def active(self, rows: Rows) -> bool:
        return bool((rows.lengths < rows.min_lengths).any())

    def __call__(self, log_probs: np.ndarray, raw: np.ndarray, rows: Rows) -> None:
        log_probs[rows.lengths < rows.min_lengths, self.eos_id] = -np.inf


class NoRepeatNgram(LogitsProcessor):
    """No n-gram appears twice in a row's output."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, log_probs: np.ndarray, raw: np.ndarray, rows: Rows) -> None:
        n = self.size
        for row, history in enumerate(rows.histories()):
            if len(history) >= n - 1:
                tail = history[len(history) - n + 1 :] if n > 1 else []
                banned = [history[i + n - 1] for i in range(len(history) - n + 1) if history[i : i + n - 1] == tail]
                log_probs[row, banned] = -np.inf


class EndWhenStuck(LogitsProcessor):
    """A row the rules before left with nothing allowed may still end: its eos gets the model's log-prob back."""

    def __init__(self, eos_id: int):
        self.eos_id = eos_id

    def __call__(self, log_probs: np.ndarray, raw: np.ndarray, rows: Rows) -> None:
        stuck = ~np.isfinite(log_probs).any(axis=1)
        log_probs[stuck, self.eos_id] = raw[stuck, self.eos_id]


class ForcedPrefix(LogitsProcessor):
    """Inside its forced target prefix a row has one allowed token, scored by the model's own log-prob."""

    def active(self, rows: Rows) -> bool:
        return bool((rows.lengths < rows.prefix_lengths).any())

    def __call__(self, log_probs: np.ndarray, raw: np.ndarray, rows: Rows) -> None:
        forced, token = rows.forced()
        only = np.full((int(forced.sum()), log_probs.shape[1]), -np.inf)
        only[np.arange(len(only)), token[forced]] = raw[forced, token[forced]]
        log_probs[forced] = only


class Processors:
    """The rules of one search, in order (see the module docstring): constraints, then (when one of them was active)
    EndWhenStuck, then overrides such as ForcedPrefix."""

    def __init__(self, constraints: Sequence[LogitsProcessor], overrides: Sequence[LogitsProcessor], eos_id: int):
        self.constraints, self.overrides = list(constraints), list(overrides)
        self._stuck = EndWhenStuck(eos_id)

    def __bool__(self) -> bool:
        """Whether any rule exists: then the search needs the full log-probs."""
        return bool(self.constraints or self.overrides)

    def __call__(self, raw: np.ndarray, rows: Rows) -> np.ndarray:
        """The log-probs to choose from: `raw` itself when no rule is active at this step, else a float64 copy
        rewritten by the active rules."""
        constraints = [rule for rule in self.constraints if rule.active(rows)]
        overrides = [rule for rule in self.overrides if rule.active(rows)]
        if not constraints and not overrides:
            return raw
        out = raw.astype(np.float64)  # (rows, vocab)
        for rule in constraints:
            rule(out, raw, rows)
        if constraints:
            self._stuck(out, raw, rows)
        for rule in overrides:
            rule(out, raw, rows)
        return out


def processors_for(
    options: GenerationOptions, suppressed: np.ndarray, eos_id: int, limits: list[RowLimits]
) -> Processors:
    """The rules `options`, the suppressed ids and the inputs' limits call for."""
    rules: list[LogitsProcessor] = []
    if options.repetition_penalty != 1.0:
        rules.append(RepetitionPenalty(options.repetition_penalty))
    if suppressed.size:
        rules.append(SuppressTokens(suppressed))
    if any(lim.min_length for lim in limits):
        rules.append(MinLength(eos_id))
    if options.no_repeat_ngram_size:
        rules.append(NoRepeatNgram(options.no_repeat_ngram_size))
    overrides: list[LogitsProcessor] = [ForcedPrefix()] if any(lim.prefix for lim in limits) else []
    return Processors(rules, overrides, eos_id)
