"""What decoding returns: hypotheses, one Result per input, forced-decoding scores and streamed tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .config import GenerationOptions
from .decoding.hypotheses import Candidate
from .decoding.ranking import normalized_score
from .vocab import Vocab

TargetView = dict[int, str]  # a bundle's target view: target id → the token to show instead (unmapped ids as they are)


@dataclass(frozen=True)
class Hypothesis:
    """One output sequence.

    Attributes:
        text: the detokenized output (characters joined, or symbols joined by spaces).
        tokens / ids: the output tokens and their ids, eos excluded (a forced target prefix included).
        score: sum of the log-probabilities of the output tokens and of eos when emitted (after repetition_penalty,
            when set; sampling's temperature/top-k/top-p are not part of it).
        normalized_score: the score used for ranking (see GenerationOptions.length_penalty).
        finished: True if the model emitted eos, False if the length limit stopped it.
        attention: (steps, source_length) attention weights when return_attention=True, else None.
        origin: where the output came from: "model" (decoded) or "lexicon" (the bundle's lexicon: score 0, the
            log-probability of a certain answer).
    """

    text: str
    tokens: list[str]
    ids: list[int]
    score: float
    normalized_score: float
    finished: bool
    attention: np.ndarray | None = None
    origin: str = "model"

    @classmethod
    def from_lexicon(cls, ids: tuple[int, ...], vocab: Vocab, view: TargetView | None = None) -> Hypothesis:
        """A lexicon entry as a hypothesis (its tokens through `view`, if given)."""
        tokens = viewed(vocab.decode_tokens(ids), ids, view)
        return cls(vocab.join(tokens), tokens, list(ids), 0.0, 0.0, True, None, "lexicon")

    def to_dict(self) -> dict:
        """JSON-ready form (scores to 6 decimals, attention to 5), as the CLI and the HTTP service print it."""
        record = {
            "text": self.text,
            "tokens": self.tokens,
            "ids": self.ids,
            "score": round(self.score, 6),
            "normalized_score": round(self.normalized_score, 6),
            "finished": self.finished,
            "origin": self.origin,
        }
        if self.attention is not None:
            record["attention"] = self.attention.round(5).tolist()
        return record


@dataclass(frozen=True)
class Result:
    """The output for one input: its hypotheses (best first) and what was noticed about the input. The fields of the
    best hypothesis are available directly (`result.text`, `.tokens`, `.ids`, `.score`, ...)."""

    hypotheses: list[Hypothesis]
    unknown_source_tokens: int = 0  # input symbols not in the source vocabulary (mapped to unk)

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]

    text = property(lambda self: self.best.text)
    tokens = property(lambda self: self.best.tokens)
    ids = property(lambda self: self.best.ids)
    score = property(lambda self: self.best.score)
    normalized_score = property(lambda self: self.best.normalized_score)
    finished = property(lambda self: self.best.finished)
    attention = property(lambda self: self.best.attention)

    def to_dict(self) -> dict:
        """The best hypothesis's fields, the unknown-symbol count and every hypothesis, JSON-ready."""
        return {
            **self.best.to_dict(),
            "unknown_source_tokens": self.unknown_source_tokens,
            "hypotheses": [h.to_dict() for h in self.hypotheses],
        }


@dataclass(frozen=True)
class TokenScore:
    """Forced-decoding scores of one (source, target) pair: per-token log-probs (the last one is eos) and their sum."""

    tokens: list[str]
    ids: list[int]
    log_probs: list[float]
    score: float


@dataclass(frozen=True)
class StreamedToken:
    """A token as generate_stream produces it; str() gives the token."""

    token: str
    id: int
    log_prob: float

    def __str__(self) -> str:
        return self.token


def viewed(tokens: list[str], ids: Sequence[int], view: TargetView | None) -> list[str]:
    """`tokens` (of target `ids`) as a target view shows them; as they are without one."""
    if not view:
        return tokens
    return [view.get(token_id, token) for token, token_id in zip(tokens, ids, strict=True)]


def once(hypotheses: list[Hypothesis]) -> list[Hypothesis]:
    """The hypotheses without those whose tokens an earlier one already shows (alike through a view)."""
    seen: list[list[str]] = []
    kept = []
    for h in hypotheses:
        if h.tokens not in seen:
            seen.append(h.tokens)
            kept.append(h)
    return kept


def hypothesis(
    candidate: Candidate,
    source_tokens: list[str],
    source_length: int,
    options: GenerationOptions,
    vocab: Vocab,
    view: TargetView | None = None,
) -> Hypothesis:
    """A Candidate as the caller sees it: tokens and text (through `view`, if given), ranking score, attention cut to
    the source, and with replace_unknowns each output unk replaced by the source token it attended to most."""
    tokens = vocab.decode_tokens(candidate.ids)
    attention = None
    if candidate.attention:
        attention = np.stack(candidate.attention)[:, :source_length]  # (steps, source_length)
    if options.replace_unknowns and attention is not None:
        unk = vocab.special_ids["unk"]
        for position, token_id in enumerate(candidate.ids):
            if token_id == unk:
                source_position = int(attention[position, : len(source_tokens)].argmax())
                tokens[position] = source_tokens[source_position]
    tokens = viewed(tokens, candidate.ids, view)
    return Hypothesis(
        vocab.join(tokens),
        tokens,
        candidate.ids,
        candidate.score,
        normalized_score(candidate, options, source_length),
        candidate.finished,
        attention if options.return_attention else None,
    )
