"""The contenders of `s2s bench`, each decoding a batch of source strings and returning how many tokens it produced
(eos included): PyTorch eager, a hand-written onnxruntime loop over the plain export, and this runtime."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

import s2s_runtime
from s2s_runtime import roles
from s2s_runtime.bundle import Bundle


@dataclass
class Contender:
    """Decodes a batch of sources to token ids (eos excluded) and says whether each output ended with eos; `run`, what
    the benchmark times, is that and the token count (eos included), so every contender builds its outputs."""

    name: str
    strategies: tuple[str, ...]

    def decode(self, sources: Sequence[str], strategy: str) -> list[tuple[list[int], bool]]:
        raise NotImplementedError

    def run(self, sources: Sequence[str], strategy: str) -> int:
        return sum(len(ids) + finished for ids, finished in self.decode(sources, strategy))


class RuntimeContender(Contender):
    """This runtime (optimized graphs, IO binding, compaction; the greedy graph where it decodes, unless
    `step_loop`)."""

    def __init__(self, name: str, bundle: Path, threads: int, beam_size: int, *, step_loop: bool = False):
        super().__init__(name, ("greedy", "beam"))
        step_loop_only = {"greedy_graph_max_batch": 0} if step_loop else {}  # the runtime without its greedy graph
        self.model = s2s_runtime.load(bundle, device="cpu", intra_op_threads=threads, **step_loop_only)
        self.beam_size = beam_size

    def decode(self, sources: Sequence[str], strategy: str) -> list[tuple[list[int], bool]]:
        options = dict(strategy="beam", beam_size=self.beam_size) if strategy == "beam" else {}
        results = self.model.generate(list(sources), max_batch_size=len(sources), **options)
        return [(r.ids, r.finished) for r in results]


def cut_at_eos(chosen: list[list[int]], eos_id: int) -> list[tuple[list[int], bool]]:
    """Each row's tokens up to its first eos (excluded), and whether it had one."""
    outputs = []
    for row in chosen:
        end = row.index(eos_id) if eos_id in row else len(row)
        outputs.append((row[:end], end < len(row)))
    return outputs


