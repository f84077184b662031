"""A bundle's lexicon: exact outputs for known inputs (pronunciations, transliterations, normalizations), answered
without decoding.

The file is `lexicon.tsv.gz` in the bundle, listed with its checksum in the manifest's `files` like every other
file: gzip-compressed UTF-8, one line per output, `key<TAB>target tokens separated by spaces`; a key's lines in order
are its variants, preferred first (homographs keep every pronunciation), and must be consecutive: a key listed again
after other keys is a conflicting entry. A line is at most MAX_LINE_CHARACTERS; a token outside the target
vocabulary, a line without exactly one tab, an empty key or output, or a conflicting entry is a BundleError naming
the line. Keys that normalize alike ("A" and "a.") share their variants, in file order, each output once.

Lookup normalization: an input is looked up as `key_of(text)` — lowercased, with the punctuation around it removed
("Hello!" → "hello"); a token list, or an input with a target prefix, is never looked up.
"""

from __future__ import annotations

import gzip
import string
from dataclasses import dataclass

from .schema import BundleError
from .vocab import Vocab

FILE = "lexicon.tsv.gz"
MAX_LINE_CHARACTERS = 4096
_AROUND = string.punctuation + "“”‘’«»¿¡"


def key_of(text: str) -> str:
    """The lookup key of an input text.

    Examples:
        >>> key_of("  Hello! "), key_of("(e.g.)")
        ('hello', 'e.g')
    """
    return text.strip().strip(_AROUND).lower()


@dataclass(frozen=True)
class Lexicon:
    """Known inputs → their outputs (target ids of each variant, preferred first)."""

    entries: dict[str, tuple[tuple[int, ...], ...]]

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, text: str) -> tuple[tuple[int, ...], ...]:
        """The variants of `text` (empty when unknown)."""
        return self.entries.get(key_of(text), ())

    @classmethod
    def parse(cls, data: bytes, vocab: Vocab, origin: str) -> Lexicon:
        """A lexicon from the file's (verified) bytes; BundleError naming `origin` and the line at fault."""
        try:
            text = gzip.decompress(data).decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as error:
            raise BundleError(f"{origin}: not a gzip-compressed UTF-8 file ({error})") from None
        entries: dict[str, list[tuple[int, ...]]] = {}
        first_line: dict[str, int] = {}  # raw key → the line of its first variant
        previous = None
        index = {token: i for i, token in enumerate(vocab.tokens)}
        for number, line in enumerate(text.split("\n"), start=1):
            if not line:
                continue
            where = f"{origin}:{number}"
            if len(line) > MAX_LINE_CHARACTERS:
                raise BundleError(f"{where}: a line of {len(line)} characters, more than {MAX_LINE_CHARACTERS}")
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0] or not fields[1].strip():
                raise BundleError(f"{where}: expected 'key<TAB>output tokens'")
            if fields[0] != previous and fields[0] in first_line:
                raise BundleError(
                    f"{where}: {fields[0]!r} is listed again (first at line {first_line[fields[0]]}), apart from its "
                    "other variants: a conflicting entry"
                )
            first_line.setdefault(fields[0], number)
            previous = fields[0]
            key, tokens = key_of(fields[0]), fields[1].split()
            unknown = next((token for token in tokens if token not in index), None)
            if unknown is not None:
                raise BundleError(f"{where}: token {unknown!r} is not in the target vocabulary")
            ids = tuple(index[token] for token in tokens)
            variants = entries.setdefault(key, [])
            if ids not in variants:
                variants.append(ids)
        return cls({key: tuple(variants) for key, variants in entries.items()})
