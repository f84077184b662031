"""`s2s bench-train`: training step time of the presets' models at each torch thread count, in the same run.

For each preset the model is built at the preset's size and batch, and the thread counts take turns over the
repeats (so machine load hits them alike); each repeat times `--steps` optimizer steps on fixed random batches of
typical lengths. The ratio column is each count's speed-up over one thread — the measurement behind
`s2s_export.train.training_threads`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

# Typical (source, target) lengths of each preset's task, for batches of realistic shape.
TASK_LENGTHS = {"reverse": (8, 9), "cmudict": (9, 8), "cmudict-stress": (9, 8)}
VOCAB_SIZES = (32, 80)


def add_train_bench_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench-train", help="training step time per torch thread count, per preset")
    parser.add_argument("--presets", nargs="+", default=["reverse", "g2p-en"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.set_defaults(handler=run_train_bench)


def step_times(preset_name: str, thread_counts: list[int], steps: int, repeats: int) -> dict:
    """Median seconds per training step at each thread count, and the model's size."""
    import torch
    from torch import nn

    from s2s_export.config import Seq2SeqConfig
    from s2s_export.model import Seq2Seq
    from s2s_export.presets import get_preset

    preset = get_preset(preset_name)
    source_length, target_length = TASK_LENGTHS[preset.task]
    config = Seq2SeqConfig.from_dict(
        {**preset.model, "source_vocab_size": VOCAB_SIZES[0], "target_vocab_size": VOCAB_SIZES[1]},
        origin=f"preset {preset_name}",
    )
    batch = preset.train["batch_size"]
    torch.manual_seed(0)
    model = Seq2Seq(config).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sources = torch.randint(4, VOCAB_SIZES[0], (batch, source_length))
    lengths = torch.full((batch,), source_length)
    target_in, target_out = (torch.randint(4, VOCAB_SIZES[1], (batch, target_length)) for _ in range(2))
    loss_fn = nn.NLLLoss()

    def step() -> None:
        log_probs = model(sources, lengths, target_in)  # (batch, target_length, vocab)
        loss = loss_fn(log_probs.flatten(0, 1), target_out.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    before = torch.get_num_threads()
    times: dict[int, list[float]] = {threads: [] for threads in thread_counts}
    try:
        for _ in range(repeats):
            for threads in thread_counts:
                torch.set_num_threads(threads)
                step()  # warm-up at this thread count
                started = time.perf_counter()
                for _ in range(steps):
                    step()
                times[threads].append((time.perf_counter() - started) / steps)
    finally:
        torch.set_num_threads(before)
    medians = {threads: statistics.median(values) for threads, values in times.items()}
    one = medians.get(1, medians[thread_counts[0]])
    return {
        "preset": preset_name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "batch": batch,
        "rows": [
            {"threads": t, "ms_per_step": round(m * 1e3, 2), "speedup_vs_1_thread": round(one / m, 2)}
            for t, m in medians.items()
        ],
    }


def markdown(results: list[dict]) -> str:
    lines = ["| preset | parameters | batch | threads | ms/step | speed-up vs 1 thread |", "|---|---|---|---|---|---|"]
    for result in results:
        for row in result["rows"]:
            lines.append(
                f"| {result['preset']} | {result['parameters']:,} | {result['batch']} | {row['threads']} | "
                f"{row['ms_per_step']} | {row['speedup_vs_1_thread']}× |"
            )
    return "\n".join(lines) + "\n"


def run_train_bench(args: argparse.Namespace) -> int:
    results = [step_times(name, args.threads, args.steps, args.repeats) for name in args.presets]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-train.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "bench-train.md").write_text(markdown(results))
    print(markdown(results))
    return 0
