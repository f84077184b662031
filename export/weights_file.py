"""weights.bin: a bundle's graphs saved with their large tensors as ONNX external data in one shared file, each distinct
tensor stored once — the greedy graph is built from the encoder's and the step's own tensors, so without sharing a
bundle would hold every weight twice.

The runtime reads weights.bin once, verified against the manifest's checksum, and hands its bytes to onnxruntime for
every session (s2s_runtime.engine.sessions); graphs name their tensors by offset and length in it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx import TensorProto, numpy_helper

WEIGHTS_FILE = "weights.bin"  # the name s2s_runtime.bundle looks for
EXTERNAL_FROM_BYTES = 1024  # smaller tensors (shapes, scalars, small biases) stay inside their graph
ALIGNMENT = 64  # each tensor starts at a multiple of this many bytes


def save_sharing_weights(models: dict[str, onnx.ModelProto], directory: Path) -> None:
    """Save each model as directory/name with every initializer of ≥ EXTERNAL_FROM_BYTES bytes (a Scan's or Loop's
    lifted into the main graph first) moved to directory/weights.bin, identical tensors (same dtype, shape and
    bytes) stored once.

    Examples:
        >>> save_sharing_weights({"encoder.onnx": encoder, "greedy.onnx": greedy}, staging)  # doctest: +SKIP
    """
    blob = bytearray()
    stored: dict[tuple, tuple[int, int]] = {}  # (dtype, dims, digest) → (offset, length)
    for name, model in models.items():
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        _hoist_subgraph_weights(copy.graph)
        for tensor in copy.graph.initializer:
            data = numpy_helper.to_array(tensor).tobytes()  # little-endian, as ONNX external data is
            if len(data) < EXTERNAL_FROM_BYTES:
                continue
            key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(data).digest())
            if key not in stored:
                blob.extend(b"\0" * (-len(blob) % ALIGNMENT))
                stored[key] = (len(blob), len(data))
                blob.extend(data)
            offset, length = stored[key]
            _make_external(tensor, offset, length)
        onnx.save(copy, str(directory / name))
    (directory / WEIGHTS_FILE).write_bytes(bytes(blob))


def _hoist_subgraph_weights(graph: onnx.GraphProto) -> None:
    """Move the large initializers of every subgraph (a Scan's or Loop's body, at any depth) into `graph`, renamed
    apart, where the body reads them from the outer scope: onnxruntime takes external data from memory for a model's
    main graph only."""
    taken = {v.name for v in [*graph.input, *graph.initializer]} | {o for n in graph.node for o in n.output}

    def visit(subgraph: onnx.GraphProto, path: str) -> None:
        renamed: dict[str, str] = {}
        for tensor in list(subgraph.initializer):
            if len(numpy_helper.to_array(tensor).tobytes()) < EXTERNAL_FROM_BYTES:
                continue
            new = f"{path}/{tensor.name}"
            while new in taken:
                new += "_"
            taken.add(new)
            renamed[tensor.name] = new
            subgraph.initializer.remove(tensor)
            tensor.name = new
            graph.initializer.append(tensor)
        _rename_references(subgraph, renamed)
        for index, node in enumerate(subgraph.node):
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    visit(attribute.g, f"{path}/{node.name or node.op_type + str(index)}")

    for index, node in enumerate(graph.node):
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                visit(attribute.g, f"hoisted/{node.name or node.op_type + str(index)}")


def _rename_references(graph: onnx.GraphProto, renamed: dict[str, str]) -> None:
    """Point the uses of `renamed`'s names inside `graph` and its subgraphs (unless one defines the name again) to
    their new names."""
    if not renamed:
        return
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                inner = attribute.g
                defined = {v.name for v in [*inner.input, *inner.initializer]} | {
                    o for n in inner.node for o in n.output
                }
                _rename_references(inner, {k: v for k, v in renamed.items() if k not in defined})


def _make_external(tensor: TensorProto, offset: int, length: int) -> None:
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
        tensor.ClearField(field)
    del tensor.external_data[:]
    for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    tensor.data_location = TensorProto.EXTERNAL
