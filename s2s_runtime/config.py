"""GenerationOptions: every decoding option in one frozen, validated object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

STRATEGIES = ("greedy",)


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding options, validated on construction.

    Arguments:
        strategy: "greedy" (the next token is the most probable one).
        max_length: the most tokens a hypothesis may have (eos excluded); None uses the bundle's rule,
            ceil(ratio * source_length + offset) from manifest.json `limits.max_target_length`.
        max_batch_size: inputs per encoder/decoder batch; longer input lists are split into length-sorted batches
            and the results returned in input order.

    Raises:
        TypeError: an unknown option (`from_kwargs`) or a value of the wrong type.
        ValueError: a value out of range, naming the option.

    Example:
        >>> GenerationOptions(max_length=20).max_batch_size
        64
        >>> GenerationOptions.from_kwargs({"beam": 3})
        Traceback (most recent call last):
        ...
        TypeError: unknown generation option 'beam' (options: strategy, max_length, max_batch_size)
    """

    strategy: str = "greedy"
    max_length: int | None = None
    max_batch_size: int = 64

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.max_length is not None:
            _check_int("max_length", self.max_length, minimum=1)
        _check_int("max_batch_size", self.max_batch_size, minimum=1)

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any], base: "GenerationOptions | None" = None) -> "GenerationOptions":
        """Options from keyword arguments, on top of `base` (defaults if None); unknown names are a TypeError."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in kwargs:
            if key not in names:
                raise TypeError(f"unknown generation option {key!r} (options: {', '.join(names)})")
        return dataclasses.replace(base or cls(), **kwargs)


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: must be ≥ {minimum}, got {value}")
