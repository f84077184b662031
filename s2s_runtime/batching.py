"""Splitting many inputs into batches of similar length (less padding), results restored to input order by index."""

from __future__ import annotations

from collections.abc import Sequence


def length_sorted_batches(lengths: Sequence[int], max_batch_size: int) -> list[list[int]]:
    """Indices of the inputs grouped into batches of at most `max_batch_size`, shortest inputs first.

    Example:
        >>> length_sorted_batches([5, 1, 3, 2], 2)
        [[1, 3], [2, 0]]
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size: must be ≥ 1, got {max_batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])  # stable: equal lengths keep input order
    return [order[start:start + max_batch_size] for start in range(0, len(order), max_batch_size)]
