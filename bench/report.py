"""Bench reports: JSON (everything), a Markdown table with ratios against the baselines, a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

RUNTIME = "s2s-runtime fp32"
RUNTIME_STEP_LOOP = "s2s-runtime fp32, step loop"  # the same bundle without its greedy graph: a step per call
RUNTIME_RNN_ENCODER = "s2s-runtime fp32, --encoder-op rnn"
RUNTIME_PREFIX = "s2s-runtime"  # the runtime's variants: fp32, int8


def ratios(measurements: list[dict]) -> list[dict]:
    """For each (input mix, strategy, batch size) and each variant of this runtime: its speed-up per token and in
    sequences/s over each baseline and over the variants measured before it (int8 over fp32)."""
    rows = []
    keyed = {(m["contender"], m["strategy"], m["batch_size"], m.get("mix", "mixed")): m for m in measurements}
    names = list(dict.fromkeys(m["contender"] for m in measurements))  # in measurement order
    for position, runtime in enumerate(names):
        if not runtime.startswith(RUNTIME_PREFIX):
            continue
        others = [n for n in names if not n.startswith(RUNTIME_PREFIX)] + [
            n for n in names[:position] if n.startswith(RUNTIME_PREFIX)
        ]
        for (name, strategy, batch, mix), m in keyed.items():
            ours = keyed.get((runtime, strategy, batch, mix))
            if ours is None or name not in others:
                continue
            rows.append(
                {
                    "runtime": runtime,
                    "mix": mix,
                    "strategy": strategy,
                    "batch_size": batch,
                    "versus": name,
                    "per_token_speedup": m["us_per_token"] / ours["us_per_token"],
                    "throughput_ratio": ours["sequences_per_s"] / m["sequences_per_s"],
                }
            )
    return rows


def markdown(result: dict) -> str:
    lines = [
        f"# s2s bench — {result['bundle']}",
        "",
        f"{result['threads']} thread(s); {result['machine']['matmul_gflops']:.1f} GFLOP/s single-thread fp32 "
        f"matmul measured in the same run; {result['repeats']} repeats (medians); inputs: {result['inputs']} "
        "(mixed: as they come; equal: only those of their most common length).",
    ]
    machine_floor = result["machine"].get("floor")
    if machine_floor:
        per_mix = "; ".join(
            f"{mix} {f['us_per_token']:.1f} µs/token ({f['source_tokens_per_sequence']:.1f} source positions per "
            f"{f['target_tokens_per_sequence']:.1f} output tokens)"
            for mix, f in machine_floor["by_mix"].items()
        )
        lines += [
            "",
            f"Floor at batch 1, measured in every round of the batch-1 rows (medians here): {per_mix} = one "
            "session.run of an empty graph "
            f"({machine_floor['empty_run_us']:.1f} µs) per token and per sequence, plus "
            f"{machine_floor['step_weight_bytes'] / 1e3:.0f} kB of step weights per token and "
            f"{machine_floor['encoder_weight_bytes_per_position'] / 1e3:.0f} kB of encoder weights per source "
            f"position at {machine_floor['bandwidth_gb_per_s']:.0f} GB/s (a matrix-vector product of the step's "
            "size). × floor: µs/token over the floor measured in the same rounds, for its mix; × physical: over the "
            "weight reads alone (the physical floor: no call cost at all).",
        ]
    lines += [
        "",
        "| contender | mix | strategy | batch | p50 ms | p90 ms | p99 ms | µs/token | × floor | × physical | "
        "sequences/s | tokens/s | graph GFLOP/s | % of matmul |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in result["measurements"]:
        floor_multiple = f"{m['vs_floor']:.1f}×" if "vs_floor" in m and m["batch_size"] == 1 else ""
        physical = f"{m['vs_physical_floor']:.1f}×" if "vs_physical_floor" in m and m["batch_size"] == 1 else ""
        lines.append(
            f"| {m['contender']} | {m.get('mix', 'mixed')} | {m['strategy']} | {m['batch_size']} | {m['p50_ms']:.2f} | "
            f"{m['p90_ms']:.2f} | {m['p99_ms']:.2f} | {m['us_per_token']:.1f} | {floor_multiple} | {physical} | "
            f"{m['sequences_per_s']:.0f} | {m['tokens_per_s']:.0f} | {m.get('graph_gflops', 0):.2f} | "
            f"{100 * m.get('matmul_fraction', 0):.0f}% |"
        )
    alone = result.get("graphs_alone")
    if alone:
        lines += [
            "",
            f"{RUNTIME}, graphs alone at batch {alone['batch_size']} (no search around them): the encoder "
            f"(in its length groups) {alone['encoder_ms']:.2f} ms, {alone['encoder_gflops']:.1f} GFLOP/s = "
            f"{100 * alone['encoder_matmul_fraction']:.0f}% of matmul; one decoder step "
            f"{alone['step_us']:.0f} µs, {alone['step_gflops']:.1f} GFLOP/s = "
            f"{100 * alone['step_matmul_fraction']:.0f}% of matmul.",
        ]
    costs = result.get("encoder_costs", {})
    if costs:
        said = "; ".join(
            f"batch {batch}: "
            + ", ".join(
                f"{name} {per_batch[batch]['one_position_us']:.1f} µs for one source position and "
                f"{per_batch[batch]['per_position_us']:.1f} µs per position more"
                for name, per_batch in costs.items()
            )
            for batch in next(iter(costs.values()))
        )
        lines += [
            "",
            f"Encoder graphs alone, equal-length inputs (--encoder-op rnn and the plain export run the ONNX GRU/LSTM "
            f"op): {said}.",
        ]
    floors = (result["machine"].get("floor") or {}).get("by_mix", {})
    for route, key in (("", "batch1_breakdown"), (" (step loop)", "batch1_breakdown_step_loop")):
        for mix, parts in result.get(key, {}).items():
            spent, floor_parts = parts["us_per_token"], floors.get(mix)
            against = (
                f"; the floor's: encoder weights {floor_parts['encoder_weights_us']:.1f}, step weights "
                f"{floor_parts['step_weights_us']:.1f}, calls {floor_parts['calls_us']:.1f}"
                if floor_parts
                else ""
            )
            graph = f"greedy graph {spent['greedy_graph']:.1f} + " if spent.get("greedy_graph") else ""
            lines += [
                "",
                f"Where {RUNTIME}{route}'s time goes at batch 1 ({mix} inputs, one generate call per input): "
                f"{spent['total']:.1f} µs/token = {graph}encoder {spent['encoder']:.1f} + decoder step "
                f"{spent['step']:.1f} + the runtime's own Python {spent['python']:.1f}{against}.",
            ]
    lines += [
        "",
        "| runtime | mix | strategy | batch | versus | per-token speed-up | throughput ratio |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for r in result["ratios"]:
        lines.append(
            f"| {r['runtime']} | {r.get('mix', 'mixed')} | {r['strategy']} | {r['batch_size']} | {r['versus']} | "
            f"{r['per_token_speedup']:.2f}× | {r['throughput_ratio']:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Latency and throughput against batch size (matplotlib): one row of panels per input mix, one colour per
    contender (the same in every panel), one line style per strategy, the legend beside the panels, not over them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = sorted({m.get("mix", "mixed") for m in result["measurements"]})
    contenders = list(dict.fromkeys(m["contender"] for m in result["measurements"]))
    strategies = list(dict.fromkeys(m["strategy"] for m in result["measurements"]))
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(contenders)}
    styles = {s: ("-", "--", ":", "-.")[i % 4] for i, s in enumerate(strategies)}
    figure, axes = plt.subplots(len(mixes), 2, figsize=(12, 3.6 * len(mixes)), squeeze=False)
    for row, mix in enumerate(mixes):
        latency, throughput = axes[row]
        for contender in contenders:
            for strategy in strategies:
                points = sorted(
                    (
                        m
                        for m in result["measurements"]
                        if m["contender"] == contender and m["strategy"] == strategy and m.get("mix", "mixed") == mix
                    ),
                    key=lambda m: m["batch_size"],
                )
                if not points:
                    continue
                batches = [m["batch_size"] for m in points]
                style = dict(color=colours[contender], linestyle=styles[strategy], marker="o", markersize=3)
                latency.plot(batches, [m["us_per_token"] for m in points], **style)
                throughput.plot(batches, [m["sequences_per_s"] for m in points], **style)
        for axis, title in ((latency, "µs per generated token"), (throughput, "sequences per second")):
            axis.set_xscale("log", base=2)
            axis.set_yscale("log")
            axis.set_xlabel("batch size")
            axis.set_title(f"{title} — {mix} inputs")
            axis.grid(True, which="both", alpha=0.3)
    handles = [plt.Line2D([], [], color=colours[c], label=c) for c in contenders]
    handles += [plt.Line2D([], [], color="black", linestyle=styles[s], label=s) for s in strategies]
    figure.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def write(result: dict, out_dir: Path, *, plot_png: bool = True) -> list[Path]:
    """bench.json, bench.md and (unless plot_png is False) bench.png; a missing matplotlib is an ImportError."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "bench.json", out_dir / "bench.md"]
    written[0].write_text(json.dumps(result, indent=1) + "\n")
    written[1].write_text(markdown(result))
    if plot_png:
        plot(result, out_dir / "bench.png")
        written.append(out_dir / "bench.png")
    return written
