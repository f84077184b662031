"""Devices: where a runner's tensors live and how their rows move, chosen once per model at load.

One object per kind of place, in the manner of onnxruntime-genai's DeviceInterface: the runner asks the device to
allocate, upload, bind and gather, and never checks which device it is on. Capabilities default to "no":
`writes_in_place` (the runner may update tensors through numpy, so beam reordering and reuse need no new buffers)
and `captures` (CUDA graph replay of the step, s2s_runtime.engine.capture).

- HostDevice: numpy arrays in host memory (the CPU execution provider); rows move with numpy.
- OrtValueDevice: OrtValues in an onnxruntime device's memory; rows move with a small Gather graph on that device
  (s2s_runtime.engine.gather), so compaction and beam reordering never round-trip through the host. The tests run
  it on the CPU device, where it computes the same as on CUDA.
- CudaDevice: an OrtValueDevice on a CUDA GPU, which also captures.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .gather import DeviceGather
from .sessions import Placement, import_onnxruntime


class Device:
    """The interface; see the module docstring. Tensors are whatever the device keeps (numpy arrays, OrtValues)."""

    name = "cpu"
    writes_in_place = False
    captures = False

    @property
    def host(self) -> HostDevice:
        """The device of the host arrays a runner reads and writes whatever this device keeps (ids, log-probs)."""
        raise NotImplementedError

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

    def write(self, tensor: Any, array: np.ndarray) -> None:
        """Copy a host array of the same shape and dtype into a tensor of this device, in place."""
        raise NotImplementedError

    def nbytes(self, tensor: Any) -> int:
        """The bytes a tensor of this device holds."""
        raise NotImplementedError

    def read(self, tensor: Any) -> np.ndarray:
        """A host copy (or view) of a tensor of this device."""
        raise NotImplementedError


class HostDevice(Device):
    """Numpy arrays on the host, bound through OrtValues over their own memory (onnxruntime documents that one made
    from a numpy array on the CPU does not copy it; the array outlives the binding)."""

    writes_in_place = True

    def __init__(self) -> None:
        self._ort = import_onnxruntime()

    @property
    def host(self) -> HostDevice:
        return self

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

    def write(self, tensor: np.ndarray, array: np.ndarray) -> None:
        np.copyto(tensor, array)

    def nbytes(self, tensor: np.ndarray) -> int:
        return tensor.nbytes

    def read(self, tensor: np.ndarray) -> np.ndarray:
        return tensor


class OrtValueDevice(Device):
    """OrtValues on onnxruntime device `device_type`:`device_id`; gathers run there. The tests run it on the CPU
    device; production runs CudaDevice."""

    def __init__(self, device_type: str, device_id: int, providers: list):
        self._ort = import_onnxruntime()
        self.device_type, self.device_id, self.name = device_type, device_id, f"{device_type}:{device_id}"
        self.gather = DeviceGather(providers, device_type, device_id)
        self._host = HostDevice()

    @property
    def host(self) -> HostDevice:
        return self._host

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

    def write(self, tensor: Any, array: np.ndarray) -> None:
        tensor.update_inplace(np.ascontiguousarray(array))

    def nbytes(self, tensor: Any) -> int:
        itemsize = {"tensor(float)": 4, "tensor(float16)": 2, "tensor(int64)": 8}[tensor.data_type()]
        return int(np.prod(tensor.shape())) * itemsize

    def bind_view(self, binding: Any, name: str, tensor: Any, shape: tuple[int, ...]) -> None:
        """Bind the memory of an int64 `tensor` as an output of another shape with as many elements."""
        binding.bind_output(name, self.device_type, self.device_id, np.int64, list(shape), tensor.data_ptr())

    def run_options(self, *, gpu_graph_id: int) -> Any:
        """RunOptions that replay (or capture) CUDA graph `gpu_graph_id`."""
        options = self._ort.RunOptions()
        options.add_run_config_entry("gpu_graph_id", str(gpu_graph_id))
        return options

    def read(self, tensor: Any) -> np.ndarray:
        return tensor.numpy()


class CudaDevice(OrtValueDevice):
    """A CUDA GPU's memory: states stay there between steps, and the step can be replayed as captured CUDA graphs
    (s2s_runtime.engine.capture)."""

    captures = True


def device_for(placement: Placement) -> Device:
    """The Device of where the sessions run."""
    if placement.device == "cpu":
        return HostDevice()
    device_type, device_id = placement.device.split(":")
    kind = CudaDevice if device_type == "cuda" else OrtValueDevice
    return kind(device_type, int(device_id), list(placement.providers))
