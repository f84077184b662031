"""The one place that imports Ray, with an error that names the extra when it is missing."""

from __future__ import annotations

from typing import Any


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError("s2s_runtime.serving.ray needs Ray: pip install 's2s-runtime[ray]'") from None
    return ray


def assigned_cpus(default: float = 1.0) -> float:
    """The CPUs Ray assigned to the current actor or task (`default` outside Ray)."""
    ray = import_ray()
    if not ray.is_initialized():
        return default
    return float(ray.get_runtime_context().get_assigned_resources().get("CPU", default))


def threads_for(cpus: float) -> int:
    """onnxruntime intra-op threads for a CPU share: onnxruntime ignores the OMP_NUM_THREADS Ray sets
    (ray#28044), so the share is passed explicitly; at least one thread."""
    return max(1, int(cpus))
