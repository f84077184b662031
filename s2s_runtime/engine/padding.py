"""Padding a step input along its batch and source axes: the one rule for what padded positions hold — zeros, and the
bundle's memory_bias_padding for the memory bias, which gives padded source positions exactly zero attention. The
encoder (reassembling its length groups) and CUDA graph capture (filling fixed buckets) both pad this way."""

from __future__ import annotations

import numpy as np

from .. import roles
from ..schema import TensorSpec


def padded(
    array: np.ndarray, spec: TensorSpec, rows: int, source_length: int | None, padding_bias: float | None
) -> np.ndarray:
    """A new array of `rows` along the batch axis and `source_length` along the source axis (if `spec` has one),
    filled with the padding value of its role, with `array` copied into its leading corner.

    Examples:
        >>> spec = TensorSpec("memory_bias", "memory_bias", "float32", ("batch", "source_length"))
        >>> padded(np.zeros((1, 2), np.float32), spec, 2, 3, -1e9).tolist()
        [[0.0, 0.0, -1000000000.0], [-1000000000.0, -1000000000.0, -1000000000.0]]
    """
    shape = list(array.shape)
    shape[spec.shape.index(roles.BATCH_DIM)] = rows  # every state, static and encoder output has one
    if roles.SOURCE_DIM in spec.shape:
        shape[spec.shape.index(roles.SOURCE_DIM)] = source_length
    fill = padding_bias if spec.role == roles.MEMORY_BIAS else 0
    out = np.full(shape, fill, dtype=array.dtype)
    out[tuple(slice(0, n) for n in array.shape)] = array
    return out


def padded_sources(sources: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """A batch of source ids as the encoder takes them: (batch, longest) ids padded with `pad_id`, and the lengths.

    Examples:
        >>> ids, lengths = padded_sources([[4, 5, 6], [7]], 0)
        >>> ids.tolist(), lengths.tolist()
        ([[4, 5, 6], [7, 0, 0]], [3, 1])
    """
    lengths = [len(source) for source in sources]
    longest = max(lengths)
    ids = np.array(
        [s if len(s) == longest else s + [pad_id] * (longest - len(s)) for s in sources], dtype=np.int64
    )  # (batch, longest)
    return ids, np.array(lengths, dtype=np.int64)
