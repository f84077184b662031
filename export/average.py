"""Checkpoint averaging: the element-wise mean of the weights of several checkpoints of one training run (e.g. its
last epochs, kept with `keep_epochs`), which usually generalizes a little better than any one of them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint


def average_checkpoints(directories: Sequence[str | Path]) -> Checkpoint:
    """One checkpoint whose every tensor is the mean of that tensor over `directories`, which must share their config
    and vocabularies (CheckpointError naming the first one that does not).

    Examples:
        >>> averaged = average_checkpoints(sorted(Path("runs/g2p/epochs").iterdir())[-5:])  # doctest: +SKIP
        >>> save_checkpoint(averaged, "runs/g2p/averaged")  # doctest: +SKIP
    """
    if not directories:
        raise CheckpointError("average: no checkpoints given")
    first = load_checkpoint(directories[0])
    total = {name: tensor.double() for name, tensor in first.model.state_dict().items()}
    for directory in directories[1:]:
        other = load_checkpoint(directory)
        if other.config != first.config:
            raise CheckpointError(f"{directory}: its config differs from {directories[0]}'s; only one run averages")
        if (other.source_vocab, other.target_vocab) != (first.source_vocab, first.target_vocab):
            raise CheckpointError(f"{directory}: its vocabularies differ from {directories[0]}'s")
        for name, tensor in other.model.state_dict().items():
            total[name] += tensor.double()
    with torch.no_grad():
        for name, tensor in first.model.state_dict().items():
            tensor.copy_(total[name] / len(directories))  # state_dict tensors share storage with the parameters
    return first
