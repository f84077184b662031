"""The `s2s` command: generate and info (runtime only), train and export (export extra)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

from .bundle import Bundle, BundleError
from .config import GenerationOptions
from .sessions import DeviceError, import_onnxruntime


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s", description="Recurrent seq2seq models on onnxruntime.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level (device choice, ...)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="generate outputs for inputs (arguments or stdin lines)")
    generate.add_argument("bundle", help="bundle directory")
    generate.add_argument("inputs", nargs="*", metavar="TEXT", help="inputs; read one per line from stdin if none")
    generate.add_argument("--json", action="store_true", help="one JSON object per input: text, tokens, ids, score")
    generate.add_argument("--max-length", type=int, help="most output tokens (default: the bundle's rule)")
    generate.add_argument("--batch-size", type=int, default=64, help="inputs per batch (default 64)")
    generate.add_argument("--timing", action="store_true", help="print latency per sequence and per token to stderr")
    add_session_flags(generate)
    generate.set_defaults(handler=run_generate)

    info = commands.add_parser("info", help="describe a bundle: config, parameters, files, providers")
    info.add_argument("bundle", help="bundle directory")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=run_info)

    from s2s_export.cli import add_export_parser, add_train_parser  # torch-free at import time
    add_train_parser(commands)
    add_export_parser(commands)
    return parser


def add_session_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")


def run_generate(args: argparse.Namespace) -> int:
    from .model import load

    model = load(args.bundle, device=args.device, intra_op_threads=args.threads)
    inputs: Sequence[str] = args.inputs or [line.rstrip("\n") for line in sys.stdin]
    options = GenerationOptions(max_length=args.max_length, max_batch_size=args.batch_size)
    started = time.perf_counter()
    results = model.generate(list(inputs), options=options)
    elapsed = time.perf_counter() - started
    for text, result in zip(inputs, results):
        if args.json:
            print(json.dumps({"input": text, "text": result.text, "tokens": result.tokens, "ids": result.ids,
                              "score": round(result.score, 6), "finished": result.finished,
                              "unknown_source_tokens": result.unknown_source_tokens}, ensure_ascii=False))
        else:
            print(result.text)
    if args.timing:
        tokens = sum(len(r.ids) + r.finished for r in results)  # eos is a decoding step too
        print(f"{len(results)} sequences, {tokens} tokens in {elapsed * 1e3:.1f} ms: "
              f"{elapsed * 1e3 / max(len(results), 1):.2f} ms/sequence, {elapsed * 1e6 / max(tokens, 1):.0f} µs/token "
              f"({model.device}, {args.threads} thread(s), batch ≤ {args.batch_size})", file=sys.stderr)
    return 0


def run_info(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    manifest = bundle.manifest
    info = {
        "bundle": str(bundle.root),
        "format_version": manifest["format_version"],
        "config": manifest["config"],
        "parameters": manifest.get("parameters"),
        "source": {"tokenizer": bundle.source.vocab.tokenizer, "vocab_size": len(bundle.source.vocab),
                   "special_ids": bundle.source.special_ids},
        "target": {"tokenizer": bundle.target.vocab.tokenizer, "vocab_size": len(bundle.target.vocab),
                   "special_ids": bundle.target.special_ids},
        "limits": manifest["limits"],
        "opset": manifest["opset"],
        "producer": manifest.get("producer", {}),
        "parity": {k: manifest.get("parity", {}).get(k) for k in ("passed", "max_abs_diff", "tolerance")},
        "files": {name: (bundle.root / name).stat().st_size for name in sorted(manifest["files"])},
        "available_providers": import_onnxruntime().get_available_providers(),
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for inner_key, inner_value in value.items():
                print(f"  {inner_key}: {inner_value}")
        else:
            print(f"{key}: {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.handler(args)
    except (BundleError, DeviceError, ValueError, TypeError, ImportError) as error:
        print(f"s2s {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
