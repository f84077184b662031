"""`s2s train`, `s2s export`, `s2s convert` and `s2s eval`. This module imports no torch at import time, so
`s2s --help` works without the export extra; the commands themselves say how to install it when torch is missing."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .config import ENCODER_OPS, Seq2SeqConfig, TrainConfig

EXPORT_EXTRA_HINT = (
    "this command needs the export extra: pip install 's2s-runtime[export]' "
    "(on CPU-only machines first: pip install torch==2.13.0, the CPU wheel)"
)
MODEL_FLAG_FIELDS = [
    f for f in dataclasses.fields(Seq2SeqConfig) if f.name not in ("source_vocab_size", "target_vocab_size")
]


def require_torch() -> None:
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit(f"s2s: {EXPORT_EXTRA_HINT}") from None


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a model on a built-in task or TSV/JSONL files",
        description="Train a recurrent encoder-decoder; writes OUT/checkpoint (best by dev "
        "exact match), OUT/train_state.pt (for --resume) and OUT/metrics.json.",
    )
    data = parser.add_argument_group("data")
    data.add_argument("--preset", help="a named recipe (task, model and training settings; flags override): reverse")
    data.add_argument("--task", help="built-in task: reverse, sort, add, dates, cmudict, cmudict-stress")
    data.add_argument("--train", type=Path, help="training pairs (.tsv: source<TAB>target, or .jsonl)")
    data.add_argument("--dev", type=Path, help="dev pairs for early stopping (required with --train)")
    data.add_argument("--size", type=int, help="examples of a generated task (default 5000)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    model = parser.add_argument_group("model (Seq2SeqConfig fields)")
    for field in MODEL_FLAG_FIELDS:
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            model.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            model.add_argument(
                flag,
                type={"int": int, "float": float, "str": str}[field.type],
                default=None,
                help=f"default {field.default}",
            )
    optimisation = parser.add_argument_group("training (TrainConfig fields)")
    for field in dataclasses.fields(TrainConfig):
        if field.name == "progress":
            continue
        optimisation.add_argument(
            "--" + field.name.replace("_", "-"),
            dest="train_" + field.name,
            type={"int": int, "float": float, "str": str}[field.type],
            default=None,
            help=f"default {field.default}",
        )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_train)


def target_length_rule(text: str) -> tuple[float, int]:
    """`--max-target-length`: "N" (a fixed N tokens: ratio 0, offset N) or "RATIO,OFFSET".

    Examples:
        >>> target_length_rule("20"), target_length_rule("1.5,4")
        ((0.0, 20), (1.5, 4))
    """
    try:
        ratio, offset = text.split(",") if "," in text else ("0", text)
        return float(ratio), int(offset)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither N nor RATIO,OFFSET (e.g. 20, or 2,10)") from None


def target_length_options(rule: tuple[float, int] | None) -> dict:
    return {} if rule is None else {"target_length_ratio": rule[0], "target_length_offset": rule[1]}


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export",
        help="export a checkpoint to a bundle (parity-checked)",
        description="Write encoder.onnx, decoder_step.onnx, greedy.onnx (the two as one greedy decode), weights.bin "
        "(their weights, once), vocabularies and manifest.json, after checking them against PyTorch (and the greedy "
        "graph against the step loop).",
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint directory (e.g. OUT/checkpoint of s2s train)")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.add_argument("--validation", type=Path, help="TSV/JSONL whose sources feed the parity check")
    parser.add_argument("--task", help="built-in task whose dev sources feed the parity check")
    parser.add_argument("--max-source-length", type=int, default=1024)
    parser.add_argument(
        "--lexicon",
        type=Path,
        help="TSV of known inputs, key<TAB>output tokens (a key's lines are its variants, preferred first): "
        "answered without decoding (s2s_runtime.lexicon)",
    )
    parser.add_argument(
        "--target-view",
        action="append",
        default=[],
        metavar="NAME=REGEX",
        help="a view callers may ask for (--view NAME): each target token with what REGEX matches removed, e.g. "
        "no-stress='\\d' (repeatable)",
    )
    parser.add_argument(
        "--max-target-length",
        type=target_length_rule,
        metavar="N | RATIO,OFFSET",
        help="the bundle's default output-length rule: at most N tokens, or ceil(RATIO × source length + OFFSET) "
        "(default 2,10)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="straightforward graphs (ONNX GRU/LSTM ops, Gemm) instead of the optimized ones",
    )
    parser.add_argument(
        "--encoder-op",
        choices=ENCODER_OPS,
        default="auto",
        help="how the encoder runs its recurrence: scan (a Scan over the decoder's own cell; the faster GRU from "
        "batch 8 up, and what int8 needs), rnn (the ONNX GRU/LSTM op; the faster at batch 1), auto (scan for GRUs, "
        "rnn for LSTMs; default)",
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--quantize", choices=["int8"], help="int8 weights and calibrated static activation scales (CPU)"
    )
    precision.add_argument("--fp16", action="store_true", help="fp16 weights and arithmetic (CUDA)")
    parser.add_argument(
        "--parity-tolerance",
        type=float,
        help="|Δ|/max(1, |value|) always allowed against float64 PyTorch (default 1e-4; recorded in the manifest)",
    )
    parser.add_argument(
        "--no-greedy",
        dest="greedy",
        action="store_false",
        help="no greedy graph (the whole greedy decode in one onnxruntime call): greedy decoding runs step by step, "
        "and each graph keeps its own weights",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_export)


def add_convert_parser(commands: argparse._SubParsersAction) -> None:
    from .convert import FORMATS

    parser = commands.add_parser(
        "convert",
        help="convert a model trained with another tool into a checkpoint (then export it)",
        description="Map another tool's trained model onto this project's checkpoint format, exactly or not at all: "
        "what the model family cannot express is refused, naming the option. Writes the checkpoint and "
        "conversion.json (where it came from, how the tool decoded it, what differs).",
    )
    parser.add_argument("format", choices=sorted(FORMATS), help="the tool the model comes from")
    parser.add_argument(
        "source",
        type=Path,
        help="the tool's model file (g2p-en: g2p_en/checkpoint20.npz; keras: a .keras file; opennmt: a .pt file)",
    )
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument(
        "--tokens", type=Path, help="keras: JSON with the source and target tokens in index order (see the docs)"
    )
    parser.add_argument(
        "--export", type=Path, metavar="BUNDLE", help="then export it (parity-gated) to this bundle directory"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle (with --export)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_convert)


def add_eval_parser(commands: argparse._SubParsersAction) -> None:
    from s2s_runtime.cli import add_batching_flags, add_generation_flags

    parser = commands.add_parser(
        "eval",
        help="accuracy of a bundle through the runtime (WER, PER/CER)",
        description="Decode a task split or a TSV/JSONL file with the runtime and report "
        "exact match (WER = 1 - exact match), token accuracy and token error "
        "rate (PER for phonemes, CER for characters).",
    )
    parser.add_argument("bundle", help="bundle directory or built-in name")
    parser.add_argument("--task", help="built-in task (e.g. cmudict)")
    parser.add_argument("--split", default="test", choices=["train", "dev", "test"])
    parser.add_argument("--data", type=Path, help="TSV/JSONL pairs instead of a task")
    parser.add_argument("--limit", type=int, help="evaluate the first N distinct sources only")
    parser.add_argument("--errors", type=Path, help="write wrong predictions here (source, prediction, references)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_generation_flags(parser)
    add_batching_flags(parser)
    parser.set_defaults(handler=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    import s2s_runtime
    from s2s_runtime.cli import batching_options, generation_options

    from .data import DataError, read_pairs, task_pairs
    from .evaluate import evaluate_bundle, write_errors

    try:
        if args.data:
            pairs = read_pairs(args.data)
        elif args.task:
            pairs = task_pairs(args.task, args.split)
        else:
            raise SystemExit("s2s eval: give --task or --data")
    except DataError as error:
        raise SystemExit(f"s2s eval: {error}") from None
    if args.limit:
        keep = set(list(dict.fromkeys(p.source for p in pairs))[: args.limit])
        pairs = [p for p in pairs if p.source in keep]
    model = s2s_runtime.load(args.bundle, device=args.device, intra_op_threads=args.threads)
    evaluation = evaluate_bundle(
        model, pairs, options=generation_options(args), batching=batching_options(args), progress=not args.quiet
    )
    if args.errors:
        write_errors(evaluation.errors, args.errors)
    metrics = evaluation.metrics
    print(
        json.dumps(
            {
                "bundle": str(args.bundle),
                "data": str(args.data or f"{args.task}/{args.split}"),
                "sources": metrics.count,
                "wer": metrics.wer,
                "exact_match": metrics.exact_match,
                "token_accuracy": metrics.token_accuracy,
                "error_rate": metrics.error_rate,
            },
            indent=1,
        )
    )
    return 0


def add_upgrade_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "upgrade",
        help="rewrite a bundle of an earlier revision with a greedy graph (no checkpoint needed)",
        description="Write BUNDLE to OUT in the current format: its own graphs unchanged, plus the greedy graph "
        "composed from them (checked against the step loop) and the weights stored once in weights.bin.",
    )
    parser.add_argument("bundle", help="bundle directory or built-in name")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    parser.set_defaults(handler=run_upgrade)


def run_upgrade(args: argparse.Namespace) -> int:
    require_torch()
    from s2s_runtime.bundle import BundleError

    from .parity import ParityError
    from .upgrade import upgrade_bundle

    try:
        out = upgrade_bundle(args.bundle, args.out)
    except (BundleError, ParityError, FileExistsError, ValueError) as error:
        raise SystemExit(f"s2s upgrade: {error}") from None
    print(f"wrote {out}", file=sys.stderr)
    return 0


def add_average_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "average",
        help="average the weights of checkpoints of one training run",
        description="Write the element-wise mean of several checkpoints (e.g. OUT/epochs/* kept by `s2s train "
        "--keep-epochs K`) as one checkpoint, the input of `s2s export`.",
    )
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint directories of one run")
    parser.add_argument("--out", type=Path, required=True, help="output checkpoint directory")
    parser.set_defaults(handler=run_average)


def run_average(args: argparse.Namespace) -> int:
    require_torch()
    from .average import average_checkpoints
    from .checkpoint import CheckpointError, save_checkpoint

    try:
        save_checkpoint(average_checkpoints(args.checkpoints), args.out)
    except (CheckpointError, ValueError) as error:
        raise SystemExit(f"s2s average: {error}") from None
    print(json.dumps({"checkpoint": str(args.out), "averaged": [str(c) for c in args.checkpoints]}, indent=1))
    return 0


def run_train(args: argparse.Namespace) -> int:
    require_torch()
    from .config import ConfigError
    from .data import CMUDICT_TASKS, DataError, read_pairs, task_pairs
    from .presets import get_preset
    from .train import train

    model_options = {f.name: getattr(args, f.name) for f in MODEL_FLAG_FIELDS if getattr(args, f.name) is not None}
    train_options = {
        f.name: getattr(args, "train_" + f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name != "progress" and getattr(args, "train_" + f.name) is not None
    }
    try:
        task, size = args.task, args.size
        if args.preset:
            preset = get_preset(args.preset)
            model_options = {**preset.model, **model_options}
            train_options = {**preset.train, **train_options}
            task, size = task or preset.task, size or preset.size
        if task:
            seed = train_options.get("seed", 0)
            train_pairs = task_pairs(task, "train", size=size or 5000, seed=seed)
            dev_pairs = task_pairs(task, "dev", size=size or 5000, seed=seed)
            if task in CMUDICT_TASKS:
                train_options.setdefault("target_tokenizer", "space")
        elif args.train and args.dev:
            train_pairs, dev_pairs = read_pairs(args.train), read_pairs(args.dev)
        else:
            raise SystemExit("s2s train: give --preset, --task, or both --train and --dev")
        config = TrainConfig(progress=not args.quiet, **train_options)
        result = train(
            train_pairs, dev_pairs, args.out, model_options=model_options, train_config=config, resume=args.resume
        )
    except (ConfigError, DataError, ValueError) as error:
        raise SystemExit(f"s2s train: {error}") from None
    print(
        json.dumps(
            {
                "checkpoint": str(result.checkpoint_dir),
                "epochs": result.epochs_run,
                "seconds": round(result.seconds, 1),
                "dev": result.dev.to_dict(),
            },
            indent=1,
        )
    )
    return 0


def run_convert(args: argparse.Namespace) -> int:
    require_torch()
    import time

    from .bundle_export import ExportOptions, export_bundle
    from .convert import REPORT_FILE, ConversionError, convert
    from .parity import ParityError

    started = time.perf_counter()
    try:
        conversion = convert(args.format, args.source, args.out, tokens=args.tokens)
        print(
            f"wrote {args.out} ({time.perf_counter() - started:.1f} s; report: {args.out / REPORT_FILE})",
            file=sys.stderr,
        )
        for key, value in conversion.report.get("decoding", {}).items():
            print(f"  {args.format} decodes with {key}: {value}", file=sys.stderr)
        for difference in conversion.report.get("differences", []):
            print(f"  differs: {difference}", file=sys.stderr)
        if args.export:
            options = ExportOptions(overwrite=args.overwrite, progress=not args.quiet, **conversion.export_options)
            out = export_bundle(
                args.out, args.export, validation_sources=conversion.validation_sources, options=options
            )
            parity = json.loads((out / "manifest.json").read_text())["parity"]
            print(
                f"wrote {out} (parity against float64 PyTorch: max |Δ|/max(1, |value|) {parity['max_scaled_diff']:.2e}"
                f" over {parity['checks']} checks; {time.perf_counter() - started:.1f} s in all)",
                file=sys.stderr,
            )
    except (ConversionError, ParityError, FileExistsError, ValueError) as error:
        raise SystemExit(f"s2s convert: {error}") from None
    return 0


def run_export(args: argparse.Namespace) -> int:
    require_torch()
    from .bundle_export import ExportOptions, export_bundle
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError, read_pairs, task_pairs
    from .parity import ParityError

    try:
        sources = None
        if args.validation:
            sources = [p.source for p in read_pairs(args.validation)]
        elif args.task:
            sources = [p.source for p in task_pairs(args.task, "dev")]
        out = export_bundle(
            args.checkpoint,
            args.out,
            validation_sources=sources,
            options=ExportOptions(
                max_source_length=args.max_source_length,
                **target_length_options(args.max_target_length),
                overwrite=args.overwrite,
                plain=args.plain,
                encoder_op=args.encoder_op,
                precision="int8" if args.quantize else "float16" if args.fp16 else "float32",
                progress=not args.quiet,
                parity_tolerance=args.parity_tolerance,
                greedy=args.greedy,
            ),
        )
        for view in args.target_view:
            from .views import attach_target_view

            name, equals, pattern = view.partition("=")
            if not equals:
                raise ValueError(f"--target-view: expected NAME=REGEX, got {view!r}")
            attach_target_view(out, name, pattern)
        if args.lexicon:
            from .lexicon import attach_lexicon, read_lexicon

            known = attach_lexicon(out, read_lexicon(args.lexicon))
            print(f"lexicon: {known} known inputs", file=sys.stderr)
    except (CheckpointError, ConfigError, DataError, ParityError, FileExistsError, ValueError) as error:
        raise SystemExit(f"s2s export: {error}") from None
    manifest = json.loads((out / "manifest.json").read_text())
    print(
        f"wrote {out} (parity max |Δ| {manifest['parity']['max_abs_diff']:.2e} over "
        f"{manifest['parity']['checks']} checks)",
        file=sys.stderr,
    )
    if "quality" in manifest:
        print(f"{manifest['precision']} against float32: {json.dumps(manifest['quality'])}", file=sys.stderr)
    return 0
