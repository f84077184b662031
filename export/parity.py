"""Parity of the exported graphs with PyTorch: encoder outputs, step log-probs along the greedy path, greedy ids.

Tolerance: |Δ| ≤ 1e-4 for values of magnitude up to 1, |Δ| ≤ 1e-4 × |value| above (see _compare).
Checked at batch sizes 1, 3 and 17 over validation sources, and over sources longer than any validation source (the
graphs have no built-in maximum length). Run by export_bundle on every export: every disagreement is recorded in the
report (its `passed` is then False), and export_bundle raises ParityError with the first one, naming the graph, the
input shapes and the difference.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
import torch

from s2s_runtime import roles

from .checkpoint import Checkpoint, start_id
from .onnx_graphs import ExportedGraph

BATCH_SIZES = (1, 3, 17)
TOLERANCE = 1e-4


class ParityError(RuntimeError):
    """The exported graphs disagree with PyTorch; the message is the failing check's report."""


@dataclass
class ParityReport:
    tolerance: float
    checks: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((c["max_abs_diff"] for c in self.checks), default=0.0)

    @property
    def max_scaled_diff(self) -> float:
        return max((c["max_scaled_diff"] for c in self.checks), default=0.0)

    def to_dict(self) -> dict:
        return {
            "tolerance": self.tolerance,
            "max_abs_diff": self.max_abs_diff,
            "max_scaled_diff": self.max_scaled_diff,
            "passed": not self.failures,
            "batch_sizes": sorted({c["batch"] for c in self.checks}),
            "source_lengths": sorted({c["source_length"] for c in self.checks}),
            "checks": len(self.checks),
            "greedy_ids_identical": not any("greedy" in f for f in self.failures),
        }


