"""Batch-independent int8: weights quantized per matrix, activations with a scale fixed at export.

onnxruntime's dynamic quantization (DynamicQuantizeMatMul, DynamicQuantizeLSTM) scales each activation tensor by its
maximum over the whole batch, so a row's result depends on the other rows: the same word decoded alone or beside
others can differ. Here every MatMul with constant weights becomes QuantizeLinear (a fixed scale per activation
tensor, zero point 128) + MatMulIntegerToFloat (int8 weights, one scale per matrix): each element of a row
is quantized on its own, the int32 products are exact, so a row's output never depends on its batch. onnxruntime's
u8×s8 kernels run it as fast as the dynamic form.

The activation scales come from calibration: the fp32 graphs run on the validation sources (the encoder, then the
decoder step along the greedy path), with every quantized MatMul's input exposed, and each input's scale covers its
largest magnitude seen. Nearly all of them are cell outputs, bounded by 1 (tanh), and calibration finds that bound;
a larger maximum (initial states from a linear bridge) gets headroom, and larger values still saturate. Inside a
Scan body the only MatMul inputs are the recurrent cell's hidden state, which a GRU or LSTM keeps in [-1, 1] once
it starts there: its scale covers max(1, the Scan's initial state). LSTM ops are left in float32 (onnxruntime's
quantized LSTM is per-batch dynamic).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from s2s_runtime import roles

from .onnx_graphs import ExportedGraph

HEADROOM = 1.25  # a calibrated maximum above 1 × this = the largest value represented exactly
ZERO_POINT = 128  # activations as uint8 around 128: onnxruntime's fastest (u8 × s8) integer kernels
CALIBRATION_BATCH = 16
CALIBRATION_STEPS = 40
MS_DOMAIN = "com.microsoft"


def quantize_int8(
    encoder: ExportedGraph,
    decoder: ExportedGraph,
    sources: Sequence[Sequence[int]],
    *,
    pad_id: int,
    start_id: int,
    eos_id: int,
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Both graphs with their weight MatMuls in batch-independent int8, calibrated on `sources` (source ids).

    Examples:
        >>> encoder_q, step_q = quantize_int8(encoder, step, [[4, 5, 6]],
        ...                                   pad_id=0, start_id=2, eos_id=3)  # doctest: +SKIP
    """
    encoder_bounds, decoder_bounds = activation_bounds(
        encoder, decoder, sources, pad_id=pad_id, start_id=start_id, eos_id=eos_id
    )
    return quantize_graph(encoder.model, encoder_bounds), quantize_graph(decoder.model, decoder_bounds)


