"""Preparing inputs: tokenize a source, resolve its target prefix and fix its length limits — everything about an
input that can be wrong is found here, before any decoding, and its cost is known."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .bundle import Bundle
from .config import GenerationOptions
from .decoding.hypotheses import RowLimits
from .plan import DecodingPlan
from .vocab import Vocab

InputText = str | Sequence[str]
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class PreparedInput:
    """One input tokenized, its target prefix resolved and its length limits fixed (`Seq2SeqModel.prepare`)."""

    tokens: list[str]
    ids: list[int]  # source ids, with the source eos when the model uses one; empty for an empty input
    unknown: int  # input symbols not in the source vocabulary (mapped to unk)
    limits: RowLimits
    tokens_bound: int  # the most decoder tokens it can cost: rows × max output length (0 if empty)
    lexicon: tuple[tuple[int, ...], ...] = ()  # the lexicon's outputs for it, preferred first (s2s_runtime.lexicon)


class InputPreparer:
    """The rules of one bundle and its output cap for turning inputs into PreparedInputs."""

    def __init__(self, bundle: Bundle, max_output_length: int, max_source_length: int):
        self.bundle, self.max_output_length = bundle, max_output_length
        # The binding source cap: the bundle's own, or RequestLimits.max_source_length below it.
        if max_source_length < bundle.max_source_length:
            self.max_source_length, self._cap_name = max_source_length, "RequestLimits.max_source_length"
        else:
            self.max_source_length, self._cap_name = bundle.max_source_length, "the bundle's max_source_length"
        self._source_eos = [bundle.source.special_ids["eos"]] if bundle.source_eos else []
        self._source_unk = bundle.source.special_ids.get("unk")

    def prepare(
        self,
        source: InputText,
        options: GenerationOptions,
        rows_per_input: int,
        target_prefix: InputText | None,
        index: int,
    ) -> PreparedInput:
        tokens, ids, unknown = self.source(source, index)
        prefix = () if target_prefix is None else self.prefix_ids(target_prefix, index)
        if not ids:
            return PreparedInput([], [], 0, RowLimits((), 0, 0), 0)
        limits = self.limits(len(ids) - len(self._source_eos), prefix, options, index)
        known: tuple[tuple[int, ...], ...] = ()
        if options.use_lexicon and self.bundle.lexicon is not None and isinstance(source, str) and not prefix:
            known = self.bundle.lexicon.lookup(source)
        return PreparedInput(tokens, ids, unknown, limits, rows_per_input * limits.max_length, known)

    def prepare_all(self, inputs: object, target_prefix: object, plan: DecodingPlan) -> list[PreparedInput]:
        """`prepare` for each input of a call, with its prefix (None, or a list of one per input)."""
        items = as_input_list(inputs)
        prefixes = prefix_list(target_prefix, len(items))
        return [
            self.prepare(item, plan.options, plan.rows_per_input, prefix, index)
            for index, (item, prefix) in enumerate(zip(items, prefixes, strict=True))
        ]

    def source(self, item: InputText, index: int) -> tuple[list[str], list[int], int]:
        """(tokens, ids with the source eos, count of symbols that map to unk); a TypeError or ValueError naming
        inputs[index]."""
        vocab = self.bundle.source.vocab
        limit = self.max_source_length - len(self._source_eos)
        tokens = bounded_tokens(vocab, item, limit, f"inputs[{index}]")
        if len(tokens) > limit:  # counted in full only where that costs nothing
            count = len(item) if not isinstance(item, str) or vocab.tokenizer == "char" else f"more than {limit}"
            raise ValueError(f"inputs[{index}]: {count} source tokens exceed {self._cap_name} {self.max_source_length}")
        if not tokens:
            return [], [], 0
        ids = vocab.encode(tokens)
        unknown = 0
        if self._source_unk in ids:  # rare: count the symbols that map to unk without being the unk token itself
            unknown = sum(1 for t, i in zip(tokens, ids, strict=True) if i == self._source_unk and t != vocab.tokens[i])
        return tokens, ids + self._source_eos, unknown

    def scoring_pairs(self, sources: object, targets: object) -> list[tuple[list[int], list[int]]]:
        """(source ids, target ids) of each pair to score; a ValueError or TypeError naming sources[i] or
        targets[i]."""
        sources, targets = as_input_list(sources), as_input_list(targets)
        if len(sources) != len(targets):
            raise ValueError(f"targets: {len(targets)} targets for {len(sources)} sources")
        source_ids = [self.source(source, index)[1] for index, source in enumerate(sources)]
        empty = next((index for index, ids in enumerate(source_ids) if not ids), None)
        if empty is not None:
            raise ValueError(f"sources[{empty}]: an empty source cannot be scored")
        target_ids = [self.target_ids(target, f"targets[{index}]") for index, target in enumerate(targets)]
        return list(zip(source_ids, target_ids, strict=True))

    def target_ids(self, item: InputText, where: str) -> list[int]:
        """Target token ids of a prefix or a scored target; a token outside the target vocabulary is a ValueError
        (forcing or scoring unk in its place would answer another question than the one asked)."""
        vocab = self.bundle.target.vocab
        tokens = bounded_tokens(vocab, item, self.max_output_length, where)
        if len(tokens) > self.max_output_length:
            raise ValueError(f"{where}: more than the model's max output length {self.max_output_length} tokens")
        unknown = next((token for token in tokens if token not in vocab), None)
        if unknown is not None:
            raise ValueError(f"{where}: token {unknown!r} is not in the target vocabulary")
        return vocab.encode(tokens)

    def prefix_ids(self, prefix: InputText, index: int) -> tuple[int, ...]:
        """The ids of a forced target prefix. The one rule for every strategy: eos cannot be inside a prefix (an
        output ends at its eos, so nothing could follow it, and the strategies would each have to invent what such a
        prefix means)."""
        ids = tuple(self.target_ids(prefix, f"target_prefix[{index}]"))
        if self.bundle.eos_id in ids:
            eos = self.bundle.target.vocab.tokens[self.bundle.eos_id]
            raise ValueError(
                f"target_prefix[{index}]: {eos!r} is the end-of-sequence token; a prefix cannot contain it "
                "(an output ends at eos)"
            )
        return ids

    def limits(self, source_length: int, prefix: tuple[int, ...], options: GenerationOptions, index: int) -> RowLimits:
        if options.max_length_ratio is not None:
            by_ratio = max(1, math.ceil(options.max_length_ratio * source_length))
            if by_ratio > self.max_output_length:
                raise ValueError(
                    f"max_length_ratio: {options.max_length_ratio:g} × {source_length} source tokens "
                    f"of inputs[{index}] = {by_ratio} tokens, more than this model allows "
                    f"(max_output_length = {self.max_output_length}; see RequestLimits)"
                )
        else:
            by_ratio = None
        caps = [c for c in (options.max_length, by_ratio) if c is not None]
        if caps:
            max_length = min(caps)
        else:  # the bundle's own rule, within the operator's cap
            max_length = min(self.bundle.default_max_length(source_length), self.max_output_length)
        if len(prefix) > max_length:
            raise ValueError(f"target_prefix[{index}]: {len(prefix)} tokens, more than the max length {max_length}")
        return RowLimits(prefix, options.min_length, max_length)


def bounded_tokens(vocab: Vocab, item: object, limit: int, where: str) -> list[str]:
    """The tokens of a text or token list, at most limit + 1 of them: an oversized input is refused from its
    length alone, before it is split or encoded in full."""
    if isinstance(item, str):
        if vocab.tokenizer == "char":
            return list(item[: limit + 1])
        return [match.group() for match in itertools.islice(_WORD.finditer(item), limit + 1)]
    if isinstance(item, (list, tuple)):
        tokens = list(item[: limit + 1])
        if all(isinstance(token, str) for token in tokens):
            return tokens
    raise TypeError(f"{where}: expected a string or a list of token strings, got {item!r:.60}")


def prefix_list(target_prefix: object, count: int) -> list:
    if target_prefix is None:
        return [None] * count
    if not isinstance(target_prefix, (list, tuple)) or len(target_prefix) != count:
        raise ValueError(f"target_prefix: expected a list with one prefix (or None) per input ({count})")
    return list(target_prefix)


def as_input_list(inputs: object) -> list:
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    raise TypeError(
        f"inputs: expected a string, a list of strings or a list of token lists, got {type(inputs).__name__}"
    )
