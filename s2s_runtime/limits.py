"""RequestLimits: the most work one request may ask of a model, checked before any decoding starts.

GenerationOptions bounds what no model changes; these caps depend on the model and on the operator: how many beams
and hypotheses, how long an output, and how many decoder tokens one request of a service may cost in all. A request
past a cap is refused with a ValueError naming the option and the cap, so no request can stall a service or ask
numpy for gigabytes.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BEAM_SIZE = 16
DEFAULT_MAX_NUM_HYPOTHESES = 16
# A service request's inputs × beams (or samples) × max output length: 256 inputs × beam 16 × 138 tokens (the
# built-in g2p-en's longest output) fit; decoding that many tokens takes about a second on one core.
DEFAULT_MAX_REQUEST_TOKENS = 1_000_000
# Source tokens of one input, whatever the bundle allows: the encoder cannot be interrupted, so its work must be
# bounded before it starts (a bundle allowing 1,000,000-character sources let one request take 2 GB and seconds).
DEFAULT_MAX_SOURCE_LENGTH = 1024


@dataclass(frozen=True)
class RequestLimits:
    """Caps on the work of one request (see the module docstring).

    Arguments:
        max_beam_size: the largest beam_size accepted.
        max_num_hypotheses: the largest num_hypotheses accepted (beam n-best or samples).
        max_output_length: the most output tokens of any hypothesis; None (default) takes the bundle's own rule at
            its longest source, ceil(ratio × max_source_length + offset). An explicit max_length or
            max_length_ratio above it is refused; the bundle's default rule is clipped to it.
        max_request_tokens: the most decoder tokens (inputs × beams or samples × max output length) one request
            to a Batcher or `s2s serve` may ask for; `generate` bounds each batch by the caps above instead.
        max_source_length: the most source tokens of one input, below the bundle's own max_source_length when that
            is larger (the encoder runs uninterrupted, so its work is bounded here).

    Examples:
        >>> RequestLimits(max_beam_size=8).max_num_hypotheses
        16
    """

    max_beam_size: int = DEFAULT_MAX_BEAM_SIZE
    max_num_hypotheses: int = DEFAULT_MAX_NUM_HYPOTHESES
    max_output_length: int | None = None
    max_request_tokens: int = DEFAULT_MAX_REQUEST_TOKENS
    max_source_length: int = DEFAULT_MAX_SOURCE_LENGTH

    def __post_init__(self) -> None:
        for name in (
            "max_beam_size",
            "max_num_hypotheses",
            "max_output_length",
            "max_request_tokens",
            "max_source_length",
        ):
            value = getattr(self, name)
            if value is None and name == "max_output_length":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: must be an int ≥ 1, got {value!r}")
