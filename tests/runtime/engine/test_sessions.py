import logging

import onnxruntime
import pytest

import s2s_runtime
from s2s_runtime import DeviceError
from s2s_runtime.engine.sessions import parse_device


def test_auto_falls_back_to_cpu_with_one_log_line(small_bundle, caplog):
    with caplog.at_level(logging.INFO, logger="s2s_runtime"):
        model = s2s_runtime.load(small_bundle)  # device="auto"
    assert model.device == "cpu" and model.providers == ("CPUExecutionProvider",)
    lines = [r.getMessage() for r in caplog.records if r.name == "s2s_runtime"]
    assert len(lines) == 1 and lines[0].startswith("s2s_runtime: running on CPU (CPUExecutionProvider): ")


def test_listed_but_unloadable_cuda_is_detected(small_bundle, caplog, monkeypatch):
    """onnxruntime-gpu lists CUDA even where it cannot load; simulate that on any build."""
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with caplog.at_level(logging.INFO, logger="s2s_runtime"):
        model = s2s_runtime.load(small_bundle, device="auto")
    assert model.device == "cpu"
    assert "CUDAExecutionProvider is listed but did not load" in caplog.text
    with pytest.raises(DeviceError, match=r"device='cuda:1': CUDAExecutionProvider is listed but did not load"):
        s2s_runtime.load(small_bundle, device="cuda:1")


def test_strict_cuda_fails_clearly_here(small_bundle):
    with pytest.raises(DeviceError, match=r"device='cuda': .*use device='cpu' or 'auto'"):
        s2s_runtime.load(small_bundle, device="cuda")


def test_device_strings_and_thread_settings(small_bundle):
    assert parse_device("cuda:2") == ("cuda", 2)
    with pytest.raises(ValueError, match="'gpu' is not 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        s2s_runtime.load(small_bundle, device="gpu")
    with pytest.raises(ValueError, match="intra_op_threads"):
        s2s_runtime.load(small_bundle, device="cpu", intra_op_threads=-1)
    model = s2s_runtime.load(small_bundle, device="cpu", intra_op_threads=2)
    assert model.generate("abc")[0].ids == s2s_runtime.load(small_bundle, device="cpu").generate("abc")[0].ids
