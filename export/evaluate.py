"""`s2s eval`: accuracy of a bundle through the runtime (not PyTorch): WER, token accuracy and PER/CER."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from s2s_runtime import BatchingOptions, GenerationOptions, Seq2SeqModel

from .data import Pair
from .metrics import Metrics, group_references, score_predictions


@dataclass
class Evaluation:
    metrics: Metrics
    errors: list[tuple[str, str, list[str]]]  # (source, prediction, references) for every wrong prediction


def evaluate_bundle(
    model: Seq2SeqModel,
    pairs: Sequence[Pair],
    *,
    options: GenerationOptions | None = None,
    batching: BatchingOptions | None = None,
    chunk_size: int = 256,
    progress: bool = True,
) -> Evaluation:
    """Decode every distinct source with the runtime and score it against all its references (a prediction is
    correct if it matches any of them; edit distance is taken to the closest).

    Examples:
        >>> evaluate_bundle(s2s_runtime.load("g2p-en"), cmudict_pairs("test")).metrics.wer  # doctest: +SKIP
    """
    from tqdm import tqdm

    vocab = model.bundle.target.vocab
    references = group_references(pairs, vocab.split)
    sources = list(references)
    predictions: dict[str, list[str]] = {}
    bar_off = None if progress else True  # tqdm: None shows the bar only on a terminal
    with tqdm(total=len(sources), desc="eval", unit="input", disable=bar_off) as bar:
        for start in range(0, len(sources), chunk_size):
            chunk = sources[start : start + chunk_size]
            for source, result in zip(chunk, model.generate(chunk, options=options, batching=batching), strict=True):
                predictions[source] = result.tokens
            bar.update(len(chunk))
    errors = [
        (s, vocab.join(predictions[s]), [vocab.join(r) for r in references[s]])
        for s in sources
        if not any(predictions[s] == r for r in references[s])
    ]
    return Evaluation(score_predictions(predictions, references), errors)


def write_errors(errors: list[tuple[str, str, list[str]]], path: Path) -> None:
    """One line per wrong prediction: source<TAB>prediction<TAB>references joined by ' | '."""
    path.write_text("".join(f"{s}\t{p}\t{' | '.join(r)}\n" for s, p, r in errors), encoding="utf-8")
