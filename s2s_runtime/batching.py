"""Splitting many inputs into batches of similar length (less padding), results restored to input order by index."""

from __future__ import annotations

from collections.abc import Sequence


def length_sorted_batches(lengths: Sequence[int], max_batch_size: int, max_tokens: int | None = None
                          ) -> list[list[int]]:
    """Indices of the inputs grouped into batches, shortest inputs first: at most `max_batch_size` inputs, and with
    `max_tokens`, at most that many padded source tokens (batch size × longest input; a longer single input still
    gets a batch of its own).

    Example:
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
        fits = batch is not None and len(batch) < max_batch_size and \
            (max_tokens is None or (len(batch) + 1) * lengths[index] <= max_tokens)
        if fits:
            batch.append(index)
        else:
            batches.append([index])
    return batches
