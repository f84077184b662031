"""The loaded model: tokenizes inputs, encodes each batch once, drives the decoder step with cached states."""

from __future__ import annotations

import itertools
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import roles
from .batching import length_sorted_batches
from .bundle import Bundle, BundleError
from .config import GenerationOptions
from .capture import GraphCapture
from .device import device_for
from .runner import LOG_PROBS, ArrayBuffers, Runners, StepGraph, take_rows
from .limits import RequestLimits
from .search import (Candidate, DecoderRunner, RowLimits, Stop, beam_search, chooses_in_graph, greedy_in_graph,
                     needs_full_log_probs, normalized_score, run_sample_search, sample_search)
from .sessions import DeviceError, SessionSettings, create_capture_session, create_sessions, cuda_works, parse_device
from .vocab import Vocab

if TYPE_CHECKING:
    from .service import Batcher

log = logging.getLogger("s2s_runtime")

# Large batches of mixed lengths are encoded in groups of at least this many rows, cut where the length changes (see
# Seq2SeqModel._encode): small enough to cut the padding, large enough for efficient matmuls and few calls.
ENCODER_GROUP_ROWS = 32
PLANS_CACHED = 256  # checked option sets kept per model

InputText = str | Sequence[str]
_NOTHING_SUPPRESSED = np.zeros(0, dtype=np.int64)
_NOTHING_SUPPRESSED.flags.writeable = False  # shared by every call without suppress_tokens


@dataclass(frozen=True)
class Hypothesis:
    """One output sequence.

    Attributes:
        text: the detokenized output (characters joined, or symbols joined by spaces).
        tokens / ids: the output tokens and their ids, eos excluded (a forced target prefix included).
        score: sum of the log-probabilities of the output tokens and of eos when emitted (after repetition_penalty,
            when set; sampling's temperature/top-k/top-p are not part of it).
        normalized_score: the score used for ranking (see GenerationOptions.length_penalty).
        finished: True if the model emitted eos, False if the length limit stopped it.
        attention: (steps, source_length) attention weights when return_attention=True, else None.
    """

    text: str
    tokens: list[str]
    ids: list[int]
    score: float
    normalized_score: float
    finished: bool
    attention: np.ndarray | None = None

    def to_dict(self) -> dict:
        """JSON-ready form (scores to 6 decimals, attention to 5), as the CLI and the HTTP service print it."""
        record = {"text": self.text, "tokens": self.tokens, "ids": self.ids, "score": round(self.score, 6),
                  "normalized_score": round(self.normalized_score, 6), "finished": self.finished}
        if self.attention is not None:
            record["attention"] = self.attention.round(5).tolist()
        return record


@dataclass(frozen=True)
class Result:
    """The output for one input: its hypotheses (best first) and what was noticed about the input. The fields of the
    best hypothesis are available directly (`result.text`, `.tokens`, `.ids`, `.score`, ...)."""

    hypotheses: list[Hypothesis]
    unknown_source_tokens: int = 0  # input symbols not in the source vocabulary (mapped to unk)

    @property
    def best(self) -> Hypothesis:
        return self.hypotheses[0]

    text = property(lambda self: self.best.text)
    tokens = property(lambda self: self.best.tokens)
    ids = property(lambda self: self.best.ids)
    score = property(lambda self: self.best.score)
    normalized_score = property(lambda self: self.best.normalized_score)
    finished = property(lambda self: self.best.finished)
    attention = property(lambda self: self.best.attention)

    def to_dict(self) -> dict:
        """The best hypothesis's fields, the unknown-symbol count and every hypothesis, JSON-ready."""
        return {**self.best.to_dict(), "unknown_source_tokens": self.unknown_source_tokens,
                "hypotheses": [h.to_dict() for h in self.hypotheses]}


@dataclass(frozen=True)
class TokenScore:
    """Forced-decoding scores of one (source, target) pair: per-token log-probs (the last one is eos) and their sum."""

    tokens: list[str]
    ids: list[int]
    log_probs: list[float]
    score: float


@dataclass(frozen=True)
class StreamedToken:
    """A token as generate_stream produces it; str() gives the token."""

    token: str
    id: int
    log_prob: float

    def __str__(self) -> str:
        return self.token


@dataclass(frozen=True)
class DecodingPlan:
    """Generation options checked against one model (`Seq2SeqModel.plan`), with what is derived from them.

    Plans are cached per options: a service passing the same options on every request checks them once."""

    options: GenerationOptions
    suppressed: np.ndarray  # suppressed target ids, sorted

    @property
    def rows_per_input(self) -> int:
        """Decoder rows one input occupies: its beams, its independent samples, or 1."""
        return self.options.beam if self.options.strategy == "beam" else self.options.num_hypotheses


