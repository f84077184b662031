"""The answer of a /v1/generate request: its size bounded before any decoding, and its JSON rendered off the event
loop when it is large, so that no single request can hold the loop (and every other client) while it is written."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from ...config import GenerationOptions
from ...model import Seq2SeqModel
from ...results import Result

ATTENTION_VALUE_BYTES = 12  # one weight rounded to 5 decimals, with its separator
HYPOTHESIS_BYTES = 160  # a hypothesis's keys, score, normalized score, finished
TOKEN_OVERHEAD_BYTES = 16  # per output token: its id, quotes and separators in "text", "tokens" and "ids"
INLINE_BYTES = 64 << 10  # answers that may be larger are rendered on a worker thread


def answer_bound(model: Seq2SeqModel, inputs: list, options: GenerationOptions) -> int:
    """The most bytes the JSON answer to these inputs and options can take: every hypothesis (and the best one again,
    as the result's own fields) at the longest output the options allow, with its attention if asked."""
    vocab = model.bundle.target.vocab
    token_bytes = 2 * vocab.longest_token + TOKEN_OVERHEAD_BYTES
    hypotheses = min(options.num_hypotheses, model.limits.max_num_hypotheses) + 1
    total = 0
    for source in inputs:
        positions = _source_positions(model, source)
        length = _output_length(model, options, positions)
        per_hypothesis = HYPOTHESIS_BYTES + length * token_bytes
        if options.return_attention:
            per_hypothesis += length * (positions + 1) * ATTENTION_VALUE_BYTES
        total += hypotheses * per_hypothesis
    return total


def _output_length(model: Seq2SeqModel, options: GenerationOptions, positions: int) -> int:
    """The longest output an input of `positions` source tokens may get, as s2s_runtime.inputs fixes it (options past
    the model's limits are refused when planned, 400: the bound need not count past them)."""
    caps = [options.max_length] if options.max_length is not None else []
    if options.max_length_ratio is not None:
        caps.append(max(1, math.ceil(options.max_length_ratio * positions)))
    length = min(caps) if caps else model.bundle.default_max_length(positions)
    return min(length, model.max_output_length)


def _source_positions(model: Seq2SeqModel, source: Any) -> int:
    if isinstance(source, list):
        return len(source)
    if not isinstance(source, str):
        return 0  # refused when the input is prepared
    return len(source) if model.bundle.source.vocab.tokenizer == "char" else len(source.split())


async def render(results: list[Result], bound: int) -> bytes:
    """{"results": [...]} as UTF-8 JSON; on a worker thread when the answer may pass INLINE_BYTES."""

    def dump() -> bytes:
        return json.dumps({"results": [r.to_dict() for r in results]}, ensure_ascii=False).encode("utf-8")

    return dump() if bound <= INLINE_BYTES else await asyncio.to_thread(dump)
