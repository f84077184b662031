"""The thin path for one input: `generate("word")` (or `generate(["word"])`) with the default options, the latency
case of every online service, answered by one call of the greedy graph with nothing else around it — no batching,
no generation object, the plan made once — where the general path spends several times the decode's own Python.

It does less per call, never fewer checks: the input is prepared by the same InputPreparer as every call (types,
max_source_length, the length limits), a known input gets the lexicon's preferred output as the general path gives
it, and whatever the thin path does not cover — empty inputs, options, several inputs, a bundle without a greedy
graph — goes the general way. Tests prove its Results equal the general path's.
"""

from __future__ import annotations

from typing import Any

from .batching import BATCHING_FIELDS, BatchingOptions
from .bundle import Bundle
from .config import GenerationOptions
from .engine.fused import FusedGreedy
from .inputs import InputPreparer
from .results import Hypothesis, Result, hypothesis


class SingleInput:
    """One input decoded greedily by the greedy graph with the default options (see the module docstring).

    Examples:
        >>> model._single.answer("hello", {}, None).text  # doctest: +SKIP
        'HH AH0 L OW1'
    """

    def __init__(self, bundle: Bundle, fused: FusedGreedy, inputs: InputPreparer):
        self._fused, self._inputs = fused, inputs
        self._options = GenerationOptions()  # greedy with no rule: what the greedy graph decodes
        self._vocab = bundle.target.vocab

    def answer(self, source: object, kwargs: dict[str, Any], batching: BatchingOptions | None) -> Result | None:
        """The Result of one input given `generate`'s keyword arguments and batching, or None where the thin path
        does not apply (the caller goes the general way). Batching options say nothing about one input, but are
        validated all the same."""
        if kwargs or batching is not None:
            if not kwargs.keys() <= BATCHING_FIELDS:
                return None
            BatchingOptions.split(kwargs, batching)
        if not isinstance(source, str):
            if not isinstance(source, (list, tuple)) or len(source) != 1 or not isinstance(source[0], str):
                return None
            source = source[0]  # a list of one text (a list of tokens is not a text: never reaches here)
        item = self._inputs.prepare(source, self._options, 1, None, 0)
        if item.lexicon:  # the lexicon's preferred output, as the general path gives it with the default options
            return Result([Hypothesis.from_lexicon(item.lexicon[0], self._vocab)], item.unknown)
        if not item.ids:  # an empty input: the general way
            return None
        candidate = self._fused.decode_one(item.ids, item.limits.max_length)
        return Result([hypothesis(candidate, item.tokens, len(item.ids), self._options, self._vocab)], item.unknown)
