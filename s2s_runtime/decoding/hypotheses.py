"""What a search works with: per-input limits, per-row bookkeeping and the hypotheses it produces."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Candidate:
    """One finished (or length-limited) hypothesis."""

    ids: list[int]  # output ids, eos excluded (forced prefix included)
    score: float = 0.0  # sum of the chosen tokens' log-probs (and of eos when emitted)
    finished: bool = False  # ended with eos (False: stopped by the length limit)
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

    ids: np.ndarray  # (rows, max_length) int64
    lengths: np.ndarray  # (rows,)
    scores: np.ndarray  # (rows,) float64
    prefix: np.ndarray  # (rows, longest prefix) int64
    prefix_lengths: np.ndarray
    min_lengths: np.ndarray
    max_lengths: np.ndarray

    @classmethod
    def start(cls, limits: list[RowLimits]) -> Rows:
        count = len(limits)
        longest_prefix = max((len(lim.prefix) for lim in limits), default=0)
        prefix = np.zeros((count, max(longest_prefix, 1)), dtype=np.int64)
        for row, lim in enumerate(limits):
            prefix[row, : len(lim.prefix)] = lim.prefix
        return cls(
            np.zeros((count, max(lim.max_length for lim in limits) + 1), dtype=np.int64),
            np.zeros(count, dtype=np.int64),
            np.zeros(count),
            prefix,
            np.array([len(lim.prefix) for lim in limits]),
            np.array([lim.min_length for lim in limits]),
            np.array([lim.max_length for lim in limits]),
        )

    def take(self, rows: np.ndarray) -> Rows:
        return Rows(*(getattr(self, f)[rows] for f in self.__dataclass_fields__))

    def histories(self) -> list[list[int]]:
        return [row[:n].tolist() for row, n in zip(self.ids, self.lengths, strict=True)]

    def forced(self) -> tuple[np.ndarray, np.ndarray]:
        """Which rows are still inside their forced prefix, and the token each such row must take."""
        forced = self.lengths < self.prefix_lengths
        position = np.minimum(self.lengths, self.prefix.shape[1] - 1)
        return forced, self.prefix[np.arange(len(position)), position]


@dataclass
class StepEvent:
    """What one decoder step produced: the rows (original indices) that got a token, the tokens, their log-probs
    (beam search: the beams' running scores) and whether the token ended the row (eos)."""

    rows: np.ndarray
    tokens: np.ndarray
    log_probs: np.ndarray
    ended: np.ndarray
