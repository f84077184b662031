"""Decoding: strategies (greedy, beam, sampling, alternatives) and logits processors over one runner interface.

Importing this package registers the built-in strategies (s2s_runtime.decoding.strategy explains how to add one) and
ranking terms (s2s_runtime.decoding.ranking).
"""

from . import alternatives, beam, coverage, greedy, sampling  # noqa: F401  (each registers its strategy or ranking term)
from .hypotheses import Candidate, RowLimits, StepEvent
from .processors import LogitsProcessor, Processors
from .strategy import DecoderRunner, SearchTask, Strategy, register

__all__ = [
    "Candidate",
    "DecoderRunner",
    "LogitsProcessor",
    "Processors",
    "RowLimits",
    "SearchTask",
    "StepEvent",
    "Strategy",
    "register",
]
