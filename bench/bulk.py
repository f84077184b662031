"""`s2s bench-bulk BUNDLE`: bulk decoding throughput — a plain single-process `generate` loop against `s2s bulk`
with 1 and N local workers and against Ray Data with 1 and N actors, over the same words (CMUdict by default).

Every contender writes (or returns) one output per word; all are checked against the plain loop's texts. Wall
rates include each contender's start-up (processes, model loads, Ray's actors); for Ray Data the steady rate — rows
after the first batch of results over the time since it — is reported apart, as is the time to that first result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def add_bulk_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench-bulk", help="bulk throughput: plain loop vs s2s bulk workers vs Ray Data")
    parser.add_argument("bundle", help="bundle directory or built-in name")
    parser.add_argument("--words", type=int, default=100_000, help="how many words (CMUdict, cycled if fewer)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="N for workers and actors")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray Data rows")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.set_defaults(handler=run_bench_bulk)


def corpus(count: int) -> list[str]:
    from s2s_export.data import cmudict_pairs

    words = sorted({p.source for split in ("train", "dev", "test") for p in cmudict_pairs(split)})
    return [words[i % len(words)] for i in range(count)]


def run_bench_bulk(args: argparse.Namespace) -> int:
    import s2s_runtime
    from s2s_runtime.serving.bulk import BulkJob, run

    words = corpus(args.words)
    rows = []
    model = s2s_runtime.load(args.bundle, device="cpu", intra_op_threads=1)
    started = time.perf_counter()
    expected = [r.text for r in model.generate(words, max_batch_size=64)]
    rows.append(_row("plain generate loop (1 process, 1 thread)", len(words), time.perf_counter() - started, 1))
    print(rows[-1], file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "words.txt"
        source.write_text("\n".join(words) + "\n")
        for workers in sorted({1, args.workers}):
            out = Path(tmp) / f"bulk{workers}.jsonl"
            started = time.perf_counter()
            run(BulkJob(str(source), str(out), args.bundle), workers=workers, progress=False)
            rows.append(
                _row(
                    f"s2s bulk --workers {workers}",
                    len(words),
                    time.perf_counter() - started,
                    workers,
                    _texts(out) == expected,
                )
            )
            print(rows[-1], file=sys.stderr)
        if not args.no_ray:
            for actors in sorted({1, args.workers}):
                rows.append(_ray_row(args.bundle, words, expected, actors))
                print(rows[-1], file=sys.stderr)
    plain = rows[0]["words_per_s"]
    for row in rows:
        row["vs_plain_loop"] = round(row["words_per_s"] / plain, 3)
        if "steady_words_per_s" in row:
            row["steady_vs_plain_loop_per_cpu"] = round(row["steady_words_per_s"] / row["cpus"] / plain, 3)
    result = {"bundle": args.bundle, "words": len(words), "machine_cpus": os.cpu_count(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-bulk.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "bench-bulk.png")
    print(json.dumps(result, indent=1))
    return 0


def _row(name: str, words: int, seconds: float, cpus: float, identical: bool = True) -> dict:
    return {
        "contender": name,
        "seconds": round(seconds, 2),
        "words_per_s": round(words / seconds, 1),
        "cpus": cpus,
        "outputs_identical": identical,
    }


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text().splitlines()]


def _ray_row(bundle: str, words: list[str], expected: list[str], actors: int) -> dict:
    """Ray Data over the words with `actors` Predictor actors; the cluster is started for it and stopped after. Each
    actor gets an equal share of the CPUs but one (Ray Data's read tasks need one free, or the job hangs)."""
    import ray

    import s2s_runtime.serving.ray as s2s_ray
    from s2s_runtime.serving.ray.serving import start_ray

    start_ray(None, haproxy=False)
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        per_actor = max(min(1.0, (cpus - 1) / actors), 0.25) if cpus > 1 else 0.5
        started = time.perf_counter()
        dataset = ray.data.from_items([{"id": i, "word": w} for i, w in enumerate(words)]).map_batches(
            s2s_ray.Predictor,
            fn_constructor_kwargs={"bundle": bundle, "column": "word", "threads": 1},
            concurrency=actors,
            num_cpus=per_actor,
            batch_size=256,
        )
        texts, first, first_rows = {}, None, 0
        # Batches, not rows: the driver shares the machine's cores with the actors, and a Python loop over 100k
        # rows would take CPU time from them.
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            if first is None:
                first, first_rows = time.perf_counter(), len(batch["id"])
            texts.update(zip(batch["id"].tolist(), batch["text"].tolist(), strict=True))
        finished = time.perf_counter()
    finally:
        ray.shutdown()
    row = _row(
        f"Ray Data, {actors} actor(s) × {per_actor:g} CPU",
        len(words),
        finished - started,
        actors * per_actor,
        [texts.get(i) for i in range(len(words))] == expected,
    )
    row["first_result_s"] = round(first - started, 2)
    row["steady_words_per_s"] = round((len(words) - first_rows) / max(finished - first, 1e-9), 1)
    return row


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    figure, axis = plt.subplots(figsize=(7, 3.5))
    names = [r["contender"] for r in rows]
    axis.barh(names, [r["words_per_s"] for r in rows], label="wall (start-up included)")
    steady = [r.get("steady_words_per_s", 0) for r in rows]
    if any(steady):
        axis.barh(names, steady, height=0.3, label="Ray Data steady rate")
    axis.set_xlabel("words/s")
    axis.invert_yaxis()
    axis.set_title(f"bulk decoding, {result['words']} words, {result['machine_cpus']} CPUs")
    axis.legend(loc="lower right")
    axis.grid(True, axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
