"""The loaded model: a bundle's sessions, with the one door through which inputs become results.

A call runs in three stages, each public so a service can run them apart: `plan` checks the options against the
model, `prepare` checks and tokenizes one input (every error an input can cause is raised here, before any
decoding), and `start` decodes prepared inputs step by step (s2s_runtime.generation); `decode` runs `start` to the
end per length-sorted batch, and `generate` is the three stages in a row. The parts live in their own modules:
inputs (preparation), plan (options against the model), encoding (the encoder), runner (the decoder step),
decoding (strategies and logits processors), results.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .batching import BatchingOptions
from .bundle import Bundle
from .config import GenerationOptions
from .engine.engine import Engine
from .engine.sessions import DEFAULT_GREEDY_GRAPH_MAX_BATCH, DEFAULT_IDLE_BUFFER_BYTES, SessionSettings
from .generation import Generation, Stop, decode_in_batches, score_in_batches
from .inputs import InputPreparer, InputText, PreparedInput
from .limits import RequestLimits
from .plan import DecodingPlan, Planner
from .results import Hypothesis, Result, StreamedToken, TokenScore
from .single import SingleInput

__all__ = [
    "DecodingPlan",
    "Hypothesis",
    "PreparedInput",
    "Result",
    "Seq2SeqModel",
    "StreamedToken",
    "TokenScore",
    "load",
]


class Seq2SeqModel:
    """A bundle loaded into onnxruntime sessions. Create with `s2s_runtime.load`.

    All methods are safe to call from several threads at once: onnxruntime sessions are thread-safe and every call
    keeps its own states.

    Attributes:
        bundle: the validated bundle.
        engine: its sessions, encoder and decoder-step runners (s2s_runtime.engine.engine.Engine).
        limits, max_output_length: the RequestLimits and the output length cap they give this bundle.
    """

    def __init__(
        self,
        bundle: Bundle,
        *,
        device: str = "auto",
        settings: SessionSettings = SessionSettings(),
        limits=RequestLimits(),
    ):
        self.bundle = bundle
        self.engine = Engine(bundle, device, settings)
        self.limits = limits
        longest_source = min(bundle.max_source_length, limits.max_source_length)
        self.max_output_length = limits.max_output_length or bundle.default_max_length(longest_source)
        self._inputs = InputPreparer(bundle, self.max_output_length, limits.max_source_length)
        self._planner = Planner(bundle, self.engine.has_attention, limits, self.max_output_length)
        fused = self.engine.fused
        self._single = SingleInput(bundle, fused, self._inputs) if fused is not None else None

    @property
    def device(self) -> str:
        """ "cpu" or "cuda:N": where the sessions actually run."""
        return self.engine.placement.device

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the sessions actually use, in priority order."""
        return self.engine.placement.providers

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
            'HH AH0 L OW1'
        """
        if self._single is not None and options is target_prefix is None:  # maybe one input, default options:
            answer = self._single.answer(inputs, kwargs, batching)  # the thin path (s2s_runtime.single)
            if answer is not None:
                return [answer]
        batching, kwargs = BatchingOptions.split(kwargs, batching)
        plan = self.plan(GenerationOptions.from_kwargs(kwargs, options))
        return self.decode(self._inputs.prepare_all(inputs, target_prefix, plan), plan, batching=batching)

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
            'HH AH0 L OW1'
        """
        return Generation(self.engine, list(items), plan, events=events)

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
            ['AH0', 'HH AY1']
        """
        return decode_in_batches(self.engine, list(items), plan, batching, stop)

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
            'HH AH0 L OW1'
        """
        plan = self.plan(GenerationOptions.from_kwargs(kwargs, options))
        plan.check_streamable()
        return self.stream(self.prepare(source, plan, target_prefix=target_prefix), plan)

    def stream(self, item: PreparedInput, plan: DecodingPlan, *, stop: Stop | None = None) -> Iterator[StreamedToken]:
        """The tokens of one prepared input as they are produced (greedy or sampling); `stop` as in `decode`.

        Examples:
            >>> model = s2s_runtime.load("g2p-en")
            >>> plan = model.plan(GenerationOptions())
            >>> [t.token for t in model.stream(model.prepare("hi", plan), plan)]
            ['HH', 'AY1']
        """
        plan.check_streamable()
        with self.start([item], plan, events=True) as generation:
            yield from generation.tokens(stop)

    def score(
        self, sources: Sequence[InputText], targets: Sequence[InputText], *, max_batch_size: int = 64
    ) -> list[TokenScore]:
        """Forced decoding: the log-prob of every target token (then of eos) given its source, batched.

        Examples:
            >>> model.score(["hello"], ["olleh"])[0].score  # doctest: +SKIP
            -0.016
        """
        return score_in_batches(self.engine, self._inputs.scoring_pairs(sources, targets), max_batch_size)


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
    idle_buffer_bytes: int = DEFAULT_IDLE_BUFFER_BYTES,
    greedy_graph_max_batch: int = DEFAULT_GREEDY_GRAPH_MAX_BATCH,
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
        idle_buffer_bytes: the most bytes of decoder buffers kept between calls for reuse, per model and process
            (docs/limits.md: memory).
        greedy_graph_max_batch: plain greedy batches of up to this many inputs run as one call of the bundle's
            greedy graph, larger ones step by step (0: always step by step; docs/performance.md says where the
            default comes from).
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
        intra_op_threads,
        inter_op_threads,
        allow_spinning,
        optimization_level,
        io_binding,
        cuda_graph,
        idle_buffer_bytes,
        greedy_graph_max_batch,
    )
    return Seq2SeqModel(Bundle.open(bundle_dir), device=device, settings=settings, limits=limits)
