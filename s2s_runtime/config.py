"""GenerationOptions: every decoding option in one frozen, validated object."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from .decoding.registry import STRATEGIES, on_register, owners
from .numbers import is_finite_number

LENGTH_NORMALIZATIONS = ("power", "gnmt")
DEFAULT_BEAM_SIZE = 4
# Upper bounds of the numeric options that no model changes (the model's own caps — beams, hypotheses, output
# length — are a RequestLimits). Past them a value is meaningless and the arithmetic is no longer safe: a length
# penalty of 1000 overflows length ** alpha, a ratio of 1e308 overflows the length computation, a repetition penalty
# that large sends every repeated log-prob to -inf.
MAX_LENGTH_PENALTY = 10.0
MAX_COVERAGE_PENALTY = 10.0
MAX_REPETITION_PENALTY = 100.0
MAX_LENGTH_RATIO = 1000.0
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding options, validated on construction. The strategy is always explicit: sampling options with
    strategy="greedy" are an error, not a silent switch.

    Arguments:
        strategy: "greedy" (most probable token), "beam" (beam search), "sample" (random sampling) or
            "alternatives" (the num_hypotheses most likely tokens where the target prefix ends, each continued
            greedily; s2s_runtime.decoding.alternatives).
        beam_size: live beams per input (beam only; default 4).
        num_hypotheses: n-best size (beam: ≤ beam_size), independent samples (sample) or alternatives
            (alternatives); greedy gives 1.
        length_penalty: α of the length normalization below, 0 ≤ α ≤ 10.
        length_normalization: rank hypotheses by score / length^α ("power": α = 0 no normalization, α = 1 the
            average log-prob) or by the GNMT score / ((5 + length) / 6)^α ("gnmt"); length counts the scored
            steps, eos included.
        coverage_penalty: β of the GNMT coverage penalty added to that score, β Σ_i log(min(attention received by
            source position i over all steps, 1)): hypotheses that leave source positions unattended rank lower
            (beam only, attention models; 0 ≤ β ≤ 10, 0 off).
        min_length: eos is not allowed before this many output tokens.
        max_length: at most this many output tokens; with neither it nor max_length_ratio, the bundle's rule
            ceil(ratio × source_length + offset). Bounded by the model's RequestLimits.max_output_length.
        max_length_ratio: at most ceil(ratio × source length) output tokens (0 < ratio ≤ 1000), also bounded by
            RequestLimits.max_output_length.
        temperature: sampling only: log-probs are divided by it before sampling.
        top_k: sampling only: sample among the k most probable tokens (None: all).
        top_p: sampling only: sample among the most probable tokens whose probabilities sum to p (nucleus).
        seed: sampling only. The same seed (0 ≤ seed < 2^63) gives the same samples for the same input, whatever
            else is in the batch (each input's random stream derives from the seed and the input itself).
        no_repeat_ngram_size: no n-gram of this size appears twice in an output (0: off).
        repetition_penalty: log-probs of tokens already in the output are multiplied by it (> 1 discourages
            repeats), then renormalized; 0 < penalty ≤ 100.
        suppress_tokens: target tokens (strings or ids) never generated.
        return_attention: attach each step's attention weights over the source (attention models).
        replace_unknowns: replace an output unk token by the source token it attended to most (attention models).
        use_lexicon: answer an input the bundle's lexicon knows from it, without decoding (its variants first in an
            n-best, the model's after); False asks the model (s2s_runtime.lexicon).
        view: show the outputs through one of the bundle's target views (`s2s info` lists them; e.g. g2p-en's
            "no-stress": AH0 → AH): tokens and text change, ids stay the model's; hypotheses that become alike
            are given once. None: the model's own tokens.

    Raises:
        TypeError: an unknown option (`from_kwargs`) or a value of the wrong type.
        ValueError: a value out of range or an invalid combination, naming the option.

    Examples:
        >>> GenerationOptions(strategy="beam", beam_size=5, num_hypotheses=3).num_hypotheses
        3
        >>> GenerationOptions(strategy="beam", beam_size=2, num_hypotheses=3)
        Traceback (most recent call last):
        ...
        ValueError: num_hypotheses: 3 is more than beam_size 2
    """

    strategy: str = "greedy"
    beam_size: int | None = None
    num_hypotheses: int = 1
    length_penalty: float = 0.0
    length_normalization: str = "power"
    coverage_penalty: float = 0.0
    min_length: int = 0
    max_length: int | None = None
    max_length_ratio: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    suppress_tokens: tuple = ()
    return_attention: bool = False
    replace_unknowns: bool = False
    use_lexicon: bool = True
    view: str | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy: {self.strategy!r} is not one of {', '.join(STRATEGIES)}")
        if self.length_normalization not in LENGTH_NORMALIZATIONS:
            raise ValueError(
                f"length_normalization: {self.length_normalization!r} is not one of {', '.join(LENGTH_NORMALIZATIONS)}"
            )
        for name, minimum in (("num_hypotheses", 1), ("min_length", 0), ("no_repeat_ngram_size", 0)):
            _check_int(name, getattr(self, name), minimum)
        for name, minimum in (("beam_size", 1), ("max_length", 1), ("top_k", 1), ("seed", 0)):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum)
        for name in (
            "length_penalty",
            "coverage_penalty",
            "repetition_penalty",
            "max_length_ratio",
            "temperature",
            "top_p",
        ):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
                raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
            if value is not None and not is_finite_number(value):
                raise ValueError(f"{name}: must be finite, got {str(value)[:20]}")
        if self.view is not None and not isinstance(self.view, str):
            raise TypeError(f"view: expected a view name, got {type(self.view).__name__}")
        for name in ("return_attention", "replace_unknowns", "use_lexicon"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {type(getattr(self, name)).__name__}")
        if not 0 <= self.length_penalty <= MAX_LENGTH_PENALTY:
            raise ValueError(f"length_penalty: must be in [0, {MAX_LENGTH_PENALTY:g}], got {self.length_penalty}")
        if not 0 <= self.coverage_penalty <= MAX_COVERAGE_PENALTY:
            raise ValueError(f"coverage_penalty: must be in [0, {MAX_COVERAGE_PENALTY:g}], got {self.coverage_penalty}")
        if not 0 < self.repetition_penalty <= MAX_REPETITION_PENALTY:
            raise ValueError(
                f"repetition_penalty: must be in (0, {MAX_REPETITION_PENALTY:g}], got {self.repetition_penalty}"
            )
        if self.max_length_ratio is not None and not 0 < self.max_length_ratio <= MAX_LENGTH_RATIO:
            raise ValueError(f"max_length_ratio: must be in (0, {MAX_LENGTH_RATIO:g}], got {self.max_length_ratio}")
        if self.seed is not None and self.seed > MAX_SEED:
            raise ValueError(f"seed: must be < 2^63, got {self.seed}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length: {self.min_length} is more than max_length {self.max_length}")
        if not isinstance(self.suppress_tokens, (list, tuple)) or not all(
            isinstance(t, (str, int)) and not isinstance(t, bool) for t in self.suppress_tokens
        ):
            raise TypeError("suppress_tokens: expected a list of token strings or ids")
        object.__setattr__(self, "suppress_tokens", tuple(self.suppress_tokens))
        self._check_strategy_options()

    def _check_strategy_options(self) -> None:
        """Options some strategy owns are refused with the others; then the chosen strategy's own rules."""
        defaults = {field.name: field.default for field in dataclasses.fields(self)}
        for strategy in STRATEGIES.values():
            for name in strategy.own_options:
                named_by = owners(name)
                if self.strategy not in named_by and getattr(self, name) != defaults[name]:
                    wanted = " or ".join(f"strategy={owner!r}" for owner in named_by)
                    raise ValueError(f"{name}: only used with {wanted} (strategy is {self.strategy!r})")
        STRATEGIES[self.strategy].check(self)

    @property
    def beam(self) -> int:
        return self.beam_size if self.beam_size is not None else DEFAULT_BEAM_SIZE

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any], base: GenerationOptions | None = None) -> GenerationOptions:
        """Options from keyword arguments, on top of `base` (defaults if None); unknown names are a TypeError.

        Validated option sets are cached by name, type and value (options are immutable), so a caller passing the
        same keywords on every call pays the validation once (it costs about as much as a decoder step of a small
        model).

        Examples:
            >>> GenerationOptions.from_kwargs({"strategy": "beam", "beam_size": 8}).beam
            8
        """
        if base is None:
            base = default_options()
        elif not isinstance(base, GenerationOptions):
            raise TypeError(f"options: expected a GenerationOptions, got {type(base).__name__}")
        if not kwargs:
            return base
        overrides = tuple(sorted((name, type(value), value) for name, value in kwargs.items()))
        try:
            hash(overrides)
        except TypeError:  # an unhashable value, such as a list of suppressed tokens: validated every time
            return _with_overrides.__wrapped__(base, overrides)
        return _with_overrides(base, overrides)


@functools.lru_cache(maxsize=256)
def _with_overrides(base: GenerationOptions, overrides: tuple[tuple[str, type, Any], ...]) -> GenerationOptions:
    """`base` with the (name, type, value) overrides, validated. The type is part of the cache key because equal
    values of other types (1, 1.0, True) must not share a validated result."""
    for name, _, _ in overrides:
        if name not in OPTION_NAMES:
            raise TypeError(f"unknown generation option {name!r} (options: {', '.join(OPTION_NAMES)})")
    return dataclasses.replace(base, **{name: value for name, _, value in overrides})


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: must be ≥ {minimum}, got {value}")


on_register(_with_overrides.cache_clear)  # a new strategy changes what is valid
OPTION_NAMES = tuple(field.name for field in dataclasses.fields(GenerationOptions))


def default_options() -> GenerationOptions:
    """GenerationOptions() — made on first use: the strategies register themselves when s2s_runtime is imported."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = GenerationOptions()
    return _DEFAULT


_DEFAULT: GenerationOptions | None = None
