"""Small helper graphs the runtime ships (s2s_runtime/graphs/): it has no `onnx` package to build them itself.

Regenerate with `python -m s2s_export.runtime_graphs`; a test checks the shipped files equal what this writes.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from .graph_builder import IR_VERSION, OPSET

GRAPHS_DIR = Path(__file__).resolve().parent.parent / "s2s_runtime" / "graphs"
DTYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}


def gather_graph(dtype: str, rank: int, axis: int) -> onnx.ModelProto:
    """rows = Gather(values, indices, axis): keeps, reorders or repeats batch rows of a cached tensor on the device
    where it lives (compaction and beam reordering without a host round trip)."""
    dims = [f"d{i}" for i in range(rank)]
    out_dims = [("rows" if i == axis else d) for i, d in enumerate(dims)]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["values", "indices"], ["gathered"], axis=axis)],
        f"gather_{dtype}_rank{rank}_axis{axis}",
        [
            helper.make_tensor_value_info("values", DTYPES[dtype], dims),
            helper.make_tensor_value_info("indices", TensorProto.INT64, ["rows"]),
        ],
        [helper.make_tensor_value_info("gathered", DTYPES[dtype], out_dims)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="s2s_export", ir_version=IR_VERSION
    )
    onnx.checker.check_model(model, full_check=True)
    return model


# The tensors a decoder step caches: states (layers, batch, hidden) and (batch, hidden); statics (batch, ...).
GATHER_KINDS = ((2, 0), (3, 0), (3, 1))


def runtime_graph_files() -> dict[str, bytes]:
    return {
        f"gather_{dtype}_rank{rank}_axis{axis}.onnx": gather_graph(dtype, rank, axis).SerializeToString(
            deterministic=True
        )
        for dtype in DTYPES
        for rank, axis in GATHER_KINDS
    }


if __name__ == "__main__":
    GRAPHS_DIR.mkdir(exist_ok=True)
    for name, data in runtime_graph_files().items():
        (GRAPHS_DIR / name).write_bytes(data)
        print("wrote", GRAPHS_DIR / name)
