"""Parity of the exported graphs with PyTorch: encoder outputs, step log-probs along the greedy path, greedy ids.

The judge is a float64 evaluation of the same model, not PyTorch's float32 one: float32 PyTorch and float32
onnxruntime round differently, and along a long decode their differences grow with the model's state magnitudes, so
comparing one float32 result with the other cannot tell rounding from a wrong graph. Each value the graphs give is
compared with float64 PyTorch on the same forced path (float32 PyTorch's greedy ids): it may differ by at most
max(tolerance, ROUNDING_FACTOR × the distance of float32 PyTorch itself from float64) — measured per check, in
|Δ|/max(1, |value|) — so the graphs are allowed what float32 arithmetic costs this model and no more. A wrong gate
order or a missing bias is orders of magnitude past that and fails. Greedy ids must match float64's choice unless
float64 itself ranks the two tokens within that same allowance (a tie that float32 cannot resolve is not an error).

Checked at batch sizes 1, 3 and 17 over validation sources, and over sources longer than any validation source (the
graphs have no built-in maximum length). Run by export_bundle on every export: every disagreement is recorded in the
report (its `passed` is then False), and export_bundle raises ParityError with the first one, naming the graph, the
input shapes and the difference.
"""

from __future__ import annotations

import copy
import functools
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
TOLERANCE = 1e-4  # |Δ|/max(1, |value|) always allowed against float64
ROUNDING_FACTOR = 8.0  # the graphs may be this many times further from float64 than float32 PyTorch is


class ParityError(RuntimeError):
    """The exported graphs disagree with PyTorch; the message is the failing check's report."""


@dataclass
class ParityReport:
    tolerance: float
    tolerance_set_by_user: bool = False
    checks: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def max_abs_diff(self) -> float:
        return max((c["max_abs_diff"] for c in self.checks), default=0.0)

    @property
    def max_scaled_diff(self) -> float:
        return max((c["max_scaled_diff"] for c in self.checks), default=0.0)

    @property
    def torch_float32_max_scaled_diff(self) -> float:
        return max((c["torch_float32_scaled_diff"] for c in self.checks), default=0.0)

    def to_dict(self) -> dict:
        return {
            "reference": "float64 PyTorch",
            "tolerance": self.tolerance,
            "tolerance_set_by_user": self.tolerance_set_by_user,
            "rounding_factor": ROUNDING_FACTOR,
            "max_abs_diff": self.max_abs_diff,
            "max_scaled_diff": self.max_scaled_diff,
            "torch_float32_max_scaled_diff": self.torch_float32_max_scaled_diff,
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
    tolerance: float | None = None,
    progress: bool = False,
) -> ParityReport:
    """Compare the graphs with the PyTorch model in float64 (see the module docstring); every disagreement is
    recorded in the report. `tolerance`: the |Δ|/max(1, |value|) always allowed (default TOLERANCE; a value given
    here is recorded as set by the user). `progress`: a bar per batch on a terminal (none when stderr is not one)."""
    from tqdm import tqdm

    model, cfg = checkpoint.model.eval(), checkpoint.config
    exact_model = copy.deepcopy(model).double()  # the judge: the same weights in float64
    encoder_session, decoder_session = session(encoder), session(decoder)
    report = ParityReport(TOLERANCE if tolerance is None else tolerance, tolerance_set_by_user=tolerance is not None)
    eos, start = checkpoint.target_vocab.id_of("eos"), start_id(cfg, checkpoint.target_vocab)
    top_k = min(4, cfg.target_vocab_size)
    pad = checkpoint.source_vocab.id_of("pad")
    for batch in tqdm(parity_batches(source_ids), desc="parity", unit="batch", disable=None if progress else True):
        lengths = np.array([len(s) for s in batch], dtype=np.int64)  # (B,)
        ids = np.full((len(batch), lengths.max()), pad, dtype=np.int64)  # (B, S)
        for row, source in enumerate(batch):
            ids[row, : len(source)] = source
        shape = f"source_ids {list(ids.shape)}, lengths {lengths.tolist()}"
        check = functools.partial(compare, report, shape=shape, batch=len(batch), source_length=ids.shape[1])
        with torch.no_grad():
            float32 = {k: v.numpy() for k, v in model.encode(torch.from_numpy(ids), torch.from_numpy(lengths)).items()}
            exact = {
                k: v.numpy() for k, v in exact_model.encode(torch.from_numpy(ids), torch.from_numpy(lengths)).items()
            }
        got = dict(
            zip(
                [o.role for o in encoder.outputs],
                encoder_session.run(None, {encoder.inputs[0].name: ids, encoder.inputs[1].name: lengths}),
                strict=True,
            )
        )
        for role in exact:
            check("encoder", role, exact[role], float32[role], got[role])
        float32_states, float32_statics = model.split({k: torch.from_numpy(v) for k, v in float32.items()})
        exact_states, exact_statics = exact_model.split({k: torch.from_numpy(v) for k, v in exact.items()})
        onnx_values = dict(got)
        previous = np.full(len(batch), start, dtype=np.int64)
        finished = np.zeros(len(batch), dtype=bool)
        for step in range(max_steps):
            previous_ids = torch.from_numpy(previous)
            with torch.no_grad():
                float32_log_probs, float32_states, _ = model.decoder(previous_ids, float32_states, float32_statics)
                exact_log_probs, exact_states, _ = exact_model.decoder(previous_ids, exact_states, exact_statics)
            controls = {roles.PREVIOUS_IDS: previous, roles.TOP_K: np.array([top_k], dtype=np.int64)}
            feeds = {
                io.name: controls[io.role] if io.role in controls else onnx_values[io.role] for io in decoder.inputs
            }
            outputs = dict(zip([o.role for o in decoder.outputs], decoder_session.run(None, feeds), strict=True))
            step_shape = f"{shape}, step {step}"
            check = functools.partial(compare, report, shape=step_shape, batch=len(batch), source_length=ids.shape[1])
            exact_step, float32_step = exact_log_probs.numpy(), float32_log_probs.numpy()  # (B, vocab) each
            allowed = check("decoder_step", roles.LOG_PROBS, exact_step, float32_step, outputs[roles.LOG_PROBS])
            if roles.TOP_LOG_PROBS in outputs:  # the in-graph candidates of beam search: the best log-probs, in order
                check(
                    "decoder_step",
                    roles.TOP_LOG_PROBS,
                    -np.sort(-exact_step, axis=1)[:, :top_k],  # (B, top_k)
                    -np.sort(-float32_step, axis=1)[:, :top_k],
                    outputs[roles.TOP_LOG_PROBS],
                )
            onnx_next = outputs[roles.LOG_PROBS].argmax(1)  # (B,)
            best = exact_step.max(axis=1)
            # onnxruntime's choice is wrong only where float64 ranks it below its best by more than rounding allows
            margin = best - exact_step[np.arange(len(batch)), onnx_next]
            wrong = ~finished & (margin > 2 * allowed * np.maximum(1.0, np.abs(best)))
            if wrong.any():
                _fail(
                    report,
                    f"decoder_step: greedy ids differ at {step_shape}: float64 PyTorch "
                    f"{exact_step.argmax(1).tolist()} vs onnxruntime {onnx_next.tolist()}",
                )
            onnx_values.update({role: value for role, value in outputs.items() if roles.is_state(role)})
            previous = float32_step.argmax(1)  # the forced path: float32 PyTorch's greedy ids, fed to all three
            finished |= previous == eos
            if finished.all():
                break
    return report


