"""Sequence metrics against one or more references per source: exact match (WER = 1 − exact match), token accuracy
and token error rate (CER for characters, PER for phonemes) by edit distance."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from rapidfuzz.distance import Levenshtein


@dataclass(frozen=True)
class Metrics:
    exact_match: float  # fraction of sources whose prediction equals one of their references
    token_accuracy: float  # position-wise matches / reference tokens, against the closest reference
    error_rate: float  # edit distance / reference tokens, against the closest reference (CER or PER)
    count: int

    @property
    def wer(self) -> float:
        return 1.0 - self.exact_match

    def to_dict(self) -> dict:
        return {**asdict(self), "wer": self.wer}


def group_references(pairs: Iterable, split: Callable[[str], list[str]]) -> dict[str, list[list[str]]]:
    """Targets of (source, target) pairs grouped by source: several pairs with one source are alternative references
    (e.g. the pronunciations of one word)."""
    references: dict[str, list[list[str]]] = defaultdict(list)
    for pair in pairs:
        references[pair.source].append(split(pair.target))
    return references


def score_predictions(
    predictions: Mapping[str, Sequence[str]], references: Mapping[str, Sequence[Sequence[str]]]
) -> Metrics:
    """Compare token predictions with references, both keyed by source. A source counts as correct when its
    prediction equals any reference (the usual G2P convention for words with several pronunciations); edit distance
    and token accuracy use the closest reference.

    Examples:
        >>> score_predictions({"ab": ["b", "a"]}, {"ab": [["b", "a"], ["x"]]}).exact_match
        1.0
    """
    exact = matches = errors = total = 0
    for source, refs in references.items():
        prediction = list(predictions[source])
        closest = min((list(r) for r in refs), key=lambda r: (Levenshtein.distance(prediction, r), len(r)))
        exact += any(prediction == list(r) for r in refs)
        errors += Levenshtein.distance(prediction, closest)
        matches += sum(
            p == r for p, r in zip(prediction, closest, strict=False)
        )  # position by position, as far as both go
        total += len(closest)
    count = len(references)
    return Metrics(exact / max(count, 1), matches / max(total, 1), errors / max(total, 1), count)