def weight_matmuls(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The MatMuls of `graph` (not its subgraphs) whose second input is a constant 2-D float weight."""
    weights = {t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 2}
    return [node for node in graph.node if node.op_type == "MatMul" and node.input[1] in weights]


def _scans(graph: onnx.GraphProto) -> list[tuple[onnx.NodeProto, onnx.GraphProto]]:
    return [
        (node, attribute.g)
        for node in graph.node
        if node.op_type == "Scan"
        for attribute in node.attribute
        if attribute.name == "body"
    ]


def _scan_input_count(node: onnx.NodeProto) -> int:
    return next(a.i for a in node.attribute if a.name == "num_scan_inputs")


def _calibrated_tensors(model: onnx.ModelProto) -> list[str]:
    """Main-graph tensors whose magnitude the quantizer needs: the weight MatMuls' inputs and the Scans' initial
    states."""
    graph = model.graph
    names = [node.input[0] for node in weight_matmuls(graph)]
    for node, _ in _scans(graph):
        names += list(node.input[: len(node.input) - _scan_input_count(node)])
    return list(dict.fromkeys(names))


def _exposing(model: onnx.ModelProto, names: list[str]) -> bytes:
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    existing = {o.name for o in exposed.graph.output}
    for name in names:
        if name not in existing:
            exposed.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return exposed.SerializeToString()


def _session(data: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def activation_bounds(
    encoder: ExportedGraph,
    decoder: ExportedGraph,
    sources: Sequence[Sequence[int]],
    *,
    pad_id: int,
    start_id: int,
    eos_id: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """The largest magnitude of every calibrated tensor of each graph over the sources (encoder) and their greedy
    decoding (decoder step), by tensor name."""
    encoder_names, decoder_names = _calibrated_tensors(encoder.model), _calibrated_tensors(decoder.model)
    encoder_session = _session(_exposing(encoder.model, encoder_names))
    decoder_session = _session(_exposing(decoder.model, decoder_names))
    bounds: tuple[dict[str, float], dict[str, float]] = ({}, {})

    def record(which: int, names: list[str], values: list[np.ndarray]) -> None:
        for name, value in zip(names, values, strict=True):
            if value.size:
                bounds[which][name] = max(bounds[which].get(name, 0.0), float(np.abs(value).max()))

    encoder_inputs = {io.role: io.name for io in encoder.inputs}
    encoded_names = [io.name for io in encoder.outputs]
    step_inputs = {io.role: io.name for io in decoder.inputs}
    step_outputs = {io.role: io.name for io in decoder.outputs}
    pool = [list(s) for s in sources if s]
    for start in range(0, len(pool), CALIBRATION_BATCH):
        batch = pool[start : start + CALIBRATION_BATCH]
        lengths = np.array([len(s) for s in batch], dtype=np.int64)  # (B,)
        ids = np.full((len(batch), lengths.max()), pad_id, dtype=np.int64)  # (B, S)
        for row, source in enumerate(batch):
            ids[row, : len(source)] = source
        values = encoder_session.run(
            encoded_names + encoder_names,
            {encoder_inputs[roles.SOURCE_IDS]: ids, encoder_inputs[roles.SOURCE_LENGTHS]: lengths},
        )
        record(0, encoder_names, values[len(encoded_names) :])
        carried = {io.role: value for io, value in zip(encoder.outputs, values[: len(encoded_names)], strict=True)}
        previous = np.full(len(batch), start_id, dtype=np.int64)
        finished = np.zeros(len(batch), dtype=bool)
        for _ in range(CALIBRATION_STEPS):
            feeds = {step_inputs[roles.PREVIOUS_IDS]: previous}
            if roles.TOP_K in step_inputs:
                feeds[step_inputs[roles.TOP_K]] = np.array([1], dtype=np.int64)
            feeds.update({step_inputs[role]: value for role, value in carried.items() if role in step_inputs})
            wanted = [step_outputs[roles.LOG_PROBS]] + [step_outputs[r] for r in step_outputs if roles.is_state(r)]
            outputs = decoder_session.run(wanted + decoder_names, feeds)
            record(1, decoder_names, outputs[len(wanted) :])
            state_roles = [r for r in step_outputs if roles.is_state(r)]
            carried.update(dict(zip(state_roles, outputs[1 : len(wanted)], strict=True)))
            previous = outputs[0].argmax(axis=1)
            finished |= previous == eos_id
            if finished.all():
                break
    return bounds


def quantize_graph(model: onnx.ModelProto, bounds: dict[str, float]) -> onnx.ModelProto:
    """`model` with every weight MatMul in int8 (see the module docstring); Scan bodies included."""
    quantized = onnx.ModelProto()
    quantized.CopyFrom(model)
    _quantize(quantized.graph, lambda name: bounds.get(name))
    if not any(opset.domain == MS_DOMAIN for opset in quantized.opset_import):
        quantized.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.checker.check_model(quantized)
    return quantized


def _quantize(graph: onnx.GraphProto, bound_of) -> None:
    for node, body in _scans(graph):
        state_count = len(node.input) - _scan_input_count(node)
        initial = {body.input[i].name: bound_of(node.input[i]) for i in range(state_count)}
        # A GRU/LSTM hidden state stays in [-1, 1] once it starts there.
        _quantize(body, lambda name, initial=initial: max(1.0, initial[name] or 0.0) if name in initial else None)
    weights = {t.name: t for t in graph.initializer}
    quantized_inputs: dict[str, tuple[str, str, str]] = {}  # activation → (quantized name, scale, zero point)
    replaced, new_nodes = set(), []
    for node in graph.node:
        if (
            node.op_type != "MatMul"
            or node.input[1] not in weights
            or len(weights[node.input[1]].dims) != 2
            or weights[node.input[1]].data_type != TensorProto.FLOAT
        ):
            new_nodes.append(node)
            continue
        activation = node.input[0]
        bound = bound_of(activation)
        if bound is None:  # nothing measured it: left in float32 rather than guessed
            new_nodes.append(node)
            continue
        if activation not in quantized_inputs:
            covered = bound * HEADROOM if bound > 1.0 else bound  # ≤ 1: a tanh-bounded cell output
            scale = max(covered, 1e-8) / (255 - ZERO_POINT)
            names = (f"{activation}_q8", f"{activation}_q8_scale", f"{activation}_q8_zero")
            graph.initializer.extend(
                [
                    numpy_helper.from_array(np.array(scale, np.float32), names[1]),
                    numpy_helper.from_array(np.array(ZERO_POINT, np.uint8), names[2]),
                ]
            )
            new_nodes.append(helper.make_node("QuantizeLinear", [activation, names[1], names[2]], [names[0]]))
            quantized_inputs[activation] = names
        weight = numpy_helper.to_array(weights[node.input[1]])  # (K, N)
        # One scale per weight matrix: per-column scales cost onnxruntime a separate pass (≈ 6 µs per 256×1024
        # product at batch 1, as much as the product itself), for no exact-match gain measured on G2P.
        weight_scale = np.float32(max(float(np.abs(weight).max()), 1e-12) / 127)
        weight_q = np.clip(np.round(weight / weight_scale), -127, 127).astype(np.int8)
        weight_name = f"{node.input[1]}_i8"
        graph.initializer.extend(
            [
                numpy_helper.from_array(weight_q, weight_name),
                numpy_helper.from_array(np.array(weight_scale), weight_name + "_scale"),
            ]
        )
        quantized_name, scale_name, zero_name = quantized_inputs[activation]
        new_nodes.append(
            helper.make_node(
                "MatMulIntegerToFloat",
                [quantized_name, weight_name, scale_name, weight_name + "_scale", zero_name],
                list(node.output),
                domain=MS_DOMAIN,
            )
        )
        replaced.add(node.input[1])
    del graph.node[:]
    graph.node.extend(new_nodes)
    still_used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name not in replaced or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
