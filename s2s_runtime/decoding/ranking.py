"""Ranking hypotheses: the score an n-best list is sorted by.

The base is the length-normalized score: score / length^α ("power"; α = 0 none, α = 1 the average log-prob) or the
GNMT form score / ((5 + length) / 6)^α, where length counts the scored steps (eos included). Ranking terms add to
it: each is one class registered with @register_term, on when its GenerationOptions field is set, and it may need
the decoder's attention (the plan then reads it at every step).
"""

from __future__ import annotations

from typing import ClassVar

from ..config import GenerationOptions
from .hypotheses import Candidate


class RankingTerm:
    """A term added to the length-normalized score; `option` names the GenerationOptions field that turns it on."""

    option: ClassVar[str]
    needs_attention: ClassVar[bool] = False

    def __init__(self, options: GenerationOptions):
        self.options = options

    def __call__(self, candidate: Candidate, source_length: int | None) -> float:
        raise NotImplementedError


TERMS: list[type[RankingTerm]] = []


def register_term(cls: type[RankingTerm]) -> type[RankingTerm]:
    TERMS.append(cls)
    return cls


def active_terms(options: GenerationOptions) -> list[RankingTerm]:
    return [term(options) for term in TERMS if getattr(options, term.option)]


def attention_options(options: GenerationOptions) -> list[str]:
    """The options of the active terms that read the decoder's attention."""
    return [term.option for term in TERMS if term.needs_attention and getattr(options, term.option)]


def normalized_score(candidate: Candidate, options: GenerationOptions, source_length: int | None = None) -> float:
    """The score hypotheses are ranked by (see the module docstring); `source_length` for terms that read the
    attention over the source."""
    alpha, length = options.length_penalty, max(candidate.steps(), 1)
    if options.length_normalization == "gnmt":
        score = candidate.score / ((5 + length) / 6) ** alpha
    else:
        score = candidate.score / length**alpha
    for term in active_terms(options):
        score += term(candidate, source_length)
    return score


def ranked(
    candidates: list[Candidate], options: GenerationOptions, source_length: int | None = None
) -> list[Candidate]:
    """Best first by normalized score (stable: equal scores keep their order)."""
    return sorted(candidates, key=lambda c: -normalized_score(c, options, source_length))
