"""Forced decoding (scoring): each row is fed its given target, then eos, and the log-prob the model gives each of
those tokens is read — the score of a known output, not a search."""

from __future__ import annotations

import numpy as np

from .strategy import DecoderRunner


def forced_log_probs(runner: DecoderRunner, targets: list[list[int]], start_id: int, eos_id: int) -> list[list[float]]:
    """Per row, the log-prob of every target token and then of eos, given the runner's source rows.

    Examples:
        >>> forced_log_probs(runner, [[5, 6]], start_id=1, eos_id=2)  # doctest: +SKIP
        [[-0.1, -0.3, -0.01]]
    """
    steps = max(len(t) for t in targets) + 1
    forced = np.full((len(targets), steps), eos_id, dtype=np.int64)  # (batch, steps): target then eos (and filler)
    for row, target in enumerate(targets):
        forced[row, : len(target)] = target
    previous = np.full(len(targets), start_id, dtype=np.int64)
    chosen = np.zeros((len(targets), steps))
    for t in range(steps):
        log_probs, _ = runner.step(previous)  # (batch, vocab)
        chosen[:, t] = log_probs[np.arange(len(targets)), forced[:, t]]
        previous = forced[:, t]
    return [chosen[row, : len(target) + 1].tolist() for row, target in enumerate(targets)]
