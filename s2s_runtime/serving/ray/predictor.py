"""A Ray Data predictor: a callable class for `Dataset.map_batches` that loads the model once per actor.

    dataset.map_batches(Predictor, fn_constructor_kwargs={"bundle": "g2p-en", "column": "word"},
                        concurrency=2, num_cpus=1, batch_size=256)

The model cannot be pickled (onnxruntime sessions are not), so each actor loads it in its constructor, with
onnxruntime threads set to the actor's CPU share (onnxruntime ignores the OMP_NUM_THREADS Ray sets). Every input
column is kept, so an id column follows its row wherever Ray Data moves it (with more than one actor the output
order is not the input order). Ray Data hangs when actors take every CPU of the cluster (its read tasks never run,
ray#44687): keep concurrency × num_cpus below the cluster's CPUs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...batching import BatchingOptions
from ...config import GenerationOptions
from ...limits import RequestLimits
from ...model import load
from ..records import COLUMNS, N_BEST_COLUMNS, decode_records
from ._require import assigned_cpus, threads_for


class Predictor:
    """Adds output columns to each batch: `text`, `tokens`, `score`, `finished`, `unknown_source_tokens` (input
    symbols not in the source vocabulary, mapped to unk) and `error` (None, or the message
    of the ValueError/TypeError an input caused: a bad row never fails the job), and with num_hypotheses > 1 the
    n-best `hypotheses` and `hypothesis_scores`.

    Arguments:
        bundle: a bundle directory or built-in name, loaded once per actor.
        column: the column holding the sources.
        options: generation options fixed for the whole job (a GenerationOptions or a dict of its fields).
        threads: onnxruntime threads; None (default) takes the actor's CPU share.
        device: as for s2s_runtime.load.
        limits: as for s2s_runtime.load.

    Examples:
        >>> predictor = Predictor("g2p-en", column="word")  # doctest: +SKIP
        >>> predictor({"word": np.array(["hello"])})["text"]  # doctest: +SKIP
        array(['HH AH0 L OW1'], dtype=object)
    """

    def __init__(
        self,
        bundle: str,
        *,
        column: str = "source",
        options: GenerationOptions | dict | None = None,
        threads: int | None = None,
        device: str = "cpu",
        limits: RequestLimits = RequestLimits(),
    ):
        self.column = column
        self.options = (
            options if isinstance(options, GenerationOptions) else GenerationOptions.from_kwargs(dict(options or {}))
        )
        self.model = load(
            bundle, device=device, intra_op_threads=threads or threads_for(assigned_cpus()), limits=limits
        )
        self.plan = self.model.plan(self.options)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.column not in batch:
            raise KeyError(f"Predictor: the batch has no column {self.column!r} (columns: {', '.join(batch)})")
        sources = [_plain(source) for source in batch[self.column]]
        # Ray Data chose the batch: it is decoded whole.
        records = decode_records(self.model, self.plan, sources, batching=BatchingOptions(max(len(sources), 1)))
        names = COLUMNS + (N_BEST_COLUMNS if self.options.num_hypotheses > 1 else ())
        columns = {name: [record.get(name) for record in records] for name in names}
        columns["score"] = [np.nan if score is None else score for score in columns["score"]]
        typed = {"score": np.float64, "finished": np.bool_, "unknown_source_tokens": np.int64}
        return {
            **batch,
            **{
                name: np.array(values, dtype=typed[name]) if name in typed else _column(values)
                for name, values in columns.items()
            },
        }


def _plain(value: Any) -> Any:
    """A source as Ray Data hands it over (numpy strings, arrays of tokens) in the plain Python form prepare takes."""
    if isinstance(value, np.ndarray):
        return [str(token) for token in value.tolist()]
    if isinstance(value, np.str_):
        return str(value)
    return value


def _column(values: list) -> np.ndarray:
    column = np.empty(len(values), dtype=object)  # lists and None stay per-row objects
    column[:] = values
    return column
