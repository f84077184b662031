"""`s2s bench BUNDLE [--checkpoint CKPT]`: this runtime against PyTorch eager and a hand-written onnxruntime loop."""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from s2s_runtime.bundle import Bundle

from . import report


def add_bench_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "bench",
        help="latency/throughput against PyTorch eager and a hand-written loop",
        description="Benchmark a bundle on the CPU. With --checkpoint (needs the export "
        "extra) it also exports the plain and int8 variants and runs PyTorch "
        "eager and a hand-written onnxruntime loop on the same weights.",
    )
    parser.add_argument("bundle", help="bundle directory")
    parser.add_argument("--checkpoint", type=Path, help="the checkpoint the bundle was exported from")
    parser.add_argument("--inputs", type=Path, help="one source per line (default: cmudict dev words)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--strategies", nargs="+", default=["greedy", "beam"], choices=["greedy", "beam"])
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="threads for every contender (default 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-sequences", type=int, default=256, help="sequences per repeat and batch size")
    parser.add_argument(
        "--mixes",
        nargs="+",
        default=["mixed", "equal"],
        choices=["mixed", "equal"],
        help="input mixes: the inputs as they come, and only inputs of their most common length (default both)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="directory for JSON, MD, PNG")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG (otherwise matplotlib is required)")
    parser.set_defaults(handler=run_bench)


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def input_mixes(sources: list[str], bundle: Bundle, mixes: list[str]) -> dict[str, list[str]]:
    """The inputs as they come ("mixed"), and those of the most common source length ("equal"), so that neither
    padding nor its absence hides in the figures."""
    by_length: dict[int, list[str]] = {}
    for source in sources:
        by_length.setdefault(len(bundle.source.vocab.split(source)), []).append(source)
    common = max(by_length.values(), key=len)
    return {mix: sources if mix == "mixed" else common for mix in mixes}


def load_inputs(path: Path | None, bundle: Bundle) -> tuple[list[str], str]:
    if path is not None:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()], str(path)
    try:
        from s2s_export.data import cmudict_pairs

        words = sorted({p.source for p in cmudict_pairs("dev")})
        random.Random(0).shuffle(words)
        return words, "cmudict dev words"
    except ImportError:  # no export extra: random strings from the source vocabulary
        rng = random.Random(0)
        symbols = [t for i, t in enumerate(bundle.source.vocab.tokens) if i not in bundle.source.special_ids.values()]
        return [bundle.source.vocab.join(rng.choices(symbols, k=8)) for _ in range(2048)], "random 8-symbol strings"


