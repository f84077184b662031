"""`s2s bulk`: decode a file of inputs into a file of outputs, on every core or on Ray, resumably."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..batching import BatchingOptions
from ..config import GenerationOptions
from .common import add_generation_flags
from .flags import add_fields, given


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "bulk",
        help="decode a file of inputs into a file of outputs (resumable)",
        description="INPUT: .txt (one source per line), .tsv (header row), .jsonl or .parquet; OUTPUT: .jsonl or "
        ".parquet, one row per input in input order, bad inputs with an error column. Needs the bulk extra.",
    )
    parser.add_argument("input", help="input file")
    parser.add_argument("output", help="output file (.jsonl or .parquet)")
    parser.add_argument("bundle", help="bundle directory or built-in name")
    parser.add_argument("--column", default="source", help="the source column of TSV, JSONL and Parquet inputs")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="local processes, one onnxruntime thread each (default: the machine's cores)",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray Data actors (--workers of them): a new local cluster, or ADDRESS",
    )
    parser.add_argument("--resume", action="store_true", help="continue a killed job, skipping its finished shards")
    parser.add_argument("--shard-size", type=int, default=1024, help="rows per output shard, the unit of --resume")
    add_fields(parser, BatchingOptions, title="batching (BatchingOptions fields)", skip=("max_batch_tokens",))
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_generation_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        raise ImportError("s2s bulk needs the bulk extra: pip install 's2s-runtime[bulk]'") from None
    from ..serving.bulk import BulkJob
    from ..serving.bulk import run as run_job

    options = given(args, GenerationOptions)
    job = BulkJob(
        args.input,
        args.output,
        args.bundle,
        column=args.column,
        options=options or None,
        shard_size=args.shard_size,
        max_batch_size=BatchingOptions(**given(args, BatchingOptions)).max_batch_size,
    )
    report = run_job(
        job,
        workers=args.workers,
        use_ray=args.ray is not None,
        ray_address=None if args.ray in (None, "local") else args.ray,
        resume=args.resume,
        progress=not args.quiet,
    )
    print(
        f"s2s bulk: {report.rows} rows read, {report.rows} written to {report.output} ({report.failed} failed) "
        f"in {report.seconds:.1f} s",
        file=sys.stderr,
    )
    return 0
