"""Vocabularies: ordered token lists (id = position) with explicitly named special-token roles.

Shared by the export toolkit (which builds and saves them) and the runtime (which loads them from a bundle), so both
sides agree on one file format:

    {"tokens": ["<pad>", "<unk>", "</s>", "a", ...],
     "specials": {"pad": "<pad>", "unk": "<unk>", "eos": "</s>"},
     "tokenizer": "char"}
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .files import read_json

ROLES = ("pad", "unk", "bos", "eos")
TOKENIZERS = ("char", "space")
DEFAULT_SPECIALS = {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}


class VocabError(ValueError):
    """A vocabulary file or definition is invalid; the message names the file and the key at fault."""


class Vocab:
    """An ordered token list with special-token roles and a tokenizer.

    Examples:
        >>> v = Vocab(["<pad>", "<unk>", "</s>", "a", "b"], {"pad": "<pad>", "unk": "<unk>", "eos": "</s>"}, "char")
        >>> v.encode("ab?")
        [3, 4, 1]
        >>> v.decode([4, 3])
        'ba'
    """

    def __init__(self, tokens: Sequence[str], specials: dict[str, str], tokenizer: str, *, origin: str = "vocabulary"):
        self.origin = origin
        if tokenizer not in TOKENIZERS:
            raise VocabError(f"{origin}: tokenizer {tokenizer!r} is not one of {TOKENIZERS}")
        if not isinstance(tokens, (list, tuple)) or not all(isinstance(t, str) and t for t in tokens):
            raise VocabError(f"{origin}: 'tokens' must be a list of non-empty strings")
        if len(set(tokens)) != len(tokens):
            duplicate = next(t for t, n in Counter(tokens).items() if n > 1)
            raise VocabError(f"{origin}: token {duplicate!r} appears more than once in 'tokens'")
        self.tokens: list[str] = list(tokens)
        self.tokenizer = tokenizer
        self._ids = {token: index for index, token in enumerate(self.tokens)}
        self.longest_token = max(map(len, self.tokens), default=0)  # characters (an answer's size bound reads it)
        if not isinstance(specials, dict):
            raise VocabError(f"{origin}: 'specials' must be an object mapping roles to tokens")
        self.specials: dict[str, str] = {}
        self.special_ids: dict[str, int] = {}
        for role, token in specials.items():
            if role not in ROLES:
                raise VocabError(f"{origin}: unknown special role {role!r} in 'specials' (roles: {', '.join(ROLES)})")
            if token not in self._ids:
                raise VocabError(f"{origin}: special {role}={token!r} is not in 'tokens'")
            self.specials[role] = token
            self.special_ids[role] = self._ids[token]

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    def id_of(self, role: str) -> int:
        """The id of a special role; VocabError naming the role if this vocabulary lacks it."""
        if role not in self.special_ids:
            raise VocabError(f"{self.origin}: has no {role!r} special token")
        return self.special_ids[role]

    def require(self, roles: Iterable[str], why: str) -> None:
        """Raise VocabError naming the first role in `roles` this vocabulary lacks, and why it is needed."""
        for role in roles:
            if role not in self.special_ids:
                raise VocabError(f"{self.origin}: missing the {role!r} special token, needed because {why}")

    def split(self, text: str) -> list[str]:
        """Split raw text into tokens with this side's tokenizer."""
        return list(text) if self.tokenizer == "char" else text.split()

    def join(self, tokens: Sequence[str]) -> str:
        return ("" if self.tokenizer == "char" else " ").join(tokens)

    def encode(self, text_or_tokens: str | Sequence[str]) -> list[int]:
        """Token ids of raw text or of a pre-tokenized list; unknown tokens map to the unk id (or raise if none)."""
        tokens = self.split(text_or_tokens) if isinstance(text_or_tokens, str) else text_or_tokens
        lookup, unk = self._ids.get, self.special_ids.get("unk")
        if unk is None:
            unknown = next((token for token in tokens if token not in self._ids), None)
            if unknown is not None:
                raise VocabError(f"{self.origin}: token {unknown!r} is unknown and the vocabulary has no 'unk' role")
            return [self._ids[token] for token in tokens]
        return [lookup(token, unk) for token in tokens]

    def decode_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        return self.join(self.decode_tokens(ids))

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "specials": dict(self.specials), "tokenizer": self.tokenizer}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: object, *, origin: str = "vocabulary") -> Vocab:
        if not isinstance(data, dict):
            raise VocabError(f"{origin}: expected a JSON object with 'tokens', 'specials' and 'tokenizer'")
        unknown = set(data) - {"tokens", "specials", "tokenizer"}
        if unknown:
            raise VocabError(f"{origin}: unknown key {sorted(unknown)[0]!r}")
        for key in ("tokens", "specials", "tokenizer"):
            if key not in data:
                raise VocabError(f"{origin}: missing key {key!r}")
        return cls(data["tokens"], data["specials"], data["tokenizer"], origin=origin)

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        path = Path(path)
        return cls.from_dict(read_json(path, VocabError), origin=str(path))

    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        tokenizer: str,
        roles: Sequence[str],
        *,
        min_frequency: int = 1,
        origin: str = "vocabulary",
    ) -> Vocab:
        """Build from training texts: the requested special roles first, then tokens seen ≥ min_frequency times,
        most frequent first (ties alphabetical, so the result is deterministic).

        Examples:
            >>> Vocab.build(["abba", "cab"], "char", ["pad", "unk", "eos"]).tokens
            ['<pad>', '<unk>', '</s>', 'a', 'b', 'c']
        """
        if tokenizer not in TOKENIZERS:
            raise VocabError(f"{origin}: tokenizer {tokenizer!r} is not one of {TOKENIZERS}")
        if min_frequency < 1:
            raise VocabError(f"{origin}: min_frequency must be ≥ 1, got {min_frequency}")
        split = (lambda t: list(t)) if tokenizer == "char" else (lambda t: t.split())
        counts = Counter(token for text in texts for token in split(text))
        specials = {role: DEFAULT_SPECIALS[role] for role in roles}
        kept = sorted(
            (t for t, n in counts.items() if n >= min_frequency and t not in specials.values()),
            key=lambda t: (-counts[t], t),
        )
        return cls(list(specials.values()) + kept, specials, tokenizer, origin=origin)
