"""`s2s bench-cutover`: where the greedy graph stops paying — the runtime's greedy decoding of one bundle through its
greedy graph (one onnxruntime call per batch) and through the step loop (a call per step, finished rows dropped),
per batch size, in the same run.

The two take turns repeat by repeat over the same inputs (CMUdict dev words by default); the speed-up of each
batch size is the median of its per-repeat ratios. The largest batch size the greedy graph wins at, with some
margin, is the runtime's default `greedy_graph_max_batch` (s2s_runtime.engine.sessions).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any


def add_cutover_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench-cutover", help="greedy graph against the step loop, per batch size")
    parser.add_argument("bundles", nargs="+", type=Path, help="bundle directories with a greedy graph")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--inputs", type=int, default=512, help="CMUdict dev words decoded per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.set_defaults(handler=run_cutover)


def cutover(bundle: Path, words: list[str], batch_sizes: list[int], repeats: int, threads: int) -> list[dict]:
    """µs per word of the step loop and of the greedy graph, and the speed-up, per batch size (medians)."""
    import s2s_runtime

    graph = s2s_runtime.load(bundle, device="cpu", intra_op_threads=threads, greedy_graph_max_batch=max(batch_sizes))
    loop = s2s_runtime.load(bundle, device="cpu", intra_op_threads=threads, greedy_graph_max_batch=0)
    if graph.engine.fused is None:
        raise SystemExit(f"s2s bench-cutover: {bundle} has no greedy graph (re-export it)")
    rows = []
    for batch in batch_sizes:
        _seconds(graph, words, batch), _seconds(loop, words, batch)  # warm up both
        rounds = [(_seconds(loop, words, batch), _seconds(graph, words, batch)) for _ in range(repeats)]
        rows.append(
            {
                "batch_size": batch,
                "step_loop_us_per_word": statistics.median(a for a, _ in rounds) * 1e6 / len(words),
                "greedy_graph_us_per_word": statistics.median(b for _, b in rounds) * 1e6 / len(words),
                "speedup": statistics.median(a / b for a, b in rounds),
            }
        )
    return rows


def _seconds(model: Any, words: list[str], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(words), batch):
        model.generate(words[start : start + batch], max_batch_size=batch)
    return time.perf_counter() - started


def run_cutover(args: argparse.Namespace) -> int:
    from s2s_export.data import cmudict_pairs

    words = sorted({pair.source for pair in cmudict_pairs("dev")})[: args.inputs]
    result = {
        "threads": args.threads,
        "repeats": args.repeats,
        "inputs": len(words),
        "bundles": {str(b): cutover(b, words, args.batch_sizes, args.repeats, args.threads) for b in args.bundles},
    }
    lines = [
        "# Greedy graph against the step loop",
        "",
        f"{args.threads} thread(s), {len(words)} CMUdict dev words per repeat, {args.repeats} repeats taking turns; "
        "µs per word (medians) and the median of the per-repeat speed-ups.",
        "",
        "| bundle | batch | step loop | greedy graph | speed-up |",
        "|---|---:|---:|---:|---:|",
    ]
    for bundle, rows in result["bundles"].items():
        lines += [
            f"| {bundle} | {r['batch_size']} | {r['step_loop_us_per_word']:.1f} | {r['greedy_graph_us_per_word']:.1f} "
            f"| {r['speedup']:.2f}× |"
            for r in rows
        ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cutover.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "cutover.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
