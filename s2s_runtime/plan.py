"""Decoding plans: generation options checked against one model — its attention, its vocabulary and its
RequestLimits — with what follows from them (the strategy object, the suppressed ids), once per distinct options."""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .bundle import Bundle
from .config import GenerationOptions
from .decoding.hypotheses import RowLimits
from .decoding.processors import Processors, processors_for
from .decoding.ranking import attention_options
from .decoding.registry import strategy_class
from .decoding.strategy import Strategy
from .limits import RequestLimits
from .results import TargetView

PLANS_CACHED = 256  # checked option sets kept per model
_NOTHING_SUPPRESSED = np.zeros(0, dtype=np.int64)
_NOTHING_SUPPRESSED.flags.writeable = False  # shared by every plan without suppress_tokens


@dataclass(frozen=True)
class DecodingPlan:
    """Generation options checked against one model (`Seq2SeqModel.plan`).

    Examples:
        >>> model.plan(GenerationOptions(strategy="beam", beam_size=4)).rows_per_input  # doctest: +SKIP
        4
    """

    options: GenerationOptions
    suppressed: np.ndarray  # suppressed target ids, sorted
    strategy: Strategy
    eos_id: int
    with_attention: bool  # whether the decoder's attention weights are read at every step
    view: TargetView | None = None  # options.view's tokens, by target id

    @property
    def rows_per_input(self) -> int:
        """Decoder rows one input occupies: its beams, its independent samples, or 1."""
        return self.strategy.rows_per_input()

    def check_streamable(self) -> None:
        """Streaming yields one hypothesis token by token: a streamable strategy, one hypothesis (else ValueError)."""
        if not self.strategy.streamable:
            raise ValueError(
                f"strategy: {self.options.strategy} search is not streamable (the best hypothesis is known "
                "only at the end); use strategy='greedy' or 'sample', or generate()"
            )
        if self.options.num_hypotheses != 1:
            raise ValueError("num_hypotheses: streaming produces one hypothesis")

    def processors(self, limits: list[RowLimits]) -> Processors:
        return processors_for(self.options, self.suppressed, self.eos_id, limits)

    def entropy(self) -> int:
        """Seed material for a decode call: the seed, or fresh entropy when none is given (0 when nothing samples)."""
        if not self.strategy.random:
            return 0
        return secrets.randbits(128) if self.options.seed is None else self.options.seed  # as SeedSequence() draws


def attention_reading_options(options: GenerationOptions) -> list[str]:
    """The options set in `options` that need the decoder's attention at every step."""
    return [name for name in ("return_attention", "replace_unknowns") if getattr(options, name)] + attention_options(
        options
    )


class Planner:
    """Makes and caches the DecodingPlans of one model."""

    def __init__(self, bundle: Bundle, has_attention: bool, limits: RequestLimits, max_output_length: int):
        self.bundle, self.has_attention, self.limits = bundle, has_attention, limits
        self.max_output_length = max_output_length
        self._plans: OrderedDict[GenerationOptions, DecodingPlan] = OrderedDict()
        self._lock = threading.Lock()

    def plan(self, options: GenerationOptions) -> DecodingPlan:
        if not isinstance(options, GenerationOptions):
            raise TypeError(f"options: expected a GenerationOptions, got {type(options).__name__}")
        with self._lock:
            plan = self._plans.get(options)
            if plan is not None:
                self._plans.move_to_end(options)
                return plan
        strategy = strategy_class(options.strategy)(options)
        plan = DecodingPlan(
            options,
            self._checked(options, strategy),
            strategy,
            self.bundle.eos_id,
            bool(attention_reading_options(options)),
            self._view(options.view),
        )
        with self._lock:
            self._plans[options] = plan
            if len(self._plans) > PLANS_CACHED:
                self._plans.popitem(last=False)
        return plan

    def _checked(self, options: GenerationOptions, strategy: Strategy) -> np.ndarray:
        """The options this model can honour (else a ValueError naming the option); returns the suppressed ids."""
        for name in attention_reading_options(options):
            if not self.has_attention:
                raise ValueError(f"{name}: this model has no attention")
        if options.replace_unknowns and "unk" not in self.bundle.target.special_ids:
            raise ValueError("replace_unknowns: the target vocabulary has no unk token")
        beams = options.beam if strategy.beams else 1
        caps = (
            ("beam_size", beams, self.limits.max_beam_size, "max_beam_size"),
            ("num_hypotheses", options.num_hypotheses, self.limits.max_num_hypotheses, "max_num_hypotheses"),
            ("max_length", options.max_length or 0, self.max_output_length, "max_output_length"),
            ("min_length", options.min_length, self.max_output_length, "max_output_length"),
            ("no_repeat_ngram_size", options.no_repeat_ngram_size, self.max_output_length, "max_output_length"),
        )
        for name, value, cap, limit in caps:
            if value > cap:
                raise ValueError(f"{name}: {value} is more than this model allows ({limit} = {cap}; see RequestLimits)")
        return self._suppressed_ids(options)

    def _view(self, name: str | None) -> TargetView | None:
        if name is None:
            return None
        views = self.bundle.manifest.target_views or {}
        if name not in views:
            offered = ", ".join(sorted(views)) or "none"
            raise ValueError(f"view: {name!r} is not a target view of this model (its views: {offered})")
        vocab = self.bundle.target.vocab
        return {vocab.tokens.index(token): shown for token, shown in views[name].items()}

    def _suppressed_ids(self, options: GenerationOptions) -> np.ndarray:
        if not options.suppress_tokens:
            return _NOTHING_SUPPRESSED
        vocab = self.bundle.target.vocab
        ids = []
        for token in options.suppress_tokens:
            if isinstance(token, int):
                if not 0 <= token < len(vocab):
                    raise ValueError(f"suppress_tokens: id {token} is outside the target vocabulary ({len(vocab)})")
                ids.append(token)
            elif token in vocab.tokens:
                ids.append(vocab.tokens.index(token))
            else:
                raise ValueError(f"suppress_tokens: {token!r} is not in the target vocabulary")
        if self.bundle.eos_id in ids:
            raise ValueError("suppress_tokens: eos cannot be suppressed (nothing could end)")
        return np.array(sorted(set(ids)), dtype=np.int64)
