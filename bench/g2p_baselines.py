"""`s2s bench-g2p`: a G2P bundle against its peers on one CMUdict split, with and without stress — the model card's
comparison table, measured by one command.

Systems: the bundle through the runtime with its lexicon off (the model alone), g2p_en 2.1's own GRU (its `predict`,
not its dictionary lookup), and a Phonetisaurus WFST (8-gram, the `phonetisaurus` package's defaults) trained on the
train split. Each is scored on the stress-marked references, and again with every stress digit removed from
predictions and references (the 39-phoneme task). g2p_en and phonetisaurus are not dependencies of this project:

    pip install --no-deps g2p_en==2.1.0 && pip install phonetisaurus    # then:
    s2s bench-g2p g2p-en --out bench/results/g2p-baselines

A system whose package is missing is left out (and said so). g2p_en imports nltk and inflect (downloading data) but
its model uses neither: both are stubbed, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Predictor = Callable[[Sequence[str]], dict[str, list[str]]]  # words → their predicted phonemes
_STRESS = re.compile(r"\d")


def add_g2p_bench_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench-g2p", help="a G2P bundle against g2p_en and Phonetisaurus on CMUdict")
    parser.add_argument("bundle", help="a stress-marked G2P bundle (directory or built-in name)")
    parser.add_argument("--split", default="test", choices=["dev", "test"])
    parser.add_argument("--limit", type=int, help="the first N words of the split only")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.set_defaults(handler=run_g2p_bench)


def scores(predictions: dict[str, list[str]], references: dict[str, list[list[str]]]) -> dict:
    """WER and PER (%) with stress, and with every stress digit removed from both sides."""
    from s2s_export.metrics import score_predictions

    def unstressed(tokens: Sequence[str]) -> list[str]:
        return [_STRESS.sub("", token) for token in tokens]

    stress = score_predictions(predictions, references)
    plain = score_predictions(
        {w: unstressed(p) for w, p in predictions.items()},
        {w: [unstressed(r) for r in refs] for w, refs in references.items()},
    )
    return {
        "words": stress.count,
        "stress_wer": 100 * stress.wer,
        "stress_per": 100 * stress.error_rate,
        "wer": 100 * plain.wer,
        "per": 100 * plain.error_rate,
    }


def bundle_predictor(bundle: str) -> Predictor:
    import s2s_runtime

    model = s2s_runtime.load(bundle, device="cpu")

    def predict(words: Sequence[str]) -> dict[str, list[str]]:
        results = model.generate(list(words), use_lexicon=False, max_batch_size=64)
        return {word: result.tokens for word, result in zip(words, results, strict=True)}

    return predict


def g2p_en_model() -> Any:
    """g2p_en 2.1's `G2p` without its dictionary (the model alone), its import-time needs (nltk data, inflect)
    stubbed: its model uses neither, and nothing is downloaded."""
    for name in ("nltk", "nltk.corpus", "nltk.tokenize", "inflect"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["inflect"].engine = lambda: None  # type: ignore[attr-defined]
    sys.modules["nltk"].pos_tag = None  # type: ignore[attr-defined]
    sys.modules["nltk"].data = types.SimpleNamespace(find=lambda _: True)  # type: ignore[attr-defined]
    sys.modules["nltk.corpus"].cmudict = None  # type: ignore[attr-defined]
    sys.modules["nltk.tokenize"].TweetTokenizer = lambda: types.SimpleNamespace(tokenize=None)  # type: ignore[attr-defined]
    from g2p_en.g2p import G2p

    model = G2p.__new__(G2p)
    G2p.__init__.__globals__["cmudict"] = types.SimpleNamespace(dict=dict)  # no dictionary: the model alone
    G2p.__init__(model)
    return model


def g2p_en_predictor() -> Predictor:
    model = g2p_en_model()
    return lambda words: {word: model.predict(word) for word in words}


def phonetisaurus_predictor(train: dict[str, list[list[str]]], directory: Path) -> Predictor:
    import phonetisaurus

    model = directory / "phonetisaurus.fst"
    phonetisaurus.train(train, model)

    def predict(words: Sequence[str]) -> dict[str, list[str]]:
        found = dict(phonetisaurus.predict(words, model))
        return {word: found.get(word, []) for word in words}  # a word it gives nothing for counts as wrong

    return predict


def run_g2p_bench(args: argparse.Namespace) -> int:
    from s2s_export.data import cmudict_pairs
    from s2s_export.metrics import group_references

    references = group_references(cmudict_pairs(args.split, stress=True), str.split)
    words = list(references)[: args.limit]
    references = {word: references[word] for word in words}
    systems: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        makers: dict[str, Callable[[], Predictor]] = {
            f"{args.bundle} (model alone, through the runtime)": lambda: bundle_predictor(args.bundle),
            "g2p_en 2.1 (its GRU)": g2p_en_predictor,
            "Phonetisaurus (8-gram WFST, trained on the train split)": lambda: phonetisaurus_predictor(
                group_references(cmudict_pairs("train", stress=True), str.split), Path(tmp)
            ),
        }
        for name, make in makers.items():
            try:
                started = time.perf_counter()
                predictor = make()
                trained = time.perf_counter() - started
            except ImportError as error:
                print(f"s2s bench-g2p: {name} left out ({error})", file=sys.stderr)
                continue
            started = time.perf_counter()
            predictions = predictor(words)
            systems[name] = {
                **scores(predictions, references),
                "setup_s": trained,
                "predict_s": time.perf_counter() - started,
            }
    result = {"split": args.split, "words": len(words), "systems": systems}
    lines = [
        f"# G2P on CMUdict's {args.split} split ({len(words)} words, `cmudict_pairs`)",
        "",
        "A word is right if it equals any of its pronunciations; PER against the closest one. Stress-free: every "
        "stress digit removed from predictions and references.",
        "",
        "| system | WER % | PER % | stress-free WER % | stress-free PER % |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {name} | {s['stress_wer']:.2f} | {s['stress_per']:.2f} | {s['wer']:.2f} | {s['per']:.2f} |"
        for name, s in systems.items()
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "g2p.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "g2p.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0
