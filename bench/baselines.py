"""The contenders of `s2s bench`, each decoding a batch of source strings and returning how many tokens it produced
(eos included): PyTorch eager, a hand-written onnxruntime loop over the plain export, and this runtime."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import s2s_runtime
from s2s_runtime import roles
from s2s_runtime.bundle import Bundle


@dataclass
class Contender:
    name: str
    strategies: tuple[str, ...]

    def run(self, sources: Sequence[str], strategy: str) -> int:
        raise NotImplementedError


class RuntimeContender(Contender):
    """This runtime (optimized graphs, IO binding, compaction)."""

    def __init__(self, name: str, bundle: Path, threads: int, beam_size: int):
        super().__init__(name, ("greedy", "beam"))
        self.model = s2s_runtime.load(bundle, device="cpu", intra_op_threads=threads)
        self.beam_size = beam_size

    def run(self, sources: Sequence[str], strategy: str) -> int:
        options = dict(strategy="beam", beam_size=self.beam_size) if strategy == "beam" else {}
        results = self.model.generate(list(sources), max_batch_size=len(sources), **options)
        return sum(len(r.ids) + r.finished for r in results)


class HandWrittenLoop(Contender):
    """What one writes by hand: session.run over the plain export (ONNX GRU/LSTM op), states passed as numpy
    arrays, numpy argmax (greedy) or a numpy top-k over beams × vocab (beam) on the full log-probs, every row
    computed until all rows have ended."""

    def __init__(self, bundle: Path, threads: int, beam_size: int):
        super().__init__("hand-written onnxruntime loop", ("greedy", "beam"))
        self.beam_size = beam_size
        import onnxruntime as ort

        self.bundle = Bundle.open(bundle)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.encoder = ort.InferenceSession(
            str(self.bundle.graphs["encoder"].path), options, providers=["CPUExecutionProvider"]
        )
        self.decoder = ort.InferenceSession(
            str(self.bundle.graphs["decoder_step"].path), options, providers=["CPUExecutionProvider"]
        )

    def run(self, sources: Sequence[str], strategy: str) -> int:
        bundle, vocab = self.bundle, self.bundle.source.vocab
        eos = [bundle.source.special_ids["eos"]] if bundle.source_eos else []
        encoded = [vocab.encode(s) + eos for s in sources]
        lengths = np.array([len(s) for s in encoded], dtype=np.int64)
        ids = np.zeros((len(encoded), lengths.max()), dtype=np.int64)
        for row, source in enumerate(encoded):
            ids[row, : len(source)] = source
        encoder = bundle.graphs["encoder"]
        feeds = {encoder.inputs[roles.SOURCE_IDS].name: ids, encoder.inputs[roles.SOURCE_LENGTHS].name: lengths}
        outputs = self.encoder.run([io.name for io in encoder.outputs.values()], feeds)  # by name, in role order
        values = dict(zip(encoder.outputs, outputs, strict=True))
        steps = bundle.default_max_length(int(lengths.max()))
        if strategy == "beam":
            return self._beam(values, len(encoded), steps)
        previous = np.full(len(encoded), bundle.start_id, dtype=np.int64)
        done = np.zeros(len(encoded), dtype=bool)
        tokens = 0
        for _ in range(steps):
            log_probs, values = self._step(previous, values)
            previous = log_probs.argmax(axis=1)
            tokens += int((~done).sum())
            done |= previous == bundle.eos_id
            if done.all():
                break
        return tokens

    def _step(self, previous: np.ndarray, values: dict) -> tuple[np.ndarray, dict]:
        step = self.bundle.graphs["decoder_step"]
        feeds = {io.name: previous if role == roles.PREVIOUS_IDS else values[role] for role, io in step.inputs.items()}
        outputs = dict(
            zip(step.outputs, self.decoder.run([io.name for io in step.outputs.values()], feeds), strict=True)
        )
        return outputs[roles.LOG_PROBS], {**values, **{r: v for r, v in outputs.items() if roles.is_state(r)}}

    def _beam(self, values: dict, inputs: int, steps: int) -> int:
        """K beams per input from the start (all but one at -inf), reordered by gathering every tensor each step,
        until every beam has ended."""
        k, axes = (
            self.beam_size,
            {role: io.batch_axis for role, io in self.bundle.graphs["decoder_step"].inputs.items()},
        )
        rows = np.repeat(np.arange(inputs), k)
        values = {role: np.take(v, rows, axis=axes[role]) for role, v in values.items()}
        scores = np.tile(np.r_[0.0, np.full(k - 1, -np.inf)], inputs)  # (inputs·k,)
        previous = np.full(inputs * k, self.bundle.start_id, dtype=np.int64)
        ended = np.zeros(inputs * k, dtype=bool)
        lengths = np.zeros(inputs * k, dtype=np.int64)  # tokens of each beam, eos included
        done_score, done_length = np.full(inputs, -np.inf), np.zeros(inputs, dtype=np.int64)  # best ended beam
        for _ in range(steps):
            log_probs, values = self._step(previous, values)  # (inputs·k, vocab)
            vocab = log_probs.shape[1]
            totals = (scores[:, None] + log_probs).reshape(inputs, k * vocab)
            best = np.argsort(-totals, axis=1)[:, :k]  # (inputs, k)
            parents = (np.arange(inputs)[:, None] * k + best // vocab).ravel()
            previous = (best % vocab).ravel()
            scores = np.take_along_axis(totals, best, axis=1).ravel()
            lengths = lengths[parents] + 1
            values = {role: np.take(v, parents, axis=axes[role]) for role, v in values.items()}
            ended = previous == self.bundle.eos_id
            final = np.where(ended, scores, -np.inf).reshape(inputs, k)
            better = final.max(axis=1) > done_score
            done_length = np.where(
                better, lengths.reshape(inputs, k)[np.arange(inputs), final.argmax(axis=1)], done_length
            )
            done_score = np.maximum(done_score, final.max(axis=1))
            scores = np.where(ended, -np.inf, scores)  # an ended beam is not extended
            if not np.isfinite(scores).any():
                break
        # the best hypothesis of each input, ended or still live; tokens counted like the other contenders
        live = scores.reshape(inputs, k)
        live_length = lengths.reshape(inputs, k)[np.arange(inputs), live.argmax(axis=1)]
        return int(np.where(done_score >= live.max(axis=1), done_length, live_length).sum())


class TorchEager(Contender):
    """The PyTorch model itself, greedy decoding in eager mode (s2s_export's reference decoder)."""

    def __init__(self, checkpoint: Any, threads: int):
        super().__init__("PyTorch eager", ("greedy",))
        import torch

        from s2s_export.checkpoint import start_id
        from s2s_export.train import max_target_length

        torch.set_num_threads(threads)
        self.torch, self.checkpoint = torch, checkpoint
        self.start, self.max_length = start_id(checkpoint.config, checkpoint.target_vocab), max_target_length

    def run(self, sources: Sequence[str], strategy: str) -> int:
        torch, vocab = self.torch, self.checkpoint.source_vocab
        eos = [vocab.id_of("eos")] if self.checkpoint.config.source_eos else []
        encoded = [vocab.encode(s) + eos for s in sources]
        lengths = torch.tensor([len(s) for s in encoded])
        ids = torch.zeros((len(encoded), int(lengths.max())), dtype=torch.long)
        for row, source in enumerate(encoded):
            ids[row, : len(source)] = torch.tensor(source)
        limit = self.max_length(int(lengths.max()))
        outputs = self.checkpoint.model.greedy(
            ids, lengths, start_id=self.start, eos_id=self.checkpoint.target_vocab.id_of("eos"), max_length=limit
        )
        return sum(len(o) + (len(o) < limit) for o in outputs)  # + the eos step, unless the limit stopped it