@dataclass(frozen=True)
class PreparedInput:
    """One input tokenized, its target prefix resolved and its length limits fixed (`Seq2SeqModel.prepare`):
    everything about it that can be wrong has been checked, and its cost is known."""

    tokens: list[str]
    ids: list[int]      # source ids, with the source eos when the model uses one; empty for an empty input
    unknown: int        # input symbols not in the source vocabulary (mapped to unk)
    limits: RowLimits
    tokens_bound: int   # the most decoder tokens it can cost: rows × max output length (0 if empty)


@dataclass
class _Prepared:
    """An input after tokenization."""

    tokens: list[str]
    ids: list[int]  # with the source eos when the model uses one
    unknown: int


class Seq2SeqModel:
    """A bundle loaded into onnxruntime sessions. Create with `s2s_runtime.load`.

    All methods are safe to call from several threads at once: onnxruntime sessions are thread-safe and every call
    keeps its own states.

    A call runs in three stages, each public so a service can run them apart: `plan` checks the options against
    the model, `prepare` checks and tokenizes one input (every error an input can cause is raised here, before any
    decoding), and `decode` runs prepared inputs to their results. `generate` is the three in a row.
    """

    def __init__(self, bundle: Bundle, *, device: str = "auto", settings: SessionSettings = SessionSettings(),
                 limits: RequestLimits = RequestLimits()):
        self.bundle = bundle
        graphs = [bundle.graphs["encoder"], bundle.graphs["decoder_step"]]
        if bundle.manifest.precision == "float16":
            device = _cuda_only(device)  # onnxruntime's CPU kernels cannot run these graphs (it may even crash)
        (self._encoder, decoder), self.placement = create_sessions(graphs, device, settings)
        self._encoder_spec, self._step_spec = graphs
        self._step_graph = StepGraph.of(decoder, self._step_spec, bundle.manifest.memory_bias_padding)
        self._batch_axes = self._step_graph.batch_axes
        self._device = device_for(self.placement)  # compaction and beam reordering where the states live
        self._runners = Runners(self._step_graph, self._device, io_binding=settings.io_binding,
                                capture=self._graph_capture(settings))
        # Encoder outputs are fetched by name in this order, never by the graph's own output order.
        self._encoder_roles = list(self._encoder_spec.outputs)
        self._encoder_output_names = [self._encoder_spec.outputs[role].name for role in self._encoder_roles]
        needed = [r for r in self._step_spec.inputs if r not in roles.CONTROL_INPUTS]  # what the encoder provides
        self._state_roles = [r for r in needed if roles.is_state(r)]
        self._static_roles = [r for r in needed if not roles.is_state(r)]
        inputs = self._encoder_spec.inputs
        self._encoder_inputs = (inputs[roles.SOURCE_IDS].name, inputs[roles.SOURCE_LENGTHS].name)
        self._source_pad = bundle.source.special_ids["pad"]
        self._source_unk = bundle.source.special_ids.get("unk")
        self._source_eos = [bundle.source.special_ids["eos"]] if bundle.source_eos else []
        self.limits = limits
        self.max_output_length = limits.max_output_length or bundle.default_max_length(bundle.max_source_length)
        self._plans: OrderedDict[GenerationOptions, DecodingPlan] = OrderedDict()
        self._plans_lock = threading.Lock()
        self._probe()

    def _probe(self) -> None:
        """Run the encoder on the highest source id and one step on the highest target id, and compare every output
        shape with the manifest: a vocabulary larger than a graph's embedding table, or a declared size the graph
        does not have, is a BundleError at load naming the file — not an onnxruntime error at the first request."""
        highest = {"encoder": len(self.bundle.source.vocab) - 1, "decoder_step": len(self.bundle.target.vocab) - 1}
        spec = self._encoder_spec
        try:
            encoded = self._run_encoder([[highest["encoder"]]])
        except Exception as error:  # onnxruntime's own exception types
            raise BundleError(f"{spec.path}: the graph fails on source id {highest['encoder']}, the highest of "
                              f"the source vocabulary ({str(error).strip()[:200]})") from None
        outputs = dict(encoded)
        spec = self._step_spec
        states = {role: encoded[role] for role in self._state_roles}
        statics = {role: encoded[role] for role in self._static_roles}
        try:
            buffers = ArrayBuffers(self._step_graph, states, statics, False)
            buffers.set_previous(np.array([highest["decoder_step"]], dtype=np.int64))
            buffers.run(LOG_PROBS)
            log_probs = buffers.log_probs()
        except Exception as error:
            raise BundleError(f"{spec.path}: the graph fails on target id {highest['decoder_step']}, the highest "
                              f"of the target vocabulary ({str(error).strip()[:200]})") from None
        outputs[roles.LOG_PROBS] = log_probs
        for role, value in outputs.items():
            graph = self._encoder_spec if role in encoded else self._step_spec
            declared = graph.outputs[role].shape
            for axis, (real, claimed) in enumerate(zip(value.shape, declared)):
                if isinstance(claimed, int) and real != claimed:
                    raise BundleError(f"{graph.path}: output {role!r} has size {real} on axis {axis}, manifest.json "
                                      f"declares {claimed}")

    def _graph_capture(self, settings: SessionSettings) -> GraphCapture | None:
        if not settings.cuda_graph:
            return None
        device = self._device
        if not device.captures or not settings.io_binding:
            log.info("s2s_runtime: cuda_graph=True has no effect: %s", "it needs io_binding" if device.captures else
                     f"the model runs on the CPU ({self.placement.reason})")
            return None
        session = create_capture_session(self._step_spec, device.device_id, settings)
        if session is None:
            return None
        return GraphCapture(StepGraph.of(session, self._step_spec, self.bundle.manifest.memory_bias_padding),
                            device.gather, device.device_type, device.device_id)

    @property
    def device(self) -> str:
        """"cpu" or "cuda:N": where the sessions actually run."""
        return self.placement.device

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the sessions actually use, in priority order."""
        return self.placement.providers

    @property
    def has_attention(self) -> bool:
        return roles.ATTENTION in self._step_spec.outputs

    def __repr__(self) -> str:
        return f"Seq2SeqModel({str(self.bundle.root)!r}, device={self.device!r})"

    def batcher(self, *, max_batch_size: int = 64, max_wait_ms: float = 2.0, max_queue: int = 1024,
                timeout_s: float | None = None, warmup: bool = True, workers: int = 1) -> "Batcher":
        """A dynamic batcher over this model for concurrent callers (see s2s_runtime.service).

        Example:
            >>> with model.batcher(max_batch_size=64, max_wait_ms=2) as batcher:  # doctest: +SKIP
            ...     batcher.submit("hello").result().text
        """
        from .service import Batcher, BatcherConfig

        return Batcher(self, BatcherConfig(max_batch_size, max_wait_ms, max_queue, timeout_s, warmup, workers))

    # ---- public API ----------------------------------------------------------------------------------------------

    def generate(self, inputs: InputText | Sequence[InputText], *, target_prefix: Sequence[InputText | None] | None = None,
                 options: GenerationOptions | None = None, **kwargs: Any) -> list[Result]:
        """Generate outputs for each input.

        Arguments:
            inputs: a string, a list of strings, or a list of pre-tokenized inputs (lists of source symbols).
                An empty input gives an empty output (score 0) without running the model.
            target_prefix: optional, one per input: a target text or token list every output of that input starts
                with (None for no prefix).
            options: a GenerationOptions; keyword arguments (strategy="beam", max_length=20, ...) override its fields.

        Returns:
            A list of Result, one per input, in input order; `result.hypotheses` holds the n-best, best first.

        Raises:
            TypeError: inputs of the wrong type, or an unknown option.
            ValueError: an input longer than the bundle's max_source_length, an invalid option, or an option past
                the model's RequestLimits.

        Example:
            >>> model = s2s_runtime.load("bundle/")  # doctest: +SKIP
            >>> model.generate(["hello", "world"], strategy="beam", beam_size=4, num_hypotheses=2)[0].text  # doctest: +SKIP
            'olleh'
        """
        plan = self.plan(GenerationOptions.from_kwargs(kwargs, options))
        items = _as_input_list(inputs)
        prefixes = _prefix_list(target_prefix, len(items))
        prepared = [self.prepare(item, plan, target_prefix=prefix, index=index)
                    for index, (item, prefix) in enumerate(zip(items, prefixes))]
        return self.decode(prepared, plan)

    def plan(self, options: GenerationOptions) -> DecodingPlan:
        """Check options against this model — its attention, vocabulary and RequestLimits — once per distinct
        options (cached).

        Raises:
            TypeError: `options` is not a GenerationOptions.
            ValueError: an option this model cannot honour, naming it.

        Example:
            >>> model.plan(GenerationOptions(strategy="beam", beam_size=4)).rows_per_input  # doctest: +SKIP
            4
        """
        if not isinstance(options, GenerationOptions):
            raise TypeError(f"options: expected a GenerationOptions, got {type(options).__name__}")
        with self._plans_lock:
            plan = self._plans.get(options)
            if plan is not None:
                self._plans.move_to_end(options)
                return plan
        plan = DecodingPlan(options, self._checked_options(options))
        with self._plans_lock:
            self._plans[options] = plan
            if len(self._plans) > PLANS_CACHED:
                self._plans.popitem(last=False)
        return plan

    def prepare(self, source: InputText, plan: DecodingPlan, *, target_prefix: InputText | None = None,
                index: int = 0) -> PreparedInput:
        """Tokenize one input, resolve its target prefix and fix its length limits; every error the input can cause
        is raised here, naming `inputs[index]` (or `target_prefix[index]`).

        Raises:
            TypeError: the input or prefix is not a string or a list of token strings.
            ValueError: the input is longer than max_source_length, a prefix token is not in the target vocabulary,
                or its lengths pass the model's limits.

        Example:
            >>> plan = model.plan(GenerationOptions())  # doctest: +SKIP
            >>> model.decode([model.prepare("hello", plan)], plan)[0].text  # doctest: +SKIP
        """
        item = self._prepare(source, index)
        prefix = () if target_prefix is None else tuple(self._target_ids(target_prefix, f"target_prefix[{index}]"))
        if not item.ids:
            return PreparedInput([], [], 0, RowLimits((), 0, 0), 0)
        limits = self._limits(item, prefix, plan.options, index)
        return PreparedInput(item.tokens, item.ids, item.unknown, limits, plan.rows_per_input * limits.max_length)

    def decode(self, items: Sequence[PreparedInput], plan: DecodingPlan, *, stop: Stop | None = None
               ) -> list[Result]:
        """Decode prepared inputs (see `prepare`) in length-sorted batches; one Result per input, in order.

        `stop`, if given, is called between decoder steps; when it returns True decoding ends with
        s2s_runtime.search.DecodingStopped (a service's deadlines and cancellations).

        Example:
            >>> plan = model.plan(GenerationOptions(strategy="beam"))  # doctest: +SKIP
            >>> [r.text for r in model.decode([model.prepare(w, plan) for w in ("a", "b")], plan)]  # doctest: +SKIP
        """
        options = plan.options
        entropy = self._entropy(options)
        results: list[Result | None] = [None] * len(items)
        for index, item in enumerate(items):
            if not item.ids:
                results[index] = Result([Hypothesis("", [], [], 0.0, 0.0, True)], 0)
        pending = [i for i, item in enumerate(items) if item.ids]
        for batch in length_sorted_batches([len(items[i].ids) for i in pending], options.max_batch_size,
                                           options.max_batch_tokens):
            rows = [pending[i] for i in batch]
            n_best = self._decode_batch([items[row] for row in rows], plan, entropy, stop)
            for row, candidates in zip(rows, n_best):
                results[row] = Result([self._hypothesis(c, items[row], options) for c in candidates],
                                      items[row].unknown)
        return results  # type: ignore[return-value]

    def generate_stream(self, source: InputText, *, target_prefix: InputText | None = None,
                        options: GenerationOptions | None = None, **kwargs: Any) -> Iterator[StreamedToken]:
        """Yield the output tokens of one input as they are produced (greedy or sampling).

        Example:
            >>> for token in model.generate_stream("hello"):  # doctest: +SKIP
            ...     print(token, end="", flush=True)
        """
        plan = self.plan(GenerationOptions.from_kwargs(kwargs, options))
        check_streamable(plan.options)
        return self.stream(self.prepare(source, plan, target_prefix=target_prefix), plan)

    def stream(self, item: PreparedInput, plan: DecodingPlan, *, stop: Stop | None = None
               ) -> Iterator[StreamedToken]:
        """The tokens of one prepared input as they are produced (greedy or sampling); `stop` as in `decode`.

        Example:
            >>> plan = model.plan(GenerationOptions())  # doctest: +SKIP
            >>> "".join(map(str, model.stream(model.prepare("hello", plan), plan)))  # doctest: +SKIP
        """
        check_streamable(plan.options)
        if not item.ids:
            return
        states, statics = self._encode([item.ids])
        vocab = self.bundle.target.vocab
        for event in self._sample_rows(states, statics, [item], plan, self._entropy(plan.options), 1, stop):
            if not event.ended[0]:
                token_id = int(event.tokens[0])
                yield StreamedToken(vocab.tokens[token_id], token_id, float(event.log_probs[0]))

    def score(self, sources: Sequence[InputText], targets: Sequence[InputText], *, max_batch_size: int = 64
              ) -> list[TokenScore]:
        """Forced decoding: the log-prob of every target token (then of eos) given its source, batched.

        Example:
            >>> model.score(["hello"], ["olleh"])[0].score  # doctest: +SKIP
            -0.016
        """
        sources, targets = _as_input_list(sources), _as_input_list(targets)
        if len(sources) != len(targets):
            raise ValueError(f"targets: {len(targets)} targets for {len(sources)} sources")
        prepared = [self._prepare(item, index) for index, item in enumerate(sources)]
        for index, item in enumerate(prepared):
            if not item.ids:
                raise ValueError(f"sources[{index}]: an empty source cannot be scored")
        target_ids = [self._target_ids(t, f"targets[{i}]") for i, t in enumerate(targets)]
        results: list[TokenScore | None] = [None] * len(prepared)
        for batch in length_sorted_batches([len(p.ids) for p in prepared], max_batch_size):
            log_probs = self._forced_log_probs([prepared[i].ids for i in batch], [target_ids[i] for i in batch])
            for i, row_log_probs in zip(batch, log_probs):
                tokens = self.bundle.target.vocab.decode_tokens(target_ids[i])
                results[i] = TokenScore(tokens, target_ids[i], row_log_probs, float(sum(row_log_probs)))
        return results  # type: ignore[return-value]

    # ---- input preparation ---------------------------------------------------------------------------------------

    def _prepare(self, item: InputText, index: int) -> _Prepared:
        vocab = self.bundle.source.vocab
        limit = self.bundle.max_source_length - len(self._source_eos)
        tokens = _bounded_tokens(vocab, item, limit, f"inputs[{index}]")
        if len(tokens) > limit:  # counted in full only where that costs nothing
            count = len(item) if not isinstance(item, str) or vocab.tokenizer == "char" else f"more than {limit}"
            raise ValueError(f"inputs[{index}]: {count} source tokens exceed the bundle's max_source_length "
                             f"{self.bundle.max_source_length}")
        if not tokens:
            return _Prepared([], [], 0)
        ids = vocab.encode(tokens)
        unknown = 0
        if self._source_unk in ids:  # rare: count the symbols that map to unk without being the unk token itself
            unknown = sum(1 for t, i in zip(tokens, ids) if i == self._source_unk and t != vocab.tokens[i])
        return _Prepared(tokens, ids + self._source_eos, unknown)

    def _target_ids(self, item: InputText, where: str) -> list[int]:
        """Target token ids of a prefix or a scored target; a token outside the target vocabulary is a ValueError
        (forcing or scoring unk in its place would answer another question than the one asked)."""
        vocab = self.bundle.target.vocab
        tokens = _bounded_tokens(vocab, item, self.max_output_length, where)
        if len(tokens) > self.max_output_length:
            raise ValueError(f"{where}: more than the model's max output length {self.max_output_length} tokens")
        unknown = next((token for token in tokens if token not in vocab), None)
        if unknown is not None:
            raise ValueError(f"{where}: token {unknown!r} is not in the target vocabulary")
        return vocab.encode(tokens)

    def _checked_options(self, options: GenerationOptions) -> np.ndarray:
        """The options this model can honour (else a ValueError naming the option); returns the suppressed ids."""
        for name in ("return_attention", "replace_unknowns"):
            if getattr(options, name) and not self.has_attention:
                raise ValueError(f"{name}: this model has no attention")
        if options.replace_unknowns and "unk" not in self.bundle.target.special_ids:
            raise ValueError("replace_unknowns: the target vocabulary has no unk token")
        caps = (("beam_size", options.beam if options.strategy == "beam" else 1, self.limits.max_beam_size,
                 "max_beam_size"),
                ("num_hypotheses", options.num_hypotheses, self.limits.max_num_hypotheses, "max_num_hypotheses"),
                ("max_length", options.max_length or 0, self.max_output_length, "max_output_length"),
                ("min_length", options.min_length, self.max_output_length, "max_output_length"),
                ("no_repeat_ngram_size", options.no_repeat_ngram_size, self.max_output_length, "max_output_length"))
        for name, value, cap, limit in caps:
            if value > cap:
                raise ValueError(f"{name}: {value} is more than this model allows ({limit} = {cap}; see "
                                 "RequestLimits)")
        return self._suppressed_ids(options)

    @staticmethod
    def _entropy(options: GenerationOptions) -> int:
        """Sampling seed material: the seed, or fresh entropy for each call when none is given."""
        if options.strategy != "sample":
            return 0
        return np.random.SeedSequence().entropy if options.seed is None else options.seed

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

    def _limits(self, item: _Prepared, prefix: tuple[int, ...], options: GenerationOptions, index: int) -> RowLimits:
        source_length = len(item.ids) - len(self._source_eos)
        if options.max_length_ratio is not None:
            by_ratio = max(1, math.ceil(options.max_length_ratio * source_length))
            if by_ratio > self.max_output_length:
                raise ValueError(f"max_length_ratio: {options.max_length_ratio:g} × {source_length} source tokens "
                                 f"of inputs[{index}] = {by_ratio} tokens, more than this model allows "
                                 f"(max_output_length = {self.max_output_length}; see RequestLimits)")
        else:
            by_ratio = None
        caps = [c for c in (options.max_length, by_ratio) if c is not None]
        if caps:
            max_length = min(caps)
        else:  # the bundle's own rule, within the operator's cap
            max_length = min(self.bundle.default_max_length(source_length), self.max_output_length)
        if len(prefix) > max_length:
            raise ValueError(f"target_prefix[{index}]: {len(prefix)} tokens, more than the max length {max_length}")
        return RowLimits(prefix, options.min_length, max_length)

    # ---- running the graphs --------------------------------------------------------------------------------------

    def _encode(self, sources: list[list[int]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Encode a batch; returns the step's initial states and its statics.

        The encoder computes every row up to the batch's longest source, so a large batch of mixed lengths is
        encoded in groups of similar length and reassembled with what the encoder itself puts at padded positions;
        each row's values do not depend on its group (fp32). Groups are cut in length order, only where the length
        changes, once they hold ENCODER_GROUP_ROWS rows: a common length is never split, so most groups need no
        padding at all (CMUdict batch of 256: 4.8 → 4.4 ms against 8 equal groups of 32)."""
        lengths = np.array([len(s) for s in sources], dtype=np.int64)  # (batch,)
        if len(sources) <= ENCODER_GROUP_ROWS or lengths.min() == lengths.max():
            encoded = self._run_encoder(sources)
        else:
            order = np.argsort(lengths, kind="stable")
            cuts, start = [], 0
            for change in np.flatnonzero(np.diff(lengths[order])) + 1:  # positions where a longer length starts
                if change - start >= ENCODER_GROUP_ROWS:
                    cuts.append(change)
                    start = change
            groups = np.split(order, cuts)
            encoded = {}
            for group in groups:
                for role, value in self._run_encoder([sources[i] for i in group]).items():
                    if role not in encoded:
                        encoded[role] = self._padded_like(role, value, len(sources), int(lengths.max()))
                    spec = self._encoder_spec.outputs[role]
                    target = [slice(None)] * value.ndim  # this group's rows (and its source positions)
                    target[spec.batch_axis] = group
                    if roles.SOURCE_DIM in spec.shape:
                        axis = spec.shape.index(roles.SOURCE_DIM)
                        target[axis] = slice(0, value.shape[axis])
                    encoded[role][tuple(target)] = value
        return {r: encoded[r] for r in self._state_roles}, {r: encoded[r] for r in self._static_roles}

    def _run_encoder(self, sources: list[list[int]]) -> dict[str, np.ndarray]:
        lengths = [len(s) for s in sources]
        longest, pad = max(lengths), self._source_pad
        ids = np.array([s if len(s) == longest else s + [pad] * (longest - len(s)) for s in sources],
                       dtype=np.int64)  # (batch, source_length)
        names = self._encoder_inputs
        values = self._encoder.run(self._encoder_output_names,
                                   {names[0]: ids, names[1]: np.array(lengths, dtype=np.int64)})
        return dict(zip(self._encoder_roles, values))

    def _padded_like(self, role: str, value: np.ndarray, rows: int, source_length: int) -> np.ndarray:
        """An array for `rows` rows and `source_length` positions of an encoder output, filled with what the encoder
        outputs at padded positions: zeros, and for the memory bias the manifest's memory_bias_padding."""
        spec = self._encoder_spec.outputs[role]
        shape = list(value.shape)
        shape[spec.batch_axis] = rows
        if roles.SOURCE_DIM in spec.shape:
            shape[spec.shape.index(roles.SOURCE_DIM)] = source_length
        if role != roles.MEMORY_BIAS:
            return np.zeros(shape, dtype=value.dtype)
        return np.full(shape, self.bundle.manifest.memory_bias_padding, dtype=value.dtype)

    def _runner(self, states: dict[str, np.ndarray], statics: dict[str, np.ndarray], with_attention: bool,
                top_k: int = 1):
        return self._runners.runner(states, statics, with_attention, top_k)

    def _decode_batch(self, items: list[PreparedInput], plan: DecodingPlan, entropy: int, stop: Stop | None
                      ) -> list[list[Candidate]]:
        options, suppressed = plan.options, plan.suppressed
        limits = [item.limits for item in items]
        states, statics = self._encode([item.ids for item in items])
        with_attention = self._wants_attention(options)
        if options.strategy == "beam":
            copies = np.repeat(np.arange(len(items)), options.beam)  # beam_search wants each input beam times
            states, statics = take_rows(states, copies, self._batch_axes), take_rows(statics, copies, self._batch_axes)
            top_k = 1  # rank in the graph when it can and nothing needs the full log-probs (see beam_search)
            vocab = self._step_spec.outputs[roles.LOG_PROBS].shape[-1]
            if self._step_graph.ranks and 2 * options.beam <= vocab and \
                    not needs_full_log_probs(limits, options, suppressed):
                top_k = 2 * options.beam
            with self._runner(states, statics, with_attention, top_k) as runner:
                return beam_search(runner, start_id=self.bundle.start_id, eos_id=self.bundle.eos_id, limits=limits,
                                   options=options, suppressed=suppressed, collect_attention=with_attention,
                                   stop=stop)
        if options.strategy == "greedy" and chooses_in_graph(self._step_graph.ranks, limits, options,
                                                             suppressed, with_attention):
            with self._runner(states, statics, with_attention) as runner:
                return [[c] for c in greedy_in_graph(runner, start_id=self.bundle.start_id,
                                                     eos_id=self.bundle.eos_id, limits=limits, stop=stop)]
        copies = options.num_hypotheses
        rows = np.repeat(np.arange(len(items)), copies)  # each input `copies` times (independent samples)
        if copies > 1:
            states, statics = take_rows(states, rows, self._batch_axes), take_rows(statics, rows, self._batch_axes)
        candidates = run_sample_search(self._sample_rows(states, statics, [items[i] for i in rows], plan, entropy,
                                                         copies, stop))
        n_best = [candidates[i * copies:(i + 1) * copies] for i in range(len(items))]
        return [sorted(c, key=lambda h: -normalized_score(h, options)) for c in n_best]

    def _sample_rows(self, states: dict[str, np.ndarray], statics: dict[str, np.ndarray],
                     items: list[PreparedInput], plan: DecodingPlan, entropy: int, copies: int, stop: Stop | None):
        options, rngs = plan.options, None
        limits = [item.limits for item in items]
        if options.strategy == "sample":
            # Each row's random stream depends only on the seed, the input and the sample number, so an input's
            # samples are the same whatever else is in the batch.
            rngs = [np.random.default_rng(np.random.SeedSequence([entropy, row % copies, len(item.ids),
                                                                  *item.ids, len(lim.prefix), *lim.prefix]))
                    for row, (item, lim) in enumerate(zip(items, limits))]
        with_attention = self._wants_attention(options)
        with self._runner(states, statics, with_attention) as runner:
            return (yield from sample_search(runner, start_id=self.bundle.start_id, eos_id=self.bundle.eos_id,
                                             limits=limits, options=options, rngs=rngs, suppressed=plan.suppressed,
                                             collect_attention=with_attention, stop=stop))

    @staticmethod
    def _wants_attention(options: GenerationOptions) -> bool:
        return options.return_attention or options.replace_unknowns

    def _forced_log_probs(self, sources: list[list[int]], targets: list[list[int]]) -> list[list[float]]:
        states, statics = self._encode(sources)
        with self._runner(states, statics, False) as runner:
            return self._forced_steps(runner, targets)

    def _forced_steps(self, runner: DecoderRunner, targets: list[list[int]]) -> list[list[float]]:
        eos = self.bundle.eos_id
        steps = max(len(t) for t in targets) + 1
        forced = np.full((len(targets), steps), eos, dtype=np.int64)  # (batch, steps): target then eos (and filler)
        for row, target in enumerate(targets):
            forced[row, :len(target)] = target
        previous = np.full(len(targets), self.bundle.start_id, dtype=np.int64)
        chosen = np.zeros((len(targets), steps))
        for t in range(steps):
            log_probs, _ = runner.step(previous)  # (batch, vocab)
            chosen[:, t] = log_probs[np.arange(len(targets)), forced[:, t]]
            previous = forced[:, t]
        return [chosen[row, :len(target) + 1].tolist() for row, target in enumerate(targets)]

    def _hypothesis(self, candidate: Candidate, item: PreparedInput, options: GenerationOptions) -> Hypothesis:
        vocab = self.bundle.target.vocab
        tokens = vocab.decode_tokens(candidate.ids)
        attention = None
        if candidate.attention:
            attention = np.stack(candidate.attention)[:, :len(item.ids)]  # (steps, source_length)
        if options.replace_unknowns and attention is not None:
            unk = self.bundle.target.special_ids["unk"]
            for position, token_id in enumerate(candidate.ids):
                if token_id == unk:
                    source_position = int(attention[position, :len(item.tokens)].argmax())
                    tokens[position] = item.tokens[source_position]
        return Hypothesis(vocab.join(tokens), tokens, candidate.ids, candidate.score,
                          normalized_score(candidate, options), candidate.finished,
                          attention if options.return_attention else None)


def _cuda_only(device: str) -> str:
    """The device for a float16 bundle: CUDA, or a DeviceError naming the precision."""
    kind, device_id = parse_device(device)
    works, why = cuda_works(device_id) if kind != "cpu" else (False, "device='cpu' requested")
    if not works:
        raise DeviceError(f"this bundle is float16 (s2s export --fp16) and runs on CUDA only: {why}")
    return f"cuda:{device_id}"


_WORD = re.compile(r"\S+")


def _bounded_tokens(vocab: Vocab, item: object, limit: int, where: str) -> list[str]:
    """The tokens of a text or token list, at most limit + 1 of them: an oversized input is refused from its
    length alone, before it is split or encoded in full."""
    if isinstance(item, str):
        if vocab.tokenizer == "char":
            return list(item[:limit + 1])
        return [match.group() for match in itertools.islice(_WORD.finditer(item), limit + 1)]
    if isinstance(item, (list, tuple)):
        tokens = list(item[:limit + 1])
        if all(isinstance(token, str) for token in tokens):
            return tokens
    raise TypeError(f"{where}: expected a string or a list of token strings, got {item!r:.60}")


def _prefix_list(target_prefix: object, count: int) -> list:
    if target_prefix is None:
        return [None] * count
    if not isinstance(target_prefix, (list, tuple)) or len(target_prefix) != count:
        raise ValueError(f"target_prefix: expected a list with one prefix (or None) per input ({count})")
    return list(target_prefix)


def check_streamable(options: GenerationOptions) -> None:
    """Streaming yields one hypothesis token by token: greedy or sampling, one hypothesis."""
    if options.strategy == "beam":
        raise ValueError("strategy: beam search is not streamable (the best hypothesis is known only at the "
                         "end); use strategy='greedy' or 'sample', or generate()")
    if options.num_hypotheses != 1:
        raise ValueError("num_hypotheses: streaming produces one hypothesis")


def _as_input_list(inputs: object) -> list:
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    raise TypeError(f"inputs: expected a string, a list of strings or a list of token lists, "
                    f"got {type(inputs).__name__}")


def load(bundle_dir: str | Path, device: str = "auto", *, intra_op_threads: int = 1, inter_op_threads: int = 1,
         allow_spinning: bool = False, optimization_level: str = "all", io_binding: bool = True,
         cuda_graph: bool = False, limits: RequestLimits = RequestLimits()) -> Seq2SeqModel:
    """Load a bundle directory and create its onnxruntime sessions.

    Arguments:
        bundle_dir: a directory written by `s2s export`.
        device: "auto" (CUDA if it really loads, else CPU; one log line says which and why), "cpu", "cuda" or
            "cuda:N" (a DeviceError if CUDA cannot be used).
        intra_op_threads, inter_op_threads, allow_spinning, optimization_level, io_binding: session settings
            (see SessionSettings for the defaults and why).
        cuda_graph: on CUDA, replay the decoder step as captured CUDA graphs, one per batch-size and
            source-length bucket (see s2s_runtime.capture); no effect on the CPU.
        limits: the most work one request may ask for (a RequestLimits: beams, hypotheses, output length,
            decoder tokens per service request).

    Returns:
        A Seq2SeqModel.

    Raises:
        BundleError: the bundle is missing, corrupt (checksums), or its graphs do not match its manifest.
        DeviceError: device="cuda" and CUDA cannot be used.

    Example:
        >>> import s2s_runtime
        >>> model = s2s_runtime.load("bundle/", device="cpu")  # doctest: +SKIP
        >>> model.generate("hello")[0].text  # doctest: +SKIP
    """
    settings = SessionSettings(intra_op_threads, inter_op_threads, allow_spinning, optimization_level, io_binding,
                               cuda_graph)
    return Seq2SeqModel(Bundle.open(bundle_dir), device=device, settings=settings, limits=limits)
