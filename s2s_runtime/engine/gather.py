"""Gather along a batch axis on the device where the tensors live, with the Gather graphs shipped in
s2s_runtime/graphs/ (one per dtype, rank and axis): compaction and beam reordering never round-trip through the host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .sessions import import_onnxruntime

GRAPHS_DIR = Path(__file__).resolve().parent.parent / "graphs"


class DeviceGather:
    """Gather along a batch axis on the device where the tensors live, with the shipped Gather graphs."""

    def __init__(self, providers: list, device_type: str, device_id: int):
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.device_type, self.device_id = device_type, device_id
        self._sessions = {
            path.stem: ort.InferenceSession(str(path), options, providers=providers)
            for path in sorted(GRAPHS_DIR.glob("gather_*.onnx"))
        }

    def __call__(self, value: Any, rows: np.ndarray, axis: int, *, out: Any = None) -> Any:
        """`rows` of `value` along `axis`, as a new device tensor or written into `out` (which must not be
        `value`: the gather does not work in place)."""
        dtype = {"tensor(float)": "float32", "tensor(float16)": "float16"}[value.data_type()]
        session = self._sessions[f"gather_{dtype}_rank{len(value.shape())}_axis{axis}"]
        binding = session.io_binding()
        binding.bind_ortvalue_input("values", value)
        binding.bind_cpu_input("indices", rows.astype(np.int64))
        if out is None:
            binding.bind_output("gathered", self.device_type, self.device_id)
        else:
            binding.bind_ortvalue_output("gathered", out)
        session.run_with_iobinding(binding)
        return out if out is not None else binding.get_outputs()[0]
