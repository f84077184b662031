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
import re
import string
from collections.abc import Sequence
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
    r"""Known inputs → their outputs, held compactly and loaded fast (CMUdict's 135,000 lines in a fraction of a
    second): the file's keys and outputs as two lists of strings, and per normalized key the line of its first
    variant (its other variants follow it under the same key); a lookup turns the few lines it returns into ids.
    Nothing is a container per line, so loading makes no work for the garbage collector.

    Examples:
        >>> vocab = Vocab(["<pad>", "</s>", "R", "EH1", "IY1", "D"], {"pad": "<pad>", "eos": "</s>"}, "space")
        >>> lexicon = Lexicon.parse(gzip.compress(b"read\tR IY1 D\nread\tR EH1 D\n"), vocab, "lexicon.tsv.gz")
        >>> lexicon.lookup("Read!")
        ((2, 4, 5), (2, 3, 5))
    """

    raw_keys: list[str]  # each line's key, as in the file
    outputs: list[str]  # each line's output tokens, space-separated
    first: dict[str, int]  # normalized key → the line of its first variant
    merged: dict[str, tuple[int, ...]]  # the keys that several raw keys normalize to → the lines of every variant
    token_ids: dict[str, int]  # target token → id

    def __len__(self) -> int:
        return len(self.first)

    def lookup(self, text: str) -> tuple[tuple[int, ...], ...]:
        """The variants of `text` (empty when unknown)."""
        key = key_of(text)
        lines: Sequence[int] | None = self.merged.get(key)
        if lines is None:
            start = self.first.get(key)
            if start is None:
                return ()
            lines = _runs(self.raw_keys, start)
        ids = self.token_ids
        return tuple(tuple(ids[token] for token in self.outputs[line].split()) for line in lines)

    @classmethod
    def parse(cls, data: bytes, vocab: Vocab, origin: str) -> Lexicon:
        """A lexicon from the file's (verified) bytes; BundleError naming `origin` and the line at fault. Every line
        is checked at load, by whole-file operations; a line-by-line pass names the line once one fails."""
        try:
            text = gzip.decompress(data).decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as error:
            raise BundleError(f"{origin}: not a gzip-compressed UTF-8 file ({error})") from None
        token_ids = {token: i for i, token in enumerate(vocab.tokens)}
        lines = text.split("\n")
        raw_keys = _KEY.findall(text)  # one per line with a tab, without building a container per line
        outputs = _OUTPUT.findall(text)
        well_formed = (
            len(raw_keys) == len(outputs) == text.count("\t") == len(lines) - lines.count("")
            and max(map(len, lines), default=0) <= MAX_LINE_CHARACTERS
            and "" not in raw_keys
            and all(map(str.strip, outputs))
            and set(" ".join(outputs).split()) <= token_ids.keys()
        )
        if not well_formed:
            raise _first_bad_line(lines, token_ids, origin)
        first: dict[str, int] = {}
        merged: dict[str, list[int]] = {}
        seen: dict[str, int] = {}  # raw key → its first line
        previous = None
        for index, raw in enumerate(raw_keys):
            if raw == previous:
                continue
            if raw in seen:
                raise BundleError(
                    f"{origin}:{_line_number(lines, index)}: {raw!r} is listed again (first at line "
                    f"{_line_number(lines, seen[raw])}), apart from its other variants: a conflicting entry"
                )
            seen[raw] = index
            previous = raw
            key = key_of(raw)
            key = raw if key == raw else key  # the file's own string where normalizing changes nothing
            if key in first:  # another raw key normalizes to it ("A" and "a."): every variant, each output once
                lexicon_lines = merged.setdefault(key, list(_runs(raw_keys, first[key])))
                for line in _runs(raw_keys, index):
                    if all(outputs[line].split() != outputs[other].split() for other in lexicon_lines):
                        lexicon_lines.append(line)
            else:
                first[key] = index
        return cls(raw_keys, outputs, first, {k: tuple(v) for k, v in merged.items()}, token_ids)


_KEY = re.compile(r"^([^\t\n]*)\t", re.MULTILINE)
_OUTPUT = re.compile(r"\t([^\t\n]*)$", re.MULTILINE)


def _runs(raw_keys: list[str], start: int) -> range:
    """The lines of the variants listed under the raw key of line `start` (consecutive in the file)."""
    end = start + 1
    while end < len(raw_keys) and raw_keys[end] == raw_keys[start]:
        end += 1
    return range(start, end)


def _line_number(lines: list[str], index: int) -> int:
    """The file line number of the `index`-th non-empty line (only for error messages)."""
    count = -1
    for number, line in enumerate(lines, start=1):
        count += bool(line)
        if count == index:
            return number
    raise AssertionError("no such line")


def _first_bad_line(lines: list[str], token_ids: dict[str, int], origin: str) -> BundleError:
    """The error of the first malformed line (the slow path of `Lexicon.parse`, taken only when one is)."""
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        where = f"{origin}:{number}"
        if len(line) > MAX_LINE_CHARACTERS:
            return BundleError(f"{where}: a line of {len(line)} characters, more than {MAX_LINE_CHARACTERS}")
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0] or not fields[1].strip():
            return BundleError(f"{where}: expected 'key<TAB>output tokens'")
        unknown = next((token for token in fields[1].split() if token not in token_ids), None)
        if unknown is not None:
            return BundleError(f"{where}: token {unknown!r} is not in the target vocabulary")
    raise AssertionError("no bad line found")  # unreachable: called only when a whole-file check failed
