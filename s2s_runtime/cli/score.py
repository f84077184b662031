"""`s2s score`: forced-decoding log-probs of source<TAB>target pairs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..batching import BatchingOptions
from .common import add_bundle, add_session_flags, load_model
from .flags import add_fields, given


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("score", help="forced-decoding log-probs of source<TAB>target pairs (stdin)")
    add_bundle(parser)
    parser.add_argument(
        "--file",
        type=argparse.FileType("r", encoding="utf-8"),
        default=sys.stdin,
        help="TSV of source<TAB>target pairs (default: stdin)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per pair with per-token log-probs")
    add_fields(parser, BatchingOptions, title="batching (BatchingOptions fields)", skip=("max_batch_tokens",))
    add_session_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    pairs = []
    for number, line in enumerate(args.file, start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ValueError(f"{args.file.name}:{number}: no tab between source and target")
        source, target = line.rstrip("\n").split("\t", 1)
        pairs.append((source, target))
    model = load_model(args)
    batching = BatchingOptions(**given(args, BatchingOptions))
    scores = model.score([p[0] for p in pairs], [p[1] for p in pairs], max_batch_size=batching.max_batch_size)
    for (source, target), score in zip(pairs, scores, strict=True):
        if args.json:
            record = {
                "source": source,
                "target": target,
                "score": round(score.score, 6),
                "tokens": score.tokens,
                "log_probs": [round(x, 6) for x in score.log_probs],
            }
            print(json.dumps(record, ensure_ascii=False))
        else:
            print(f"{score.score:.6f}\t{source}\t{target}")
    return 0
