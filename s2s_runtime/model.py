"""The loaded model: a bundle's sessions, with the one door through which inputs become results.

A call runs in three stages, each public so a service can run them apart: `plan` checks the options against the
model, `prepare` checks and tokenizes one input (every error an input can cause is raised here, before any
decoding), and `start` decodes prepared inputs step by step (s2s_runtime.generation); `decode` runs `start` to the
end per length-sorted batch, and `generate` is the three stages in a row. The parts live in their own modules:
inputs (preparation), plan (options against the model), encoding (the encoder), runner (the decoder step),
decoding (strategies and logits processors), results.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import roles
from .batching import BatchingOptions, length_sorted_batches
from .bundle import Bundle, BundleError
from .config import GenerationOptions
from .engine.capture import GraphCapture
from .engine.device import OrtValueDevice, device_for
from .engine.encoding import Encoder
from .engine.runner import LOG_PROBS, ArrayBuffers, Runners, StepGraph
from .engine.sessions import (
    DeviceError,
    SessionSettings,
    create_capture_session,
    create_sessions,
    cuda_works,
    parse_device,
)
from .generation import Generation, Stop
from .inputs import InputPreparer, InputText, PreparedInput, as_input_list, prefix_list
from .limits import RequestLimits
from .plan import DecodingPlan, Planner
from .results import Hypothesis, Result, StreamedToken, TokenScore

__all__ = [
    "DecodingPlan",
    "Hypothesis",
    "PreparedInput",
    "Result",
    "Seq2SeqModel",
    "StreamedToken",
    "TokenScore",
    "check_streamable",
    "load",
]

log = logging.getLogger("s2s_runtime")


class Seq2SeqModel:
    """A bundle loaded into onnxruntime sessions. Create with `s2s_runtime.load`.

    All methods are safe to call from several threads at once: onnxruntime sessions are thread-safe and every call
    keeps its own states.

    Attributes:
        bundle: the validated bundle.
        encoder: the encoder (s2s_runtime.engine.encoding.Encoder).
        step_graph, runners: the decoder step and the runners over it (s2s_runtime.engine.runner).
        limits, max_output_length: the RequestLimits and the output length cap they give this bundle.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: str = "auto",
        settings: SessionSettings = SessionSettings(),
        limits: RequestLimits = RequestLimits(),
    ):
        self.bundle = bundle
        graphs = [bundle.graphs["encoder"], bundle.graphs["decoder_step"]]
        if bundle.manifest.precision == "float16":
            device = _cuda_only(device)  # onnxruntime's CPU kernels cannot run these graphs (it may even crash)
        (encoder, decoder), self.placement = create_sessions(graphs, device, settings)
        padding = bundle.manifest.memory_bias_padding
        self.encoder = Encoder(encoder, graphs[0], graphs[1], bundle.source.special_ids["pad"], padding)
        self.step_graph = StepGraph.of(decoder, graphs[1], padding)
        self._device = device_for(self.placement)  # compaction and beam reordering where the states live
        self.runners = Runners(
            self.step_graph, self._device, io_binding=settings.io_binding, capture=self._graph_capture(settings)
        )
        self.limits = limits
        self.max_output_length = limits.max_output_length or bundle.default_max_length(bundle.max_source_length)
        self._inputs = InputPreparer(bundle, self.max_output_length)
        self._planner = Planner(bundle, self.has_attention, limits, self.max_output_length)
        self._probe()

    def _probe(self) -> None:
        """Run the encoder on the highest source id and one step on the highest target id, and compare every output
        shape with the manifest: a vocabulary larger than a graph's embedding table, or a declared size the graph
        does not have, is a BundleError at load naming the file — not an onnxruntime error at the first request."""
        highest = {"encoder": len(self.bundle.source.vocab) - 1, "decoder_step": len(self.bundle.target.vocab) - 1}
        spec = self.encoder.spec
        try:
            encoded = self.encoder.run([[highest["encoder"]]])
        except Exception as error:  # noqa: BLE001 (onnxruntime's own exception types)
            raise BundleError(
                f"{spec.path}: the graph fails on source id {highest['encoder']}, the highest of "
                f"the source vocabulary ({str(error).strip()[:200]})"
            ) from None
        outputs = dict(encoded)
        spec = self.step_graph.spec
        states = {role: encoded[role] for role in self.encoder.state_roles}
        statics = {role: encoded[role] for role in self.encoder.static_roles}
        try:
            buffers = ArrayBuffers(self.step_graph, states, statics, False)
            buffers.set_previous(np.array([highest["decoder_step"]], dtype=np.int64))
            buffers.run(LOG_PROBS)
            log_probs = buffers.log_probs()
        except Exception as error:  # noqa: BLE001 (onnxruntime's own exception types)
            raise BundleError(
                f"{spec.path}: the graph fails on target id {highest['decoder_step']}, the highest "
                f"of the target vocabulary ({str(error).strip()[:200]})"
            ) from None
        outputs[roles.LOG_PROBS] = log_probs
        for role, value in outputs.items():
            graph = self.encoder.spec if role in encoded else self.step_graph.spec
            declared = graph.outputs[role].shape
            if len(value.shape) != len(declared):
                raise BundleError(
                    f"{graph.path}: output {role!r} has {len(value.shape)} dimensions, manifest.json "
                    f"declares {len(declared)}"
                )
            for axis, (real, claimed) in enumerate(zip(value.shape, declared, strict=True)):
                if isinstance(claimed, int) and real != claimed:
                    raise BundleError(
                        f"{graph.path}: output {role!r} has size {real} on axis {axis}, manifest.json "
                        f"declares {claimed}"
                    )

    def _graph_capture(self, settings: SessionSettings) -> GraphCapture | None:
        if not settings.cuda_graph:
            return None
        device = self._device
        if not isinstance(device, OrtValueDevice) or not device.captures or not settings.io_binding:
            log.info(
                "s2s_runtime: cuda_graph=True has no effect: %s",
                "it needs io_binding" if device.captures else f"the model runs on the CPU ({self.placement.reason})",
            )
            return None
        session = create_capture_session(self.step_graph.spec, device.device_id, settings)
        if session is None:
            return None
        return GraphCapture(
            StepGraph.of(session, self.step_graph.spec, self.bundle.manifest.memory_bias_padding),
            device.gather,
            device.device_type,
            device.device_id,
        )

    @property
    def device(self) -> str:
        """ "cpu" or "cuda:N": where the sessions actually run."""
        return self.placement.device

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the sessions actually use, in priority order."""
        return self.placement.providers

    @property
    def has_attention(self) -> bool:
        return roles.ATTENTION in self.step_graph.spec.outputs

    def __repr__(self) -> str:
        return f"Seq2SeqModel({str(self.bundle.root)!r}, device={self.device!r})"

    # ---- public API ----------------------------------------------------------------------------------------------

    def generate(
        self,
        inputs: InputText | Sequence[InputText],
        *,
        target_prefix: Sequence[InputText | None] | None = None,
        options: GenerationOptions | None = None,
        batching: BatchingOptions | None = None,
        **kwargs: Any,
    ) -> list[Result]:
        """Generate outputs for each input.

        Arguments:
            inputs: a string, a list of strings, or a list of pre-tokenized inputs (lists of source symbols).
                An empty input gives an empty output (score 0) without running the model.
            target_prefix: optional, one per input: a target text or token list every output of that input starts
                with (None for no prefix).
            options: a GenerationOptions; keyword arguments (strategy="beam", max_length=20, ...) override its fields.
            batching: a BatchingOptions (how many inputs are decoded together); its fields (max_batch_size,
                max_batch_tokens) can be keyword arguments too.

        Returns:
            A list of Result, one per input, in input order; `result.hypotheses` holds the n-best, best first.

        Raises:
            TypeError: inputs of the wrong type, or an unknown option.
            ValueError: an input longer than the bundle's max_source_length, an invalid option, or an option past
                the model's RequestLimits.

        Examples:
            >>> model = s2s_runtime.load("g2p-en")
            >>> model.generate(["hello", "world"], strategy="beam", beam_size=4)[0].text
            'HH EH L OW'
        """
        batching, kwargs = BatchingOptions.split(kwargs, batching)
        plan = self.plan(GenerationOptions.from_kwargs(kwargs, options))
        items = as_input_list(inputs)
        prefixes = prefix_list(target_prefix, len(items))
        prepared = [
            self.prepare(item, plan, target_prefix=prefix, index=index)
            for index, (item, prefix) in enumerate(zip(items, prefixes, strict=True))
        ]
        return self.decode(prepared, plan, batching=batching)

    def plan(self, options: GenerationOptions) -> DecodingPlan:
        """Check options against this model — its attention, vocabulary and RequestLimits — once per distinct
        options (cached).

        Raises:
            TypeError: `options` is not a GenerationOptions.
            ValueError: an option this model cannot honour, naming it.

        Examples:
            >>> s2s_runtime.load("g2p-en").plan(GenerationOptions(strategy="beam", beam_size=4)).rows_per_input
            4
        """
        return self._planner.plan(options)

    def prepare(
        self, source: InputText, plan: DecodingPlan, *, target_prefix: InputText | None = None, index: int = 0
    ) -> PreparedInput:
        """Tokenize one input, resolve its target prefix and fix its length limits; every error the input can cause
        is raised here, naming `inputs[index]` (or `target_prefix[index]`).

        Raises:
            TypeError: the input or prefix is not a string or a list of token strings.
            ValueError: the input is longer than max_source_length, a prefix token is not in the target vocabulary,
                or its lengths pass the model's limits.

        Examples:
            >>> model = s2s_runtime.load("g2p-en")
            >>> model.prepare("hello", model.plan(GenerationOptions())).tokens
            ['h', 'e', 'l', 'l', 'o']
        """
        return self._inputs.prepare(source, plan.options, plan.rows_per_input, target_prefix, index)

    def start(self, items: Sequence[PreparedInput], plan: DecodingPlan, *, events: bool = False) -> Generation:
        """Begin decoding prepared inputs together, as one batch (see s2s_runtime.generation). `events`: every
        step reports its tokens (the graph-chosen greedy paths that keep them to themselves are not used).

        Examples:
            >>> model = s2s_runtime.load("g2p-en")
            >>> plan = model.plan(GenerationOptions())
            >>> generation = model.start([model.prepare("hello", plan)], plan)
            >>> while not generation.is_done():
            ...     _ = generation.step()
            >>> generation.results()[0].text
            'HH EH L OW'
        """
        return Generation(self, list(items), plan, events=events)

    def decode(
        self,
        items: Sequence[PreparedInput],
        plan: DecodingPlan,
        *,
        batching: BatchingOptions = BatchingOptions(),
        stop: Stop | None = None,
    ) -> list[Result]:
        """Decode prepared inputs in length-sorted batches (see BatchingOptions); one Result per input, in order.
        `stop`, if given, is asked between decoder steps; when it returns True decoding ends with
        s2s_runtime.generation.DecodingStopped.

        Examples:
            >>> model = s2s_runtime.load("g2p-en")
            >>> plan = model.plan(GenerationOptions(strategy="beam"))
            >>> [r.text for r in model.decode([model.prepare(w, plan) for w in ("a", "hi")], plan)]
            ['AH', 'HH AY']
        """
        entropy = plan.entropy()
        results: list[Result | None] = [None] * len(items)
        for batch in length_sorted_batches(
            [len(item.ids) for item in items], batching.max_batch_size, batching.max_batch_tokens
        ):
            generation = Generation(self, [items[i] for i in batch], plan, events=False, entropy=entropy)
            for index, result in zip(batch, generation.run(stop), strict=True):
                results[index] = result
        return results  # type: ignore[return-value]

    def generate_stream(
        self,
        source: InputText,
        *,
        target_prefix: InputText | None = None,
        options: GenerationOptions | None = None,
        **kwargs: Any,
    ) -> Iterator[StreamedToken]:
        """Yield the output tokens of one input as they are produced (greedy or sampling).

        Examples:
            >>> " ".join(map(str, s2s_runtime.load("g2p-en").generate_stream("hello")))
            'HH EH L OW'
        """
        plan = self.plan(GenerationOptions.from_kwargs(kwargs, options))
        check_streamable(plan)
        return self.stream(self.prepare(source, plan, target_prefix=target_prefix), plan)

    def stream(self, item: PreparedInput, plan: DecodingPlan, *, stop: Stop | None = None) -> Iterator[StreamedToken]:
        """The tokens of one prepared input as they are produced (greedy or sampling); `stop` as in `decode`.

        Examples:
            >>> model = s2s_runtime.load("g2p-en")
            >>> plan = model.plan(GenerationOptions())
            >>> [t.token for t in model.stream(model.prepare("hi", plan), plan)]
            ['HH', 'AY']
        """
        check_streamable(plan)
        tokens = self.bundle.target.vocab.tokens
        with self.start([item], plan, events=True) as generation:
            while not generation.is_done():
                if stop is not None and stop():
                    from .generation import DecodingStopped

                    raise DecodingStopped()
                event = generation.step()
                if event is not None and not event.ended[0]:
                    token_id = int(event.tokens[0])
                    yield StreamedToken(tokens[token_id], token_id, float(event.log_probs[0]))

    def score(
        self, sources: Sequence[InputText], targets: Sequence[InputText], *, max_batch_size: int = 64
    ) -> list[TokenScore]:
        """Forced decoding: the log-prob of every target token (then of eos) given its source, batched.

        Examples:
            >>> model.score(["hello"], ["olleh"])[0].score  # doctest: +SKIP
            -0.016
        """
        sources, targets = as_input_list(sources), as_input_list(targets)
        if len(sources) != len(targets):
            raise ValueError(f"targets: {len(targets)} targets for {len(sources)} sources")
        prepared = [self._inputs.source(item, index) for index, item in enumerate(sources)]
        for index, item in enumerate(prepared):
            if not item[1]:
                raise ValueError(f"sources[{index}]: an empty source cannot be scored")
        target_ids = [self._inputs.target_ids(t, f"targets[{i}]") for i, t in enumerate(targets)]
        results: list[TokenScore | None] = [None] * len(prepared)
        for batch in length_sorted_batches([len(p[1]) for p in prepared], max_batch_size):
            log_probs = self._forced_log_probs([prepared[i][1] for i in batch], [target_ids[i] for i in batch])
            for i, row_log_probs in zip(batch, log_probs, strict=True):
                tokens = self.bundle.target.vocab.decode_tokens(target_ids[i])
                results[i] = TokenScore(tokens, target_ids[i], row_log_probs, float(sum(row_log_probs)))
        return results  # type: ignore[return-value]

    def _forced_log_probs(self, sources: list[list[int]], targets: list[list[int]]) -> list[list[float]]:
        states, statics = self.encoder.encode(sources)
        with self.runners.runner(states, statics, False) as runner:
            return self._forced_steps(runner, targets)

    def _forced_steps(self, runner: Any, targets: list[list[int]]) -> list[list[float]]:
        eos = self.bundle.eos_id
        steps = max(len(t) for t in targets) + 1
        forced = np.full((len(targets), steps), eos, dtype=np.int64)  # (batch, steps): target then eos (and filler)
        for row, target in enumerate(targets):
            forced[row, : len(target)] = target
        previous = np.full(len(targets), self.bundle.start_id, dtype=np.int64)
        chosen = np.zeros((len(targets), steps))
        for t in range(steps):
            log_probs, _ = runner.step(previous)  # (batch, vocab)
            chosen[:, t] = log_probs[np.arange(len(targets)), forced[:, t]]
            previous = forced[:, t]
        return [chosen[row, : len(target) + 1].tolist() for row, target in enumerate(targets)]


def _cuda_only(device: str) -> str:
    """The device for a float16 bundle: CUDA, or a DeviceError naming the precision."""
    kind, device_id = parse_device(device)
    works, why = cuda_works(device_id) if kind != "cpu" else (False, "device='cpu' requested")
    if not works:
        raise DeviceError(f"this bundle is float16 (s2s export --fp16) and runs on CUDA only: {why}")
    return f"cuda:{device_id}"


def check_streamable(plan: DecodingPlan) -> None:
    """Streaming yields one hypothesis token by token: a streamable strategy, one hypothesis."""
    if not plan.strategy.streamable:
        raise ValueError(
            f"strategy: {plan.options.strategy} search is not streamable (the best hypothesis is known "
            "only at the end); use strategy='greedy' or 'sample', or generate()"
        )
    if plan.options.num_hypotheses != 1:
        raise ValueError("num_hypotheses: streaming produces one hypothesis")


def load(
    bundle_dir: str | Path,
    device: str = "auto",
    *,
    intra_op_threads: int = 1,
    inter_op_threads: int = 1,
    allow_spinning: bool = False,
    optimization_level: str = "all",
    io_binding: bool = True,
    cuda_graph: bool = False,
    limits: RequestLimits = RequestLimits(),
) -> Seq2SeqModel:
    """Load a bundle directory and create its onnxruntime sessions.

    Arguments:
        bundle_dir: a directory written by `s2s export`.
        device: "auto" (CUDA if it really loads, else CPU; one log line says which and why), "cpu", "cuda" or
            "cuda:N" (a DeviceError if CUDA cannot be used).
        intra_op_threads: onnxruntime intra-op threads (see SessionSettings for the defaults and why).
        inter_op_threads: onnxruntime inter-op threads.
        allow_spinning: let idle onnxruntime threads spin (SessionSettings says why it is off).
        optimization_level: onnxruntime graph optimization: "disable", "basic", "extended" or "all".
        io_binding: preallocated, double-buffered decoder state buffers (device-resident on CUDA).
        cuda_graph: on CUDA, replay the decoder step as captured CUDA graphs, one per batch-size and
            source-length bucket (see s2s_runtime.engine.capture); no effect on the CPU.
        limits: the most work one request may ask for (a RequestLimits: beams, hypotheses, output length,
            decoder tokens per service request).

    Returns:
        A Seq2SeqModel.

    Raises:
        BundleError: the bundle is missing, corrupt (checksums), or its graphs do not match its manifest.
        DeviceError: device="cuda" and CUDA cannot be used.

    Examples:
        >>> import s2s_runtime
        >>> model = s2s_runtime.load("bundle/", device="cpu")  # doctest: +SKIP
        >>> model.generate("hello")[0].text  # doctest: +SKIP
    """
    settings = SessionSettings(
        intra_op_threads, inter_op_threads, allow_spinning, optimization_level, io_binding, cuda_graph
    )
    return Seq2SeqModel(Bundle.open(bundle_dir), device=device, settings=settings, limits=limits)
