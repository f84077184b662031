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
    arrays, numpy argmax over the full log-probs, every row computed until all rows have ended."""

    def __init__(self, bundle: Path, threads: int):
        super().__init__("hand-written onnxruntime loop", ("greedy",))
        import onnxruntime as ort

        self.bundle = Bundle.open(bundle)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.encoder = ort.InferenceSession(str(self.bundle.graphs["encoder"].path), options,
                                            providers=["CPUExecutionProvider"])
        self.decoder = ort.InferenceSession(str(self.bundle.graphs["decoder_step"].path), options,
                                            providers=["CPUExecutionProvider"])

    def run(self, sources: Sequence[str], strategy: str) -> int:
        bundle, vocab = self.bundle, self.bundle.source.vocab
        eos = [bundle.source.special_ids["eos"]] if bundle.manifest["config"].get("source_eos") else []
        encoded = [vocab.encode(s) + eos for s in sources]
        lengths = np.array([len(s) for s in encoded], dtype=np.int64)
        ids = np.zeros((len(encoded), lengths.max()), dtype=np.int64)
        for row, source in enumerate(encoded):
            ids[row, :len(source)] = source
        encoder, step = bundle.graphs["encoder"], bundle.graphs["decoder_step"]
        values = dict(zip(encoder.outputs, self.encoder.run(None, {encoder.inputs[roles.SOURCE_IDS].name: ids,
                                                                    encoder.inputs[roles.SOURCE_LENGTHS].name: lengths})))
        output_roles = list(step.outputs)
        previous = np.full(len(encoded), bundle.start_id, dtype=np.int64)
        done = np.zeros(len(encoded), dtype=bool)
        tokens = 0
        for _ in range(bundle.default_max_length(int(lengths.max()))):
            feeds = {io.name: previous if role == roles.PREVIOUS_IDS else values[role] for role, io in step.inputs.items()}
            outputs = dict(zip(output_roles, self.decoder.run(None, feeds)))
            previous = outputs[roles.LOG_PROBS].argmax(axis=1)
            tokens += int((~done).sum())
            done |= previous == bundle.eos_id
            values.update({role: value for role, value in outputs.items() if roles.is_state(role)})
            if done.all():
                break
        return tokens


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
            ids[row, :len(source)] = torch.tensor(source)
        limit = self.max_length(int(lengths.max()))
        outputs = self.checkpoint.model.greedy(ids, lengths, start_id=self.start,
                                               eos_id=self.checkpoint.target_vocab.id_of("eos"), max_length=limit)
        return sum(len(o) + (len(o) < limit) for o in outputs)  # + the eos step, unless the limit stopped it