def without_log_softmax(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The step graph with its final LogSoftmax removed: it outputs the logits, all greedy decoding needs."""
    model = copy.deepcopy(model)
    producer = {output: node for node in model.graph.node for output in node.output}
    chain = [producer["log_probs"]]
    while chain[-1].op_type == "Identity":  # the graph builder names its outputs through Identity nodes
        chain.append(producer[chain[-1].input[0]])
    if chain[-1].op_type != "LogSoftmax":
        raise ValueError(f"the step's log_probs come from a {chain[-1].op_type}, not a LogSoftmax")
    for node in chain:
        model.graph.node.remove(node)
    logits = chain[-1].input[0]
    output = next(o for o in model.graph.output if o.name == "log_probs")
    output.name = logits  # same type and shape: (batch, vocab) float32
    return model, logits


def cpu_session(model: str | bytes, threads: int) -> Any:
    """An onnxruntime session on the CPU provider with `threads` intra-op threads (a path or the model's bytes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxruntimeSession:
    """One graph on onnxruntime's CPU provider: run(output names, feeds by input name) → arrays."""

    def __init__(self, model: str | bytes, threads: int):
        self.session = cpu_session(model, threads)

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(names, feeds)


class OpenVINOSession:
    """The same graph compiled by OpenVINO for the CPU (latency hint, one stream, `threads` threads)."""

    def __init__(self, model: str | bytes, threads: int):
        import openvino as ov

        core = ov.Core()
        read = core.read_model(model) if isinstance(model, str) else core.read_model(model, b"")
        config = {  # f32: on CPUs with bf16 units OpenVINO would otherwise compute in bf16
            "INFERENCE_NUM_THREADS": str(threads),
            "NUM_STREAMS": "1",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        self.compiled = core.compile_model(read, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.ports = {name: port for port in self.compiled.outputs for name in port.get_names()}

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(feeds)
        return [np.array(results[self.ports[name]]) for name in names]  # copies: the request reuses its buffers


ENGINES = {"onnxruntime": OnnxruntimeSession, "OpenVINO": OpenVINOSession}


class HandWrittenLoop(Contender):
    """What one writes by hand around the plain export (ONNX GRU/LSTM op, Gemm): one inference call per step, states
    passed as numpy arrays, every row computed until all rows have ended. Greedy takes numpy argmax over the step's
    logits (its LogSoftmax removed: greedy does not need it); beam search a numpy top-k over beams × vocab
    log-probs. `engine`: onnxruntime, or OpenVINO running the same graphs in the same loop."""

    def __init__(self, bundle: Path, threads: int, beam_size: int, engine: str = "onnxruntime"):
        super().__init__(f"hand-written {engine} loop", ("greedy", "beam"))
        self.beam_size = beam_size
        session = ENGINES[engine]
        self.bundle = Bundle.open(bundle)
        step_path = str(self.bundle.graphs["decoder_step"].path)
        self.encoder = session(str(self.bundle.graphs["encoder"].path), threads)
        self.decoder = session(step_path, threads)
        logits_graph, self.logits_name = without_log_softmax(onnx.load(step_path))
        self.logits_decoder = session(logits_graph.SerializeToString(), threads)
        # OpenVINO's GRU/LSTM ignore the ONNX op's sequence_lens (padded rows come out wrong), so its loop decodes
        # each source length as its own batch, as a user who checked the outputs would
        self.by_length = engine == "OpenVINO"
        step = self.bundle.graphs["decoder_step"]
        self.state_outputs = [(role, io.name) for role, io in step.outputs.items() if roles.is_state(role)]

    def decode(self, sources: Sequence[str], strategy: str) -> list[tuple[list[int], bool]]:
        bundle, vocab = self.bundle, self.bundle.source.vocab
        eos = [bundle.source.special_ids["eos"]] if bundle.source_eos else []
        encoded = [vocab.encode(s) + eos for s in sources]
        if not self.by_length:
            return self._decode(encoded, strategy)
        groups: dict[int, list[int]] = {}
        for index, source in enumerate(encoded):
            groups.setdefault(len(source), []).append(index)
        outputs: list[tuple[list[int], bool]] = [([], False)] * len(encoded)
        for indices in groups.values():
            for index, output in zip(indices, self._decode([encoded[i] for i in indices], strategy), strict=True):
                outputs[index] = output
        return outputs

    def _decode(self, encoded: list[list[int]], strategy: str) -> list[tuple[list[int], bool]]:
        bundle = self.bundle
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
        step = bundle.graphs["decoder_step"]
        names = [self.logits_name] + [name for _, name in self.state_outputs]
        previous = np.full(len(encoded), bundle.start_id, dtype=np.int64)
        done = np.zeros(len(encoded), dtype=bool)
        chosen = []
        for _ in range(steps):
            feeds = {
                io.name: previous if role == roles.PREVIOUS_IDS else values[role] for role, io in step.inputs.items()
            }
            logits, *states = self.logits_decoder.run(names, feeds)
            values.update((role, value) for (role, _), value in zip(self.state_outputs, states, strict=True))
            previous = logits.argmax(axis=1)
            chosen.append(previous)
            done |= previous == bundle.eos_id
            if done.all():
                break
        return cut_at_eos(np.stack(chosen, axis=1).tolist(), bundle.eos_id)

    def _step(self, previous: np.ndarray, values: dict) -> tuple[np.ndarray, dict]:
        step = self.bundle.graphs["decoder_step"]
        feeds = {io.name: previous if role == roles.PREVIOUS_IDS else values[role] for role, io in step.inputs.items()}
        outputs = dict(
            zip(step.outputs, self.decoder.run([io.name for io in step.outputs.values()], feeds), strict=True)
        )
        return outputs[roles.LOG_PROBS], {**values, **{r: v for r, v in outputs.items() if roles.is_state(r)}}

    def _beam(self, values: dict, inputs: int, steps: int) -> list[tuple[list[int], bool]]:
        """K beams per input from the start (all but one at -inf), reordered by gathering every tensor each step,
        until every beam has ended; each input's best hypothesis, ended or still live."""
        k, axes = (
            self.beam_size,
            {role: io.batch_axis for role, io in self.bundle.graphs["decoder_step"].inputs.items()},
        )
        rows = np.repeat(np.arange(inputs), k)
        values = {role: np.take(v, rows, axis=axes[role]) for role, v in values.items()}
        scores = np.tile(np.r_[0.0, np.full(k - 1, -np.inf)], inputs)  # (inputs·k,)
        previous = np.full(inputs * k, self.bundle.start_id, dtype=np.int64)
        history = np.zeros((inputs * k, 0), dtype=np.int64)  # (inputs·k, steps): each beam's tokens so far
        best_ended: list[tuple[float, list[int]]] = [(-np.inf, [])] * inputs
        for _ in range(steps):
            log_probs, values = self._step(previous, values)  # (inputs·k, vocab)
            vocab = log_probs.shape[1]
            totals = (scores[:, None] + log_probs).reshape(inputs, k * vocab)
            best = np.argsort(-totals, axis=1)[:, :k]  # (inputs, k)
            parents = (np.arange(inputs)[:, None] * k + best // vocab).ravel()
            previous = (best % vocab).ravel()
            scores = np.take_along_axis(totals, best, axis=1).ravel()
            history = np.concatenate([history[parents], previous[:, None]], axis=1)
            values = {role: np.take(v, parents, axis=axes[role]) for role, v in values.items()}
            ended = previous == self.bundle.eos_id
            for row in np.flatnonzero(ended & (scores > -np.inf)):
                if scores[row] > best_ended[row // k][0]:
                    best_ended[row // k] = (float(scores[row]), history[row, :-1].tolist())
            scores = np.where(ended, -np.inf, scores)  # an ended beam is not extended
            if not np.isfinite(scores).any():
                break
        live = scores.reshape(inputs, k)
        outputs = []
        for i in range(inputs):
            if best_ended[i][0] >= live[i].max():
                outputs.append((best_ended[i][1], True))
            else:
                outputs.append((history[i * k + int(live[i].argmax())].tolist(), False))
        return outputs


class TorchEager(Contender):
    """The PyTorch model in eager mode at its best: inference_mode, threads set, argmax, the chosen ids kept on the
    device until the end (no per-step host copies but the one `all done?` check)."""

    def __init__(self, checkpoint: Any, threads: int):
        super().__init__("PyTorch eager", ("greedy",))
        import torch

        from s2s_export.checkpoint import start_id
        from s2s_export.train import max_target_length

        torch.set_num_threads(threads)
        self.torch, self.checkpoint = torch, checkpoint
        self.start, self.max_length = start_id(checkpoint.config, checkpoint.target_vocab), max_target_length
        self.eos = checkpoint.target_vocab.id_of("eos")

    def decode(self, sources: Sequence[str], strategy: str) -> list[tuple[list[int], bool]]:
        torch, vocab, model = self.torch, self.checkpoint.source_vocab, self.checkpoint.model
        eos = [vocab.id_of("eos")] if self.checkpoint.config.source_eos else []
        encoded = [vocab.encode(s) + eos for s in sources]
        lengths = torch.tensor([len(s) for s in encoded])
        ids = torch.zeros((len(encoded), int(lengths.max())), dtype=torch.long)
        for row, source in enumerate(encoded):
            ids[row, : len(source)] = torch.tensor(source)
        limit = self.max_length(int(lengths.max()))
        with torch.inference_mode():
            states, statics = model.split(model.encode(ids, lengths))
            previous = torch.full((len(encoded),), self.start, dtype=torch.long)
            done = torch.zeros(len(encoded), dtype=torch.bool)
            chosen = []
            for _ in range(limit):
                log_probs, states, _ = model.decoder(previous, states, statics)
                previous = log_probs.argmax(dim=1)  # (batch,)
                chosen.append(previous)
                done |= previous == self.eos
                if bool(done.all()):
                    break
            rows = torch.stack(chosen, dim=1).tolist()
        return cut_at_eos(rows, self.eos)
