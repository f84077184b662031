"""Random sampling: each of an input's num_hypotheses rows draws its tokens from the model's distribution after
temperature, top-k and top-p (nucleus) filtering.

Each row's random stream depends only on the seed, the input and the sample number, so an input's samples are the
same whatever else is in the batch. The filtering works in float64 log space and always keeps each row's most likely
token: no temperature or nucleus, however small, can leave a row with nothing (or NaN) to draw from.
"""

from __future__ import annotations

import numpy as np

from ..config import GenerationOptions
from .ranking import ranked
from .stepwise import Chooser, stepwise_search
from .strategy import DecoderRunner, Search, SearchTask, Strategy, input_rows, register


@register
class Sampling(Strategy):
    name = "sample"
    own_options = ("temperature", "top_k", "top_p", "seed")
    streamable = True
    random = True

    def rows_per_input(self) -> int:
        return self.options.num_hypotheses

    def search(self, runner: DecoderRunner, task: SearchTask) -> Search:
        copies = self.options.num_hypotheses
        rows = input_rows(len(task.limits), copies)  # the runner holds each input `copies` times
        limits = [task.limits[i] for i in rows]
        rngs = [
            np.random.default_rng(
                np.random.SeedSequence(
                    [task.entropy, row % copies, len(task.sources[i]), *task.sources[i], len(lim.prefix), *lim.prefix]
                )
            )
            for row, (i, lim) in enumerate(zip(rows, limits, strict=True))
        ]
        candidates = yield from stepwise_search(
            runner,
            start_id=task.start_id,
            eos_id=task.eos_id,
            limits=limits,
            processors=task.processors,
            choose=sampler(rngs, self.options),
            collect_attention=task.collect_attention,
        )
        return [
            ranked([c for (c,) in candidates[i * copies : (i + 1) * copies]], self.options, len(task.sources[i]))
            for i in range(len(task.limits))
        ]


def sampler(rngs: list[np.random.Generator], options: GenerationOptions) -> Chooser:
    """A stepwise chooser drawing each row's token with its own random stream."""

    def choose(processed: np.ndarray, live_rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        probs = sampling_distribution(processed, options)
        cumulative = np.cumsum(probs, axis=1)  # (rows, vocab)
        draws = np.array([rngs[r].random() for r in live_rows])[:, None] * cumulative[:, -1:]
        chosen = np.minimum((cumulative <= draws).sum(axis=1), probs.shape[1] - 1)
        return np.where(probs[np.arange(len(chosen)), chosen] > 0, chosen, probs.argmax(axis=1))

    return choose


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
        kth = -np.partition(-scaled, top_k - 1, axis=1)[:, top_k - 1 : top_k]  # (rows, 1): the k-th largest
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