def compare(
    report: ParityReport,
    graph: str,
    role: str,
    exact: np.ndarray,
    float32: np.ndarray,
    got: np.ndarray,
    *,
    shape: str,
    batch: int,
    source_length: int,
) -> float:
    """Record one check of the graphs' value `got` against float64 PyTorch's `exact`; returns the allowance used."""
    if exact.shape != got.shape:
        _fail(
            report,
            f"{graph}: output {role!r} has shape {list(got.shape)}, PyTorch gives {list(exact.shape)} "
            f"(inputs: {shape})",
        )
        return report.tolerance
    # float32 keeps ~7 significant digits: an LSTM cell state of magnitude 300 cannot agree to 1e-4 absolutely, so
    # values above 1 in magnitude are compared relatively (|Δ| ≤ allowance × |value|), the rest absolutely.
    scale = np.maximum(1.0, np.abs(exact))
    difference = np.abs(exact - got)
    diff = float(difference.max()) if exact.size else 0.0
    scaled = float((difference / scale).max()) if exact.size else 0.0
    float32_scaled = float((np.abs(exact - float32) / scale).max()) if exact.size else 0.0
    allowed = max(report.tolerance, ROUNDING_FACTOR * float32_scaled)
    report.checks.append(
        {
            "graph": graph,
            "role": role,
            "batch": batch,
            "source_length": source_length,
            "max_abs_diff": diff,
            "max_scaled_diff": scaled,
            "torch_float32_scaled_diff": float32_scaled,
        }
    )
    if not scaled <= allowed:  # also catches NaN
        _fail(
            report,
            f"{graph}: output {role!r} differs from float64 PyTorch by max |Δ| = {diff:.3g} "
            f"(max |Δ|/max(1, |value|) = {scaled:.3g} > {allowed:.3g}: the tolerance {report.tolerance:g}, or "
            f"{ROUNDING_FACTOR:g} × float32 PyTorch's own {float32_scaled:.3g}) (inputs: {shape})",
        )
    return allowed


def _fail(report: ParityReport, message: str) -> None:
    report.failures.append(message)


def require_parity(report: ParityReport) -> None:
    """ParityError with the first disagreement (and how many there were) unless the report passed."""
    if report.failures:
        more = f" (and {len(report.failures) - 1} more)" if len(report.failures) > 1 else ""
        raise ParityError(f"parity check failed — {report.failures[0]}{more}")
