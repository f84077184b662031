"""Devices: where a runner's tensors live and how their rows move, chosen once per model at load.

One object per kind of place, in the manner of onnxruntime-genai's DeviceInterface: the runner asks the device to
allocate, upload, bind and gather, and never checks which device it is on. Capabilities default to "no":
`writes_in_place` (the runner may update tensors through numpy, so beam reordering and reuse need no new buffers)
and `captures` (CUDA graph replay of the step, s2s_runtime.engine.capture).

- HostDevice: numpy arrays in host memory (the CPU execution provider); rows move with numpy.
- OrtValueDevice: OrtValues in an onnxruntime device's memory (a GPU's, for CUDA); rows move with a small Gather
  graph on that device (shipped in s2s_runtime/graphs/), so compaction and beam reordering never round-trip through
  the host. The tests run it on the CPU device, where it computes the same as on CUDA.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .sessions import Placement, import_onnxruntime

GRAPHS_DIR = Path(__file__).resolve().parent.parent / "graphs"


class Device:
    """The interface; see the module docstring. Tensors are whatever the device keeps (numpy arrays, OrtValues)."""

    name = "cpu"
    writes_in_place = False
    captures = False

    def upload(self, array: np.ndarray) -> Any:
        """A device tensor holding a copy-free (host) or copied (device) contiguous version of `array`."""
        raise NotImplementedError

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> Any:
        raise NotImplementedError

    def shape(self, tensor: Any) -> tuple[int, ...]:
        raise NotImplementedError

    def take(self, tensor: Any, rows: np.ndarray, axis: int) -> Any:
        """`rows` of `tensor` along `axis` (kept, reordered or repeated), as a new tensor."""
        raise NotImplementedError

    def bind(self, binding: Any, name: str, tensor: Any, *, output: bool = False) -> None:
        """Bind a tensor of this device to an IOBinding by graph name, in place (no copy)."""
        raise NotImplementedError


class HostDevice(Device):
    """Numpy arrays on the host, bound through OrtValues over their own memory (onnxruntime documents that one made
    from a numpy array on the CPU does not copy it; the array outlives the binding)."""

    writes_in_place = True

    def __init__(self) -> None:
        self._ort = import_onnxruntime()

    def upload(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array)

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        return np.empty(shape, dtype=dtype)

    def shape(self, tensor: np.ndarray) -> tuple[int, ...]:
        return tensor.shape

    def take(self, tensor: np.ndarray, rows: np.ndarray, axis: int) -> np.ndarray:
        return np.take(tensor, rows, axis=axis)

    def bind(self, binding: Any, name: str, tensor: np.ndarray, *, output: bool = False) -> None:
        value = self._ort.OrtValue.ortvalue_from_numpy(tensor)  # ≈ 1.7 µs, where binding by address costs ≈ 3
        if output:
            binding.bind_ortvalue_output(name, value)
        else:
            binding.bind_ortvalue_input(name, value)


class OrtValueDevice(Device):
    """OrtValues on onnxruntime device `device_type`:`device_id` (CUDA in production); gathers run there."""

    def __init__(self, device_type: str, device_id: int, providers: list):
        self._ort = import_onnxruntime()
        self.device_type, self.device_id, self.name = device_type, device_id, f"{device_type}:{device_id}"
        self.captures = device_type == "cuda"
        self.gather = DeviceGather(providers, device_type, device_id)

    def upload(self, array: np.ndarray) -> Any:
        return self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device_type, self.device_id)

    def empty(self, shape: tuple[int, ...], dtype: Any = np.float32) -> Any:
        return self._ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device_type, self.device_id)

    def shape(self, tensor: Any) -> tuple[int, ...]:
        return tuple(tensor.shape())

    def take(self, tensor: Any, rows: np.ndarray, axis: int) -> Any:
        return self.gather(tensor, rows, axis)

    def bind(self, binding: Any, name: str, tensor: Any, *, output: bool = False) -> None:
        if output:
            binding.bind_ortvalue_output(name, tensor)
        else:
            binding.bind_ortvalue_input(name, tensor)


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


def device_for(placement: Placement) -> Device:
    """The Device of where the sessions run."""
    if placement.device == "cpu":
        return HostDevice()
    device_type, device_id = placement.device.split(":")
    return OrtValueDevice(device_type, int(device_id), list(placement.providers))
