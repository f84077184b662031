"""A tiny helper for writing ONNX graphs op by op (names generated, weights as initializers)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
# IR version 9 is the newest that every supported onnxruntime (≥ 1.17) loads; newer onnx packages default higher.
IR_VERSION = 9
ONNX_DTYPES = {
    "float32": TensorProto.FLOAT,
    "float16": TensorProto.FLOAT16,
    "int64": TensorProto.INT64,
    "int32": TensorProto.INT32,
}


class GraphBuilder:
    """Collects nodes, initializers and IO of one graph.

    Examples:
        >>> g = GraphBuilder("demo")
        >>> x = g.input("x", "float32", ["batch", 4])
        >>> g.output(g.op("Relu", x), "y", "float32", ["batch", 4])
        >>> g.model().graph.node[0].op_type
        'Relu'
    """

    def __init__(self, name: str, prefix: str = ""):
        self.name = name
        self.prefix = prefix  # subgraph names must not collide with the enclosing graph's
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def input(self, name: str, dtype: str, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, ONNX_DTYPES[dtype], shape))
        return name

    def output(self, value: str, name: str, dtype: str, shape: list) -> None:
        self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.outputs.append(helper.make_tensor_value_info(name, ONNX_DTYPES[dtype], shape))

    def expose(self, value: str, dtype: str, shape: list) -> None:
        """Make a node's output a graph output under its own name (no Identity: for subgraph bodies, whose output
        names do not matter)."""
        self.outputs.append(helper.make_tensor_value_info(value, ONNX_DTYPES[dtype], shape))

    def const(self, array: np.ndarray, hint: str = "const") -> str:
        name = self._fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))  # keeps 0-d scalars 0-d
        return name

    def ints(self, values: list[int], hint: str = "ints") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint)

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        return self.op_multi(op_type, 1, *inputs, **attrs)[0]

    def op_multi(self, op_type: str, num_outputs: int, *inputs: str, **attrs) -> list[str]:
        outputs = [self._fresh(op_type.lower()) for _ in range(num_outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outputs, **attrs))
        return outputs

    def subgraph(self, name: str) -> GraphBuilder:
        """A builder for a control-flow body (Scan, Loop) whose generated names cannot clash with this graph's."""
        return GraphBuilder(name, prefix=self._fresh(name) + "_")

    def graph(self) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)

    def model(self) -> onnx.ModelProto:
        model = helper.make_model(
            self.graph(),
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="s2s_export",
            ir_version=IR_VERSION,
        )
        onnx.checker.check_model(model, full_check=True)
        return model
