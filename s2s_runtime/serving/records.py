"""Output records: the one place a Result (or the error an input caused) becomes the flat row that bulk jobs write
and the Ray predictor returns as columns — index, source, text, tokens, score, finished, error, and with an n-best
the hypotheses and their scores. `decode_records` decodes sources into records; a source the model refuses gets its
error instead of a result, so a bad row never stops a job and never goes missing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..batching import BatchingOptions
from ..model import Seq2SeqModel
from ..plan import DecodingPlan
from ..results import Result
from .bulk_files import RowError

# The output columns of a record; unknown_source_tokens: input symbols not in the source vocabulary (mapped to unk).
# origin: "model" (decoded) or "lexicon" (the bundle's lexicon knew the input).
COLUMNS = ("text", "tokens", "score", "finished", "unknown_source_tokens", "origin", "error")
N_BEST_COLUMNS = ("hypotheses", "hypothesis_scores")  # added when num_hypotheses > 1


def record(index: int, source: Any, result: Result | None, error: str | None, n_best: bool) -> dict:
    """The record of one input: its result's fields, or its error."""
    row = {
        "index": index,
        "source": source if isinstance(source, (str, list)) else None,
        "text": None,
        "tokens": [],
        "score": None,
        "finished": False,
        "unknown_source_tokens": 0,
        "origin": None,
        "error": error,
    }
    if result is not None:
        row.update(text=result.text, tokens=result.tokens, score=result.score, finished=result.finished)
        row["unknown_source_tokens"] = result.unknown_source_tokens
        row["origin"] = result.best.origin
        if n_best:
            row["hypotheses"] = [h.text for h in result.hypotheses]
            row["hypothesis_scores"] = [h.score for h in result.hypotheses]
    return row


def decode_records(
    model: Seq2SeqModel,
    plan: DecodingPlan,
    sources: Sequence[Any],
    first_index: int = 0,
    *,
    batching: BatchingOptions = BatchingOptions(),
) -> list[dict]:
    """One record per source, in order, indexed from `first_index`."""
    prepared, errors = [], {}
    for offset, source in enumerate(sources):
        if isinstance(source, RowError):  # an input row that was never a source
            errors[offset] = source.reason
            continue
        try:
            prepared.append((offset, model.prepare(source, plan)))
        except (ValueError, TypeError) as error:
            errors[offset] = f"{type(error).__name__}: {str(error).replace('inputs[0]: ', '')}"
    results = dict(
        zip(
            (offset for offset, _ in prepared),
            model.decode([item for _, item in prepared], plan, batching=batching),
            strict=True,
        )
    )
    n_best = plan.options.num_hypotheses > 1
    return [
        record(first_index + offset, source, results.get(offset), errors.get(offset), n_best)
        for offset, source in enumerate(sources)
    ]


def from_row(row: dict) -> dict:
    """A record back from a row of Ray Data columns (numpy scalars and arrays), as `record` made it."""

    def plain(value: Any) -> Any:
        return value.tolist() if hasattr(value, "tolist") else value

    restored = {
        "index": int(row["index"]),
        "source": plain(row["source"]),
        "text": row["text"],
        "tokens": list(plain(row["tokens"])),
        "score": None if row["error"] else float(row["score"]),
        "finished": bool(row["finished"]),
        "unknown_source_tokens": int(row["unknown_source_tokens"]),
        "origin": row["origin"],
        "error": row["error"],
    }
    if "hypotheses" in row:
        restored["hypotheses"] = list(plain(row["hypotheses"]))
        restored["hypothesis_scores"] = [float(s) for s in plain(row["hypothesis_scores"])]
    return restored
