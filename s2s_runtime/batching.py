"""How many inputs are decoded together: BatchingOptions, and the split of many inputs into batches of similar
length (less padding), results restored to input order by index.

What to decode is a GenerationOptions; how to batch is this, apart, so that one setting means one thing: `generate`
and `decode` split long input lists by these options, while a service's Batcher sends each batch it collects to the
decoder whole (its own BatcherConfig.max_batch_size).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BatchingOptions:
    """How `generate` and `decode` batch a list of inputs.

    Arguments:
        max_batch_size: inputs per batch (default 64).
        max_batch_tokens: padded source tokens per batch (batch size × longest input), if given; a longer single
            input still gets a batch of its own.

    Examples:
        >>> BatchingOptions(max_batch_size=8).max_batch_tokens is None
        True
    """

    max_batch_size: int = 64
    max_batch_tokens: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_batch_tokens"):
            value = getattr(self, name)
            if value is None and name == "max_batch_tokens":
                continue
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name}: must be ≥ 1, got {value}")

    @classmethod
    def split(
        cls, kwargs: dict[str, Any], base: BatchingOptions | None = None
    ) -> tuple[BatchingOptions, dict[str, Any]]:
        """The batching fields of keyword arguments (on top of `base`), and the rest."""
        mine = {name: value for name, value in kwargs.items() if name in BATCHING_FIELDS}
        rest = {name: value for name, value in kwargs.items() if name not in BATCHING_FIELDS}
        base = base or DEFAULT_BATCHING
        return (dataclasses.replace(base, **mine) if mine else base), rest


def length_sorted_batches(
    lengths: Sequence[int], max_batch_size: int, max_tokens: int | None = None
) -> list[list[int]]:
    """Indices of the inputs grouped into batches, shortest inputs first: at most `max_batch_size` inputs, and with
    `max_tokens`, at most that many padded source tokens (batch size × longest input; a longer single input still
    gets a batch of its own).

    Examples:
        >>> length_sorted_batches([5, 1, 3, 2], 2)
        [[1, 3], [2, 0]]
        >>> length_sorted_batches([5, 1, 3, 2], 4, max_tokens=6)
        [[1, 3], [2], [0]]
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size: must be ≥ 1, got {max_batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])  # stable: equal lengths keep input order
    batches: list[list[int]] = []
    for index in order:
        batch = batches[-1] if batches else None
        if (
            batch is not None
            and len(batch) < max_batch_size
            and (max_tokens is None or (len(batch) + 1) * lengths[index] <= max_tokens)
        ):
            batch.append(index)
        else:
            batches.append([index])
    return batches


DEFAULT_BATCHING = BatchingOptions()
BATCHING_FIELDS = frozenset(field.name for field in dataclasses.fields(BatchingOptions))