def run_bench(args: argparse.Namespace) -> int:
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit(
                "s2s bench: the PNG needs matplotlib (pip install 's2s-runtime[bench]'); --no-plot writes none"
            ) from None
    from .baselines import HandWrittenLoop, RuntimeContender, TorchEager
    from .latency import (
        FloorProbe,
        batch1_breakdown,
        decoder_flops_per_token,
        encoder_costs,
        encoder_flops_per_source_token,
        floor_per_token,
        frozen_heap,
        graphs_alone,
        matmul_gflops,
        median_floor,
    )

    bundle = Bundle.open(args.bundle)
    sources, described = load_inputs(args.inputs, bundle)
    contenders = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint is not None:
            from s2s_export.bundle_export import ExportOptions, export_bundle
            from s2s_export.checkpoint import load_checkpoint

            checkpoint = load_checkpoint(args.checkpoint)
            manifest = bundle.manifest

            def export(name: str, **options: Any) -> Path:  # the bundle's own limits, so all decode alike
                limits = dict(target_length_ratio=manifest.limits_ratio, target_length_offset=manifest.limits_offset)
                return export_bundle(
                    checkpoint,
                    Path(tmp) / name,
                    validation_sources=sources[:64],
                    options=ExportOptions(**limits, **options),
                )

            plain, int8 = export("plain", plain=True), export("int8", precision="int8")
            rnn_encoder = export("rnn-encoder", encoder_op="rnn")
            contenders += [TorchEager(checkpoint, args.threads), HandWrittenLoop(plain, args.threads, args.beam_size)]
            if openvino_available():  # what a CPU user picks instead of onnxruntime, on the same plain graphs
                contenders.append(HandWrittenLoop(plain, args.threads, args.beam_size, engine="OpenVINO"))
        contenders.append(
            RuntimeContender(report.RUNTIME_STEP_LOOP, Path(args.bundle), args.threads, args.beam_size, step_loop=True)
        )
        contenders.append(RuntimeContender(report.RUNTIME, Path(args.bundle), args.threads, args.beam_size))
        if args.checkpoint is not None:  # the export made for batch 1 (s2s export --encoder-op rnn), and int8
            contenders.append(RuntimeContender(report.RUNTIME_RNN_ENCODER, rnn_encoder, args.threads, args.beam_size))
            contenders.append(RuntimeContender("s2s-runtime int8", int8, args.threads, args.beam_size))
        matmul = matmul_gflops(args.threads)
        mixes = input_mixes(sources, bundle, args.mixes)
        plan = [  # contenders measured together take turns repeat by repeat
            (mix, s, b, [c for c in contenders if s in c.strategies])
            for mix in mixes
            for s in args.strategies
            for b in args.batch_sizes
        ]
        runtime = next(c for c in contenders if c.name == report.RUNTIME)
        alone = graphs_alone(runtime.model, sources, max(args.batch_sizes), matmul)
        encoders = {"optimized": Path(args.bundle)}
        if args.checkpoint is not None:
            encoders |= {"--encoder-op rnn": rnn_encoder, "plain": plain}
        encoder_cost = {
            name: encoder_costs(path, args.threads, sorted({1, max(args.batch_sizes)}))
            for name, path in encoders.items()
        }
        floor_probe = FloorProbe(runtime.model, args.threads)
        lengths = {}  # per mix: source positions and output tokens per sequence (eos included), for its floor
        for mix, chosen in mixes.items():
            sample = chosen[:256]
            greedy = runtime.decode(sample, "greedy")
            lengths[mix] = (
                sum(len(bundle.source.vocab.split(s)) + bundle.source_eos for s in sample) / len(sample),
                sum(len(ids) + finished for ids, finished in greedy) / len(greedy),
            )
        with frozen_heap():
            breakdown, breakdown_step_loop = (
                {
                    mix: batch1_breakdown(Path(args.bundle), chosen[:256], args.threads, args.repeats, greedy_graph)
                    for mix, chosen in mixes.items()
                }
                for greedy_graph in (True, False)
            )
            measurements, floor_timings = measure_plan(plan, mixes, lengths, floor_probe, args)
        machine_floor = median_floor(floor_timings or [floor_probe.measure()])
        machine_floor["by_mix"] = {mix: floor_per_token(machine_floor, *lengths[mix]) for mix in mixes}
    source_length = sum(len(bundle.source.vocab.split(s)) for s in sources[:1000]) / min(len(sources), 1000)
    step_flops = decoder_flops_per_token(bundle.manifest.config, source_length)
    encoder_flops = encoder_flops_per_source_token(bundle.manifest.config) * source_length
    for m in measurements:  # graph FLOP/s: the encoder once per sequence, the step once per token and beam
        beams = args.beam_size if m["strategy"] == "beam" else 1
        m["graph_gflops"] = (m["sequences_per_s"] * encoder_flops + m["tokens_per_s"] * beams * step_flops) / 1e9
        m["matmul_fraction"] = m["graph_gflops"] / matmul
    result = {
        "bundle": str(args.bundle),
        "threads": args.threads,
        "repeats": args.repeats,
        "inputs": described,
        "machine": {"matmul_gflops": matmul, "floor": machine_floor},
        "mixes": {mix: {"inputs": len(chosen)} for mix, chosen in mixes.items()},
        "decoder_flops_per_token": step_flops,
        "encoder_flops_per_sequence": encoder_flops,
        "source_tokens_per_sequence": source_length,
        "measurements": measurements,
        "ratios": report.ratios(measurements),
        "graphs_alone": alone,
        "batch1_breakdown": breakdown,
        "batch1_breakdown_step_loop": breakdown_step_loop,
        "encoder_costs": encoder_cost,
    }
    for path in report.write(result, args.out, plot_png=not args.no_plot):
        print(f"wrote {path}", file=sys.stderr)
    print(report.markdown(result))
    return 0


def measure_plan(plan: list, mixes: dict, lengths: dict, floor_probe: Any, args: argparse.Namespace) -> tuple:
    """Every (mix, strategy, batch size, contenders) of the plan measured, its contenders taking turns; at batch 1
    the floor is measured in every round among them and each row compared with the floor of its own rounds.
    Returns the rows and every floor measurement."""
    from tqdm import tqdm

    from .latency import floor_per_token, measure, median_floor

    measurements, floor_timings = [], []
    total = sum(len(group) for *_, group in plan) * args.repeats
    with tqdm(total=total, desc="bench", file=sys.stderr, disable=None) as progress:  # TTY only
        for mix, strategy, batch, group in plan:
            progress.set_postfix_str(f"{strategy} b={batch} {mix}")
            rounds: list[dict] = []
            measured = measure(
                group,
                mixes[mix],
                strategy,
                batch,
                repeats=args.repeats,
                min_sequences=args.min_sequences,
                progress=progress,
                each_round=(lambda found=rounds: found.append(floor_probe.measure())) if batch == 1 else None,
            )
            floor_timings += rounds
            floor_here = floor_per_token(median_floor(rounds), *lengths[mix]) if rounds else None
            for row in (m.to_dict() for m in measured):
                row["mix"] = mix
                if floor_here is not None:
                    row["floor_us_per_token"] = floor_here["us_per_token"]
                    row["vs_floor"] = row["us_per_token"] / floor_here["us_per_token"]
                    if floor_here["physical_us_per_token"] > 0:  # a graph with no dense weights has none
                        row["physical_floor_us_per_token"] = floor_here["physical_us_per_token"]
                        row["vs_physical_floor"] = row["us_per_token"] / floor_here["physical_us_per_token"]
                measurements.append(row)
    return measurements, floor_timings
