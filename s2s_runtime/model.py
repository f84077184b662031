"""The loaded model: tokenizes inputs, encodes each batch once, drives the decoder step with cached states."""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from contextlib import contextmanager
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import roles
from .batching import length_sorted_batches
from .bundle import Bundle
from .config import GenerationOptions
from .capture import GraphCapture
from .decoder import ArrayRunner, BoundRunner, DeviceGather, StepGraph, take_rows
from .search import (Candidate, DecoderRunner, RowLimits, beam_search, chooses_in_graph, greedy_in_graph,
                     needs_full_log_probs, normalized_score, run_sample_search, sample_search)
from .sessions import DeviceError, SessionSettings, create_capture_session, create_sessions, cuda_works, parse_device

if TYPE_CHECKING:
    from .service import Batcher

log = logging.getLogger("s2s_runtime")

# Large batches of mixed lengths are encoded in groups of at least this many rows, cut where the length changes (see
# Seq2SeqModel._encode): small enough to cut the padding, large enough for efficient matmuls and few calls.
ENCODER_GROUP_ROWS = 32
# Bound runners kept per thread for reuse (one per recent shape: with attention, the source length is part of it).
IDLE_RUNNERS_PER_THREAD = 16

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
class _Decoding:
    """One call's validated options with what is derived from them once per call."""

    options: GenerationOptions
    suppressed: np.ndarray  # suppressed target ids
    entropy: int            # sampling seed material (the seed, or fresh entropy when none is given)


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
    """

    def __init__(self, bundle: Bundle, *, device: str = "auto", settings: SessionSettings = SessionSettings()):
        self.bundle = bundle
        graphs = [bundle.graphs["encoder"], bundle.graphs["decoder_step"]]
        if bundle.manifest.get("precision") == "float16":
            device = _cuda_only(device)  # onnxruntime's CPU kernels cannot run these graphs (it may even crash)
        (self._encoder, decoder), self.placement = create_sessions(graphs, device, settings)
        self._encoder_spec, self._step_spec = graphs
        self._step_graph = StepGraph.of(decoder, self._step_spec)
        self._batch_axes = self._step_graph.batch_axes
        self._io_binding = settings.io_binding
        self._idle_runners = threading.local()
        self._gather = None
        if self.placement.device != "cpu":  # keep compaction and beam reordering on the device
            device_type, device_id = self.placement.device.split(":")
            self._gather = DeviceGather(list(self.placement.providers), device_type, int(device_id))
        self._capture = self._graph_capture(settings)
        self._encoder_roles = list(self._encoder_spec.outputs)
        needed = [r for r in self._step_spec.inputs if r not in roles.CONTROL_INPUTS]  # what the encoder provides
        self._state_roles = [r for r in needed if roles.is_state(r)]
        self._static_roles = [r for r in needed if not roles.is_state(r)]
        inputs = self._encoder_spec.inputs
        self._encoder_inputs = (inputs[roles.SOURCE_IDS].name, inputs[roles.SOURCE_LENGTHS].name)
        self._source_pad = bundle.source.special_ids["pad"]
        self._mask_value: float | None = None  # the encoder's memory bias at padding, read when first needed
        self._source_unk = bundle.source.special_ids.get("unk")
        self._source_eos = [bundle.source.special_ids["eos"]] if bundle.manifest["config"].get("source_eos") else []

    def _graph_capture(self, settings: SessionSettings) -> GraphCapture | None:
        if not settings.cuda_graph:
            return None
        if self._gather is None or not settings.io_binding:
            log.info("s2s_runtime: cuda_graph=True has no effect: %s", "it needs io_binding" if self._gather else
                     f"the model runs on the CPU ({self.placement.reason})")
            return None
        device_type, device_id = self.placement.device.split(":")
        session = create_capture_session(self._step_spec, int(device_id), settings)
        if session is None:
            return None
        return GraphCapture(StepGraph.of(session, self._step_spec), self._gather, device_type, int(device_id))

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
            ValueError: an input longer than the bundle's max_source_length, or an invalid option.

        Example:
            >>> model = s2s_runtime.load("bundle/")  # doctest: +SKIP
            >>> model.generate(["hello", "world"], strategy="beam", beam_size=4, num_hypotheses=2)[0].text  # doctest: +SKIP
            'olleh'
        """
        options = GenerationOptions.from_kwargs(kwargs, options)
        items = _as_input_list(inputs)
        prepared = [self._prepare(item, index) for index, item in enumerate(items)]
        prefixes = self._prefixes(target_prefix, len(prepared))
        decoding = self._decoding(options)
        results: list[Result | None] = [None] * len(prepared)
        for index, item in enumerate(prepared):
            if not item.ids:
                results[index] = Result([Hypothesis("", [], [], 0.0, 0.0, True)], 0)
        pending = [i for i, item in enumerate(prepared) if item.ids]
        for batch in length_sorted_batches([len(prepared[i].ids) for i in pending], options.max_batch_size,
                                           options.max_batch_tokens):
            rows = [pending[i] for i in batch]
            limits = [self._limits(prepared[row], prefixes[row], options, row) for row in rows]
            n_best = self._decode_batch([prepared[row] for row in rows], limits, decoding)
            for row, candidates in zip(rows, n_best):
                results[row] = Result([self._hypothesis(c, prepared[row], options) for c in candidates],
                                      prepared[row].unknown)
        return results  # type: ignore[return-value]

    def generate_stream(self, source: InputText, *, target_prefix: InputText | None = None,
                        options: GenerationOptions | None = None, **kwargs: Any) -> Iterator[StreamedToken]:
        """Yield the output tokens of one input as they are produced (greedy or sampling).

        Example:
            >>> for token in model.generate_stream("hello"):  # doctest: +SKIP
            ...     print(token, end="", flush=True)
        """
        options = GenerationOptions.from_kwargs(kwargs, options)
        if options.strategy == "beam":
            raise ValueError("strategy: beam search is not streamable (the best hypothesis is known only at the "
                             "end); use strategy='greedy' or 'sample', or generate()")
        if options.num_hypotheses != 1:
            raise ValueError("num_hypotheses: streaming produces one hypothesis")
        decoding = self._decoding(options)
        item = self._prepare(source, 0)
        if not item.ids:
            return
        prefix = self._prefixes(None if target_prefix is None else [target_prefix], 1)[0]
        limits = [self._limits(item, prefix, options, 0)]
        states, statics = self._encode([item.ids])
        vocab = self.bundle.target.vocab
        for event in self._sample_rows(states, statics, [item], limits, decoding, 1):
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
        if isinstance(item, str):
            tokens = vocab.split(item)
        elif isinstance(item, (list, tuple)) and all(isinstance(t, str) for t in item):
            tokens = list(item)
        else:
            raise TypeError(f"inputs[{index}]: expected a string or a list of token strings, got {item!r:.60}")
        if not tokens:
            return _Prepared([], [], 0)
        ids = vocab.encode(tokens)
        if len(ids) + len(self._source_eos) > self.bundle.max_source_length:
            raise ValueError(f"inputs[{index}]: {len(ids)} source tokens exceed the bundle's max_source_length "
                             f"{self.bundle.max_source_length}")
        unknown = 0
        if self._source_unk in ids:  # rare: count the symbols that map to unk without being the unk token itself
            unknown = sum(1 for t, i in zip(tokens, ids) if i == self._source_unk and t != vocab.tokens[i])
        return _Prepared(tokens, ids + self._source_eos, unknown)

    def _target_ids(self, item: InputText, where: str) -> list[int]:
        vocab = self.bundle.target.vocab
        if not isinstance(item, str) and not (isinstance(item, (list, tuple)) and all(isinstance(t, str) for t in item)):
            raise TypeError(f"{where}: expected a string or a list of token strings, got {item!r:.60}")
        try:
            return vocab.encode(item)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def _prefixes(self, target_prefix: Sequence[InputText | None] | None, count: int) -> list[tuple[int, ...]]:
        if target_prefix is None:
            return [()] * count
        if isinstance(target_prefix, str) or len(target_prefix) != count:
            raise ValueError(f"target_prefix: expected a list with one prefix (or None) per input ({count})")
        return [() if p is None else tuple(self._target_ids(p, f"target_prefix[{i}]"))
                for i, p in enumerate(target_prefix)]

    def _decoding(self, options: GenerationOptions) -> _Decoding:
        """Check the options against this model and derive what a call needs from them once."""
        for name in ("return_attention", "replace_unknowns"):
            if getattr(options, name) and not self.has_attention:
                raise ValueError(f"{name}: this model has no attention")
        if options.replace_unknowns and "unk" not in self.bundle.target.special_ids:
            raise ValueError("replace_unknowns: the target vocabulary has no unk token")
        entropy = 0
        if options.strategy == "sample":
            entropy = np.random.SeedSequence().entropy if options.seed is None else options.seed
        return _Decoding(options, self._suppressed_ids(options), entropy)

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
        caps = [c for c in (options.max_length,
                            None if options.max_length_ratio is None
                            else max(1, math.ceil(options.max_length_ratio * source_length))) if c is not None]
        max_length = min(caps) if caps else self.bundle.default_max_length(source_length)
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
        values = self._encoder.run(None, {names[0]: ids, names[1]: np.array(lengths, dtype=np.int64)})
        return dict(zip(self._encoder_roles, values))

    def _padded_like(self, role: str, value: np.ndarray, rows: int, source_length: int) -> np.ndarray:
        """An array for `rows` rows and `source_length` positions of an encoder output, filled with what the encoder
        outputs at padded positions: zeros, and for the memory bias its mask value (read once from the encoder)."""
        spec = self._encoder_spec.outputs[role]
        shape = list(value.shape)
        shape[spec.batch_axis] = rows
        if roles.SOURCE_DIM in spec.shape:
            shape[spec.shape.index(roles.SOURCE_DIM)] = source_length
        if role != roles.MEMORY_BIAS:
            return np.zeros(shape, dtype=value.dtype)
        if self._mask_value is None:
            some_id = self.bundle.source.special_ids.get("unk", 1)
            self._mask_value = self._run_encoder([[some_id], [some_id, some_id]])[roles.MEMORY_BIAS][0, 1]
        return np.full(shape, self._mask_value, dtype=value.dtype)

    @contextmanager
    def _runner(self, states: dict[str, np.ndarray], statics: dict[str, np.ndarray], with_attention: bool,
                top_k: int = 1) -> Iterator[DecoderRunner]:
        """A runner for one batch. Bound runners are kept per thread, by the shapes they hold, and reused by the next
        batch of the same shapes (a service decoding single inputs meets a handful of source lengths); one in use is
        never shared."""
        if not self._io_binding:
            yield ArrayRunner(self._step_graph, states, statics, with_attention, top_k)
            return
        captured = None if self._capture is None else self._capture.runner(states, statics, with_attention, top_k)
        if captured is not None:  # else too many rows for a bucket, or its buffers are busy in another thread
            try:
                yield captured
            finally:
                captured.release()
            return
        idle = self._idle_runners.__dict__.setdefault("runners", OrderedDict())  # by shapes, least recent first
        runner = idle.pop(BoundRunner.key_of(states, statics, with_attention, top_k), None)
        if runner is None or not runner.reset(states, statics):
            device_type, _, device_id = self.placement.device.partition(":")
            runner = BoundRunner(self._step_graph, states, statics, with_attention, top_k=top_k,
                                 device_type=device_type, device_id=int(device_id or 0), gather=self._gather)
        yield runner
        idle[runner.key()] = runner  # only after a clean finish: an abandoned stream keeps its own
        if len(idle) > IDLE_RUNNERS_PER_THREAD:
            idle.popitem(last=False)

    def _decode_batch(self, items: list[_Prepared], limits: list[RowLimits], decoding: _Decoding
                      ) -> list[list[Candidate]]:
        options = decoding.options
        states, statics = self._encode([item.ids for item in items])
        with_attention = self._wants_attention(options)
        if options.strategy == "beam":
            copies = np.repeat(np.arange(len(items)), options.beam)  # beam_search wants each input beam times
            states, statics = take_rows(states, copies, self._batch_axes), take_rows(statics, copies, self._batch_axes)
            top_k = 1  # rank in the graph when it can and nothing needs the full log-probs (see beam_search)
            vocab = self._step_spec.outputs[roles.LOG_PROBS].shape[-1]
            if self._step_graph.ranks and 2 * options.beam <= vocab and \
                    not needs_full_log_probs(limits, options, decoding.suppressed):
                top_k = 2 * options.beam
            with self._runner(states, statics, with_attention, top_k) as runner:
                return beam_search(runner, start_id=self.bundle.start_id, eos_id=self.bundle.eos_id, limits=limits,
                                   options=options, suppressed=decoding.suppressed, collect_attention=with_attention)
        if options.strategy == "greedy" and chooses_in_graph(self._step_graph.selects, limits, options,
                                                             decoding.suppressed, with_attention):
            with self._runner(states, statics, with_attention) as runner:
                return [[c] for c in greedy_in_graph(runner, start_id=self.bundle.start_id,
                                                     eos_id=self.bundle.eos_id, limits=limits)]
        copies = options.num_hypotheses
        rows = np.repeat(np.arange(len(items)), copies)  # each input `copies` times (independent samples)
        if copies > 1:
            states, statics = take_rows(states, rows, self._batch_axes), take_rows(statics, rows, self._batch_axes)
        candidates = run_sample_search(self._sample_rows(states, statics, [items[i] for i in rows],
                                                         [limits[i] for i in rows], decoding, copies))
        n_best = [candidates[i * copies:(i + 1) * copies] for i in range(len(items))]
        return [sorted(c, key=lambda h: -normalized_score(h, options)) for c in n_best]

    def _sample_rows(self, states: dict[str, np.ndarray], statics: dict[str, np.ndarray], items: list[_Prepared],
                     limits: list[RowLimits], decoding: _Decoding, copies: int):
        options, rngs = decoding.options, None
        if options.strategy == "sample":
            # Each row's random stream depends only on the seed, the input and the sample number, so an input's
            # samples are the same whatever else is in the batch.
            rngs = [np.random.default_rng(np.random.SeedSequence([decoding.entropy, row % copies, len(item.ids),
                                                                  *item.ids, len(lim.prefix), *lim.prefix]))
                    for row, (item, lim) in enumerate(zip(items, limits))]
        with_attention = self._wants_attention(options)
        with self._runner(states, statics, with_attention) as runner:
            return (yield from sample_search(runner, start_id=self.bundle.start_id, eos_id=self.bundle.eos_id,
                                             limits=limits, options=options, rngs=rngs,
                                             suppressed=decoding.suppressed, collect_attention=with_attention))

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

    def _hypothesis(self, candidate: Candidate, item: _Prepared, options: GenerationOptions) -> Hypothesis:
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


def _as_input_list(inputs: object) -> list:
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    raise TypeError(f"inputs: expected a string, a list of strings or a list of token lists, "
                    f"got {type(inputs).__name__}")


def load(bundle_dir: str | Path, device: str = "auto", *, intra_op_threads: int = 1, inter_op_threads: int = 1,
         allow_spinning: bool = False, optimization_level: str = "all", io_binding: bool = True,
         cuda_graph: bool = False) -> Seq2SeqModel:
    """Load a bundle directory and create its onnxruntime sessions.

    Arguments:
        bundle_dir: a directory written by `s2s export`.
        device: "auto" (CUDA if it really loads, else CPU; one log line says which and why), "cpu", "cuda" or
            "cuda:N" (a DeviceError if CUDA cannot be used).
        intra_op_threads, inter_op_threads, allow_spinning, optimization_level, io_binding: session settings
            (see SessionSettings for the defaults and why).
        cuda_graph: on CUDA, replay the decoder step as captured CUDA graphs, one per batch-size and
            source-length bucket (see s2s_runtime.capture); no effect on the CPU.

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
    return Seq2SeqModel(Bundle.open(bundle_dir), device=device, settings=settings)
