"""The loaded model: tokenizes inputs, encodes each batch once, drives the decoder step with cached states."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import roles
from .batching import length_sorted_batches
from .bundle import Bundle
from .config import GenerationOptions
from .search import Hypothesis, greedy_search
from .sessions import SessionSettings, create_sessions


@dataclass(frozen=True)
class Result:
    """The output for one input.

    Attributes:
        text: the detokenized output (characters joined, or symbols joined by spaces).
        tokens / ids: the output tokens and their ids, eos excluded.
        score: sum of the log-probabilities of the output tokens (and of eos, when emitted).
        finished: True if the model emitted eos, False if the length limit stopped it.
        unknown_source_tokens: how many input symbols were not in the source vocabulary (mapped to unk).
    """

    text: str
    tokens: list[str]
    ids: list[int]
    score: float
    finished: bool = True
    unknown_source_tokens: int = 0


@dataclass
class _Prepared:
    """An input after tokenization."""

    ids: list[int]
    unknown: int
    empty: bool = field(default=False)


class Seq2SeqModel:
    """A bundle loaded into onnxruntime sessions. Create with `s2s_runtime.load`.

    `generate` is safe to call from several threads at once (onnxruntime sessions are thread-safe and each call keeps
    its own states).
    """

    def __init__(self, bundle: Bundle, *, device: str = "auto", settings: SessionSettings = SessionSettings()):
        self.bundle = bundle
        graphs = [bundle.graphs["encoder"], bundle.graphs["decoder_step"]]
        (self._encoder, self._decoder), self.placement = create_sessions(graphs, device, settings)
        self._encoder_spec, self._step_spec = graphs
        self._batch_axes = {role: spec.batch_axis for role, spec in self._step_spec.inputs.items()}
        self._state_outputs = [role for role in self._step_spec.outputs if roles.is_state(role)]
        self._step_output_names = [self._step_spec.outputs[r].name for r in [roles.LOG_PROBS] + self._state_outputs]
        self._encoder_roles = list(self._encoder_spec.outputs)
        self._source_unk = bundle.source.special_ids.get("unk")
        self._source_eos = [bundle.source.special_ids["eos"]] if bundle.manifest["config"].get("source_eos") else []

    @property
    def device(self) -> str:
        """"cpu" or "cuda:N": where the sessions actually run."""
        return self.placement.device

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the sessions actually use, in priority order."""
        return self.placement.providers

    def __repr__(self) -> str:
        return f"Seq2SeqModel({str(self.bundle.root)!r}, device={self.device!r})"

    # ---- public API ----------------------------------------------------------------------------------------------

    def generate(self, inputs: str | Sequence[str] | Sequence[Sequence[str]], *,
                 options: GenerationOptions | None = None, **kwargs: Any) -> list[Result]:
        """Generate one output per input.

        Arguments:
            inputs: a string, a list of strings, or a list of pre-tokenized inputs (lists of source symbols).
                An empty input gives an empty output (score 0) without running the model.
            options: a GenerationOptions; keyword arguments (e.g. max_length=20) override its fields.

        Returns:
            A list of Result, one per input, in input order.

        Raises:
            TypeError: inputs of the wrong type, or an unknown option.
            ValueError: an input longer than the bundle's max_source_length, or an invalid option value.

        Example:
            >>> model = s2s_runtime.load("bundle/")  # doctest: +SKIP
            >>> model.generate(["hello", "world"], max_length=20)[0].text  # doctest: +SKIP
            'olleh'
        """
        options = GenerationOptions.from_kwargs(kwargs, options)
        prepared = [self._prepare(item, index) for index, item in enumerate(_as_input_list(inputs))]
        results: list[Result | None] = [None] * len(prepared)
        for index, item in enumerate(prepared):
            if item.empty:
                results[index] = Result("", [], [], 0.0, True, 0)
        pending = [i for i, item in enumerate(prepared) if not item.empty]
        for batch in length_sorted_batches([len(prepared[i].ids) for i in pending], options.max_batch_size):
            rows = [pending[i] for i in batch]
            hypotheses = self._generate_batch([prepared[i].ids for i in rows], options)
            for row, hypothesis in zip(rows, hypotheses):
                results[row] = self._result(hypothesis, prepared[row].unknown)
        return results  # type: ignore[return-value]

    # ---- internals -----------------------------------------------------------------------------------------------

    def _prepare(self, item: str | Sequence[str], index: int) -> _Prepared:
        vocab = self.bundle.source.vocab
        if isinstance(item, str):
            tokens = vocab.split(item)
        elif isinstance(item, (list, tuple)) and all(isinstance(t, str) for t in item):
            tokens = list(item)
        else:
            raise TypeError(f"inputs[{index}]: expected a string or a list of token strings, got {item!r:.60}")
        if not tokens:
            return _Prepared([], 0, empty=True)
        ids = vocab.encode(tokens)
        if len(ids) + len(self._source_eos) > self.bundle.max_source_length:
            raise ValueError(f"inputs[{index}]: {len(ids)} source tokens exceed the bundle's max_source_length "
                             f"{self.bundle.max_source_length}")
        unknown = sum(1 for t, i in zip(tokens, ids) if i == self._source_unk and t != vocab.tokens[i])
        return _Prepared(ids + self._source_eos, unknown)

    def _encode(self, sources: list[list[int]]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        lengths = np.array([len(s) for s in sources], dtype=np.int64)  # (batch,)
        ids = np.full((len(sources), lengths.max()), self.bundle.source.special_ids["pad"], dtype=np.int64)
        for row, source in enumerate(sources):
            ids[row, :len(source)] = source  # (batch, source_length)
        inputs = self._encoder_spec.inputs
        values = self._encoder.run(None, {inputs[roles.SOURCE_IDS].name: ids, inputs[roles.SOURCE_LENGTHS].name: lengths})
        encoded = dict(zip(self._encoder_roles, values))
        needed = [r for r in self._step_spec.inputs if r != roles.PREVIOUS_IDS]
        states = {r: encoded[r] for r in needed if roles.is_state(r)}
        statics = {r: encoded[r] for r in needed if not roles.is_state(r)}
        return states, statics, lengths

    def _step(self, previous: np.ndarray, states: dict[str, np.ndarray], statics: dict[str, np.ndarray]
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        inputs = self._step_spec.inputs
        feeds = {inputs[roles.PREVIOUS_IDS].name: previous}
        feeds.update({inputs[role].name: value for role, value in states.items()})
        feeds.update({inputs[role].name: value for role, value in statics.items()})
        log_probs, *new_states = self._decoder.run(self._step_output_names, feeds)
        return log_probs, dict(zip(self._state_outputs, new_states))

    def _generate_batch(self, sources: list[list[int]], options: GenerationOptions) -> list[Hypothesis]:
        states, statics, lengths = self._encode(sources)
        if options.max_length is not None:
            max_lengths = np.full(len(sources), options.max_length)
        else:
            max_lengths = np.array([self.bundle.default_max_length(int(n)) for n in lengths])
        return greedy_search(self._step, states, statics, self._batch_axes, start_id=self.bundle.start_id,
                             eos_id=self.bundle.eos_id, max_lengths=max_lengths)

    def _result(self, hypothesis: Hypothesis, unknown: int) -> Result:
        vocab = self.bundle.target.vocab
        tokens = vocab.decode_tokens(hypothesis.ids)
        return Result(vocab.join(tokens), tokens, hypothesis.ids, hypothesis.score, hypothesis.finished, unknown)


def _as_input_list(inputs: object) -> list:
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    raise TypeError(f"inputs: expected a string, a list of strings or a list of token lists, "
                    f"got {type(inputs).__name__}")


def load(bundle_dir: str | Path, device: str = "auto", *, intra_op_threads: int = 1, inter_op_threads: int = 1,
         allow_spinning: bool = False, optimization_level: str = "all") -> Seq2SeqModel:
    """Load a bundle directory and create its onnxruntime sessions.

    Arguments:
        bundle_dir: a directory written by `s2s export`.
        device: "auto" (CUDA if it really loads, else CPU; one log line says which and why), "cpu", "cuda" or
            "cuda:N" (a DeviceError if CUDA cannot be used).
        intra_op_threads, inter_op_threads, allow_spinning, optimization_level: onnxruntime session settings
            (see SessionSettings for the defaults and why).

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
    settings = SessionSettings(intra_op_threads, inter_op_threads, allow_spinning, optimization_level)
    return Seq2SeqModel(Bundle.open(bundle_dir), device=device, settings=settings)

