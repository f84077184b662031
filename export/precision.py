"""Reduced-precision bundles: onnxruntime dynamic int8 quantization and fp16 conversion (onnxconverter-common),
with the quality change measured against the fp32 graphs through the runtime."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx

PRECISIONS = ("float32", "int8", "float16")


def quantize_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Dynamic int8 quantization of MatMul and LSTM weights (activations quantized per call): the decoder step is
    written with MatMul + Add precisely so that this covers it; onnxruntime has no quantized GRU op, so a GRU
    encoder's recurrent weights stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(source))
        # EnableSubgraph: the optimized encoder's recurrent MatMuls live inside Scan bodies.
        quantize_dynamic(str(source), str(target), op_types_to_quantize=["MatMul", "LSTM"], weight_type=QuantType.QInt8,
                         extra_options={"EnableSubgraph": True})
        return onnx.load(str(target))


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp16 weights and arithmetic for CUDA; inputs and outputs stay float32 so the bundle contract is unchanged."""
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(model, keep_io_types=True)


def convert(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    return {"int8": quantize_int8, "float16": convert_fp16}[precision](model)


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
    exact = sum(r.ids == c.ids for r, c in zip(reference, candidate))
    matches = sum(sum(a == b for a, b in zip(r.ids, c.ids)) for r, c in zip(reference, candidate))
    total = sum(len(r.ids) for r in reference)
    return {"measured": True, "sources": len(reference), "exact_match_vs_fp32": exact / max(len(reference), 1),
            "token_accuracy_vs_fp32": matches / max(total, 1)}