def session(graph: ExportedGraph) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(graph.model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def parity_batches(source_ids: Sequence[Sequence[int]], seed: int = 0) -> list[list[list[int]]]:
    """Batches of sizes 1, 3, 17 from the validation sources, plus a batch mixing short sources with sources longer
    than any of them (concatenations), so padding and long lengths are both exercised."""
    rng = random.Random(seed)
    pool = [list(s) for s in source_ids if s]
    batches = [[rng.choice(pool) for _ in range(size)] for size in BATCH_SIZES]
    longest = max(len(s) for s in pool)
    long_sources = [list(itertools.chain.from_iterable(rng.choice(pool) for _ in range(4))) for _ in range(2)]
    long_sources = [
        s if len(s) > longest else s + pool[0] * (longest // max(len(pool[0]), 1) + 1) for s in long_sources
    ]
    batches.append([long_sources[0], rng.choice(pool), long_sources[1], [pool[0][0]]])
    return batches


def check_parity(
    checkpoint: Checkpoint,
    encoder: ExportedGraph,
    decoder: ExportedGraph,
    source_ids: Sequence[Sequence[int]],
    *,
    max_steps: int = 40,
    tolerance: float = TOLERANCE,
    progress: bool = False,
) -> ParityReport:
    """Compare the graphs with the PyTorch model; every disagreement is recorded in the report. `progress`: a bar
    per batch on a terminal (none when stderr is not one)."""
    from tqdm import tqdm

    model, cfg = checkpoint.model.eval(), checkpoint.config
    encoder_session, decoder_session = session(encoder), session(decoder)
    report = ParityReport(tolerance)
    eos, start = checkpoint.target_vocab.id_of("eos"), start_id(cfg, checkpoint.target_vocab)
    top_k = min(4, cfg.target_vocab_size)
    pad = checkpoint.source_vocab.id_of("pad")
    for batch in tqdm(parity_batches(source_ids), desc="parity", unit="batch", disable=None if progress else True):
        lengths = np.array([len(s) for s in batch], dtype=np.int64)  # (B,)
        ids = np.full((len(batch), lengths.max()), pad, dtype=np.int64)  # (B, S)
        for row, source in enumerate(batch):
            ids[row, : len(source)] = source
        shape = f"source_ids {list(ids.shape)}, lengths {lengths.tolist()}"
        with torch.no_grad():
            expected = {k: v.numpy() for k, v in model.encode(torch.from_numpy(ids), torch.from_numpy(lengths)).items()}
        got = dict(
            zip(
                [o.role for o in encoder.outputs],
                encoder_session.run(None, {encoder.inputs[0].name: ids, encoder.inputs[1].name: lengths}),
                strict=True,
            )
        )
        for role, value in expected.items():
            _compare(report, "encoder", role, value, got[role], shape, len(batch), ids.shape[1])
        torch_states, statics = model.split({k: torch.from_numpy(v) for k, v in expected.items()})
        onnx_values = dict(got)
        previous = np.full(len(batch), start, dtype=np.int64)
        finished = np.zeros(len(batch), dtype=bool)
        for step in range(max_steps):
            with torch.no_grad():
                log_probs, torch_states, _ = model.decoder(torch.from_numpy(previous), torch_states, statics)
            controls = {roles.PREVIOUS_IDS: previous, roles.TOP_K: np.array([top_k], dtype=np.int64)}
            feeds = {
                io.name: controls[io.role] if io.role in controls else onnx_values[io.role] for io in decoder.inputs
            }
            outputs = dict(zip([o.role for o in decoder.outputs], decoder_session.run(None, feeds), strict=True))
            step_shape = f"{shape}, step {step}"
            _compare(
                report,
                "decoder_step",
                roles.LOG_PROBS,
                log_probs.numpy(),
                outputs[roles.LOG_PROBS],
                step_shape,
                len(batch),
                ids.shape[1],
            )
            if roles.TOP_LOG_PROBS in outputs:  # the in-graph candidates of beam search: the best log-probs, in order
                best = -np.sort(-log_probs.numpy(), axis=1)[:, :top_k]  # (B, top_k)
                _compare(
                    report,
                    "decoder_step",
                    roles.TOP_LOG_PROBS,
                    best,
                    outputs[roles.TOP_LOG_PROBS],
                    step_shape,
                    len(batch),
                    ids.shape[1],
                )
            torch_next, onnx_next = log_probs.argmax(1).numpy(), outputs[roles.LOG_PROBS].argmax(1)
            if not np.array_equal(torch_next[~finished], onnx_next[~finished]):
                _fail(
                    report,
                    f"decoder_step: greedy ids differ at {step_shape}: torch {torch_next.tolist()} "
                    f"vs onnxruntime {onnx_next.tolist()}",
                )
            onnx_values.update({role: value for role, value in outputs.items() if roles.is_state(role)})
            previous = torch_next
            finished |= previous == eos
            if finished.all():
                break
    return report


def _compare(
    report: ParityReport,
    graph: str,
    role: str,
    expected: np.ndarray,
    got: np.ndarray,
    shape: str,
    batch: int,
    source_length: int,
) -> None:
    if expected.shape != got.shape:
        _fail(
            report,
            f"{graph}: output {role!r} has shape {list(got.shape)}, PyTorch gives {list(expected.shape)} "
            f"(inputs: {shape})",
        )
        return
    difference = np.abs(expected - got)
    diff = float(difference.max()) if expected.size else 0.0
    # float32 keeps ~7 significant digits: an LSTM cell state of magnitude 300 cannot agree to 1e-4 absolutely, so
    # values above 1 in magnitude are compared relatively (|Δ| ≤ tolerance × |value|), the rest absolutely.
    scaled = float((difference / np.maximum(1.0, np.abs(expected))).max()) if expected.size else 0.0
    report.checks.append(
        {
            "graph": graph,
            "role": role,
            "batch": batch,
            "source_length": source_length,
            "max_abs_diff": diff,
            "max_scaled_diff": scaled,
        }
    )
    if not scaled <= report.tolerance:  # also catches NaN
        _fail(
            report,
            f"{graph}: output {role!r} differs from PyTorch by max |Δ| = {diff:.3g} "
            f"(max |Δ|/max(1, |value|) = {scaled:.3g} > {report.tolerance}) (inputs: {shape})",
        )


def _fail(report: ParityReport, message: str) -> None:
    report.failures.append(message)


def require_parity(report: ParityReport) -> None:
    """ParityError with the first disagreement (and how many there were) unless the report passed."""
    if report.failures:
        more = f" (and {len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
        raise ParityError(f"parity check failed — {report.failures[0]}{more}")
