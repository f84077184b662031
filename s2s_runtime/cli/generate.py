"""`s2s generate`: decode inputs given as arguments or read from stdin, one output per line (or JSON)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from .common import (
    add_batching_flags,
    add_bundle,
    add_generation_flags,
    add_session_flags,
    batching_options,
    generation_options,
    load_model,
)


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("generate", help="generate outputs for inputs (arguments or stdin lines)")
    add_bundle(parser)
    parser.add_argument("inputs", nargs="*", metavar="TEXT", help="inputs; read one per line from stdin if none")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per input: text, tokens, ids, score and the n-best"
    )
    parser.add_argument("--target-prefix", help="a target prefix every output starts with")
    parser.add_argument("--stream", action="store_true", help="print tokens as they are generated (greedy/sample)")
    parser.add_argument(
        "--timing", action="store_true", help="print latency per sequence and per token to stderr (after a warm-up)"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="an input symbol the model does not know is an error (exit 2), not a warning on stderr",
    )
    add_generation_flags(parser)
    add_batching_flags(parser)
    add_session_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    options, batching = generation_options(args), batching_options(args)
    model = load_model(args)
    inputs: Sequence[str] = args.inputs or [line.rstrip("\n") for line in sys.stdin]
    if args.stream:
        report_unknown(model, inputs, strict=args.strict)
        for text in inputs:
            for token in model.generate_stream(text, target_prefix=args.target_prefix, options=options):
                print(token.token, end="" if model.bundle.target.vocab.tokenizer == "char" else " ", flush=True)
            print()
        return 0
    report_unknown(model, inputs, strict=args.strict)
    prefixes = None if args.target_prefix is None else [args.target_prefix] * len(inputs)
    if args.timing and inputs:  # onnxruntime initializes lazily on the first run: time the steady state
        model.generate(list(inputs[:1]), target_prefix=None if prefixes is None else prefixes[:1], options=options)
    started = time.perf_counter()
    results = model.generate(list(inputs), target_prefix=prefixes, options=options, batching=batching)
    elapsed = time.perf_counter() - started
    for index, (text, result) in enumerate(zip(inputs, results, strict=True)):
        if args.json:
            print(json.dumps({"input": text, **result.to_dict()}, ensure_ascii=False))
        elif len(result.hypotheses) == 1:
            print(result.text)
        else:
            for rank, hypothesis in enumerate(result.hypotheses):
                print(f"{index}\t{rank}\t{hypothesis.normalized_score:.4f}\t{hypothesis.text}")
    if args.timing:
        tokens = sum(len(h.ids) + h.finished for r in results for h in r.hypotheses)  # eos is a decoding step too
        print(
            f"{len(results)} sequences, {tokens} tokens in {elapsed * 1e3:.1f} ms: "
            f"{elapsed * 1e3 / max(len(results), 1):.2f} ms/sequence, {elapsed * 1e6 / max(tokens, 1):.0f} µs/token "
            f"({model.device}, {model.engine.settings.intra_op_threads} thread(s), {options.strategy}, "
            f"batch ≤ {batching.max_batch_size})",
            file=sys.stderr,
        )
    return 0


def report_unknown(model: Any, inputs: Sequence[str], *, strict: bool) -> None:
    """Symbols the source vocabulary lacks are replaced by unk (the model still answers): say so on stderr, once per
    input, or with `strict` refuse the inputs (ValueError: exit 2)."""
    vocab = model.bundle.source.vocab
    for index, text in enumerate(inputs):
        symbols = list(text) if vocab.tokenizer == "char" else text.split()
        unknown = sorted({symbol for symbol in symbols if symbol not in vocab})
        if not unknown:
            continue
        message = f"inputs[{index}] {text!r}: not in the source vocabulary: {' '.join(map(repr, unknown))}"
        if strict:
            raise ValueError(message)
        print(f"s2s generate: warning: {message} (replaced by unk; --strict refuses)", file=sys.stderr)
