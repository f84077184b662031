"""Reduced-precision bundles: batch-independent int8 (s2s_export.quantize) and fp16 conversion
(onnxconverter-common), with the quality change measured against the fp32 graphs through the runtime."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx

PRECISIONS = ("float32", "int8", "float16")


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and arithmetic for CUDA; inputs and outputs stay float32 so the bundle contract is unchanged."""
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(model, keep_io_types=True)


def quality_change(reference_bundle: Path, candidate_bundle: Path, sources: Sequence[str], precision: str) -> dict:
    """Greedy outputs of the reduced-precision bundle against the fp32 bundle on the validation sample: the share of
    identical outputs (exact match) and of identical tokens by position (token accuracy)."""
    import s2s_runtime

    try:
        candidate_model = s2s_runtime.load(candidate_bundle, device="auto" if precision == "float16" else "cpu")
    except s2s_runtime.DeviceError as error:  # a float16 bundle on a machine without CUDA
        return {"measured": False, "reason": str(error)}
    reference = s2s_runtime.load(reference_bundle, device="cpu").generate(list(sources))
    candidate = candidate_model.generate(list(sources))
    exact = sum(r.ids == c.ids for r, c in zip(reference, candidate, strict=True))
    matches = sum(
        sum(a == b for a, b in zip(r.ids, c.ids, strict=False)) for r, c in zip(reference, candidate, strict=True)
    )
    total = sum(len(r.ids) for r in reference)
    return {
        "measured": True,
        "sources": len(reference),
        "exact_match_vs_fp32": exact / max(len(reference), 1),
        "token_accuracy_vs_fp32": matches / max(total, 1),
    }
