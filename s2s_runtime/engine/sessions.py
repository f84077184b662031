"""onnxruntime sessions: provider selection (CUDA when it really loads, else CPU), session settings, IO checks."""

from __future__ import annotations

import functools
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bundle import WEIGHTS_FILE, BundleError, GraphSpec

log = logging.getLogger("s2s_runtime")

PROBE_GRAPH = Path(__file__).resolve().parent.parent / "graphs" / "gather_float32_rank2_axis0.onnx"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
DEFAULT_IDLE_BUFFER_BYTES = 32 << 20  # a service's single inputs and batch-64 greedy buffers fit many times over
# The largest batch the greedy graph decodes by default: above it the step loop, which drops finished rows, is faster
# (measured: bench/results/greedy-graph, `s2s bench-cutover`).
DEFAULT_GREEDY_GRAPH_MAX_BATCH = 16
ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
}


class DeviceError(RuntimeError):
    """The requested device cannot be used (e.g. device="cuda" on a machine where CUDA does not load)."""


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            "s2s_runtime needs onnxruntime: pip install 's2s-runtime[cpu]' (or 's2s-runtime[gpu]' for CUDA; never both)"
        ) from None
    return onnxruntime


@dataclass(frozen=True)
class SessionSettings:
    """onnxruntime session settings. The defaults suit small recurrent models: one intra-op thread (a decoder step is
    a few small GEMVs, so more threads mostly add synchronisation), no spinning (idle threads do not burn a core
    between requests), all graph optimizations.

    Arguments:
        intra_op_threads: onnxruntime intra-op threads (0 lets onnxruntime choose).
        inter_op_threads: onnxruntime inter-op threads.
        allow_spinning: let idle onnxruntime threads spin (faster wake-up, a busy core while idle).
        optimization_level: onnxruntime graph optimization: disable, basic, extended or all.
        io_binding: preallocated, double-buffered decoder state buffers (device-resident on CUDA).
        cuda_graph: on CUDA, replay the decoder step as captured CUDA graphs per batch bucket (needs io_binding; no
            effect on the CPU).
        idle_buffer_bytes: the most bytes of decoder buffers kept between calls for reuse (per model and process,
            whatever the threads); a batch needing more releases its buffers when it ends.
        greedy_graph_max_batch: plain greedy batches of up to this many inputs are decoded by the bundle's greedy
            graph, in one onnxruntime call (larger batches, and bundles without one, run the step loop; 0: never,
            and the graph is not even loaded).

    Examples:
        >>> SessionSettings(intra_op_threads=2).intra_op_threads
        2
    """

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    allow_spinning: bool = False
    optimization_level: str = "all"
    io_binding: bool = True
    cuda_graph: bool = False
    idle_buffer_bytes: int = DEFAULT_IDLE_BUFFER_BYTES
    greedy_graph_max_batch: int = DEFAULT_GREEDY_GRAPH_MAX_BATCH

    def __post_init__(self) -> None:
        if (
            not isinstance(self.idle_buffer_bytes, int)
            or isinstance(self.idle_buffer_bytes, bool)
            or self.idle_buffer_bytes < 0
        ):
            raise ValueError(f"idle_buffer_bytes: must be an int ≥ 0, got {self.idle_buffer_bytes!r}")
        for key in ("intra_op_threads", "inter_op_threads", "greedy_graph_max_batch"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                why = " (0: never)" if key == "greedy_graph_max_batch" else " (0 lets onnxruntime choose)"
                raise ValueError(f"{key}: must be an int ≥ 0{why}, got {value!r}")
        if self.optimization_level not in OPTIMIZATION_LEVELS:
            raise ValueError(
                f"optimization_level: {self.optimization_level!r} is not one of disable, basic, extended, all"
            )

    def session_options(self) -> Any:
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.enable_cpu_mem_arena = False  # its arena never shrinks: a large batch would hold its peak for good
        options.inter_op_num_threads = self.inter_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if self.allow_spinning else "0")
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[self.optimization_level]
        options.log_severity_level = 3  # onnxruntime's own warnings are not the caller's business
        return options


@dataclass(frozen=True)
class Placement:
    """Where the sessions run: the device actually used and the provider list actually active."""

    device: str  # "cpu" or "cuda:N"
    providers: tuple[str, ...]
    reason: str


def parse_device(device: str) -> tuple[str, int]:
    """ "auto" | "cpu" | "cuda" | "cuda:N" → (kind, device id)."""
    if not isinstance(device, str):
        raise TypeError(f"device: expected a string, got {type(device).__name__}")
    match = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", device)
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ValueError(f"device: {device!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return match.group(1), int(match.group(2) or 0)


def create_sessions(
    graphs: list[GraphSpec], device: str, settings: SessionSettings, weights: bytes | None = None
) -> tuple[list[Any], Placement]:
    """One session per graph on the requested device, with `weights` (the bundle's verified weights.bin) as the
    graphs' external data. CUDA counts as available only if a session really runs on it: onnxruntime-gpu lists
    CUDAExecutionProvider even where its libraries are missing, then silently falls back to the CPU."""
    kind, device_id = parse_device(device)
    if kind in ("auto", "cuda"):
        works, why = cuda_works(device_id)
        if works:
            providers = [(CUDA, {"device_id": device_id}), CPU]
            sessions = [_session(g, providers, settings, weights) for g in graphs]
            log.info("s2s_runtime: running on cuda:%d (CUDAExecutionProvider)", device_id)
            return sessions, Placement(f"cuda:{device_id}", tuple(sessions[0].get_providers()), why)
        if kind == "cuda":
            raise DeviceError(f"device={device!r}: {why}; use device='cpu' or 'auto'")
        log.info("s2s_runtime: running on CPU (CPUExecutionProvider): %s", why)
    else:
        why = "device='cpu' requested"
    sessions = [_session(g, [CPU], settings, weights) for g in graphs]
    return sessions, Placement("cpu", tuple(sessions[0].get_providers()), why)


def cuda_works(device_id: int) -> tuple[bool, str]:
    """Whether a session really runs on CUDA device `device_id`, and why not."""
    if CUDA not in import_onnxruntime().get_available_providers():
        return False, "this onnxruntime build has no CUDAExecutionProvider (install s2s-runtime[gpu])"
    if _probe_cuda(device_id):
        return True, "CUDA loaded"
    return False, "CUDAExecutionProvider is listed but did not load (CUDA/cuDNN libraries or GPU missing)"


@functools.cache
def _probe_cuda(device_id: int) -> bool:
    """Probed once per process and device with a tiny graph — never with a bundle's own graphs: a float16 graph
    that falls back to the CPU can crash onnxruntime."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    probe = ort.InferenceSession(str(PROBE_GRAPH), options, providers=[(CUDA, {"device_id": device_id}), CPU])
    return probe.get_providers()[0] == CUDA


def create_capture_session(
    graph: GraphSpec, device_id: int, settings: SessionSettings, weights: bytes | None
) -> Any | None:
    """The decoder step again, in a session with CUDA graph capture enabled; None, with a log line, where
    onnxruntime refuses it (it does when any node would not run on CUDA)."""
    providers = [(CUDA, {"device_id": device_id, "enable_cuda_graph": "1"})]
    try:
        session = _from_bytes(graph.read(), settings, providers, weights)
    except Exception as error:  # noqa: BLE001 (onnxruntime's own exception types)
        log.warning("s2s_runtime: CUDA graph capture is off, onnxruntime refused it: %s", str(error).strip()[:300])
        return None
    if session.get_providers()[0] != CUDA:  # onnxruntime falls back to the CPU silently when CUDA does not load
        log.warning("s2s_runtime: CUDA graph capture is off: the capture session did not start on CUDA")
        return None
    check_graph_io(graph, session)
    return session


def _session(graph: GraphSpec, providers: list, settings: SessionSettings, weights: bytes | None) -> Any:
    """A session over the graph's verified bytes. Made from bytes, never from the path, onnxruntime has no
    directory to resolve external-data files in: a graph that needs any file but the bundle's verified weights.bin
    is refused instead of reading files no checksum covers."""
    try:
        session = _from_bytes(graph.read(), settings, providers, weights)
    except BundleError:
        raise
    except Exception as error:  # noqa: BLE001 (onnxruntime raises its own types for unreadable models)
        message = str(error).strip()
        hint = (
            " (it keeps tensors in external data files, which bundles do not allow but for their weights.bin)"
            if "external data" in message.lower()
            else ""
        )
        raise BundleError(f"{graph.path}: onnxruntime cannot load this graph{hint} ({message[:300]})") from None
    check_graph_io(graph, session)
    return session


def _from_bytes(model: bytes, settings: SessionSettings, providers: list, weights: bytes | None = None) -> Any:
    """An InferenceSession over a graph's bytes. onnxruntime resolves a graph's external data files against the
    current directory when the graph comes from bytes; pointing it at an empty directory of its own makes any such
    reference fail instead of reading files that no checksum covers. The bundle's weights.bin is handed over in
    memory: its verified bytes are the only external data a graph can name."""
    ort = import_onnxruntime()
    options = settings.session_options()
    if weights is not None:
        if not hasattr(options, "add_external_initializers_from_files_in_memory"):
            raise BundleError(
                f"this bundle keeps its weights in {WEIGHTS_FILE}, which needs onnxruntime ≥ 1.18 "
                f"(this is {ort.__version__}); upgrade onnxruntime or re-export with --no-greedy"
            )
        options.add_external_initializers_from_files_in_memory([WEIGHTS_FILE], [weights], [len(weights)])
    with tempfile.TemporaryDirectory(prefix="s2s-no-external-data-") as empty:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", empty)
        return ort.InferenceSession(model, options, providers=providers)


def check_graph_io(graph: GraphSpec, session: Any) -> None:
    """The graph's real inputs and outputs must be exactly those the manifest declares, with the same dtypes and
    ranks."""
    for direction, real in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        declared = {spec.name: spec for spec in getattr(graph, direction).values()}
        actual = {arg.name: arg for arg in real}
        if set(declared) != set(actual):
            missing, extra = sorted(set(declared) - set(actual)), sorted(set(actual) - set(declared))
            raise BundleError(
                f"{graph.path}: graph {direction} do not match manifest.json graphs.{graph.kind}."
                f"{direction} (declared but absent: {missing}; present but undeclared: {extra})"
            )
        for name, spec in declared.items():
            arg = actual[name]
            dtype = ORT_DTYPES.get(arg.type, arg.type)
            if dtype != spec.dtype or len(arg.shape) != len(spec.shape):
                raise BundleError(
                    f"{graph.path}: {direction[:-1]} {name!r} is {dtype} of rank {len(arg.shape)}, "
                    f"manifest.json declares {spec.dtype} of rank {len(spec.shape)}"
                )
            for axis, (real, claimed) in enumerate(zip(arg.shape, spec.shape, strict=True)):
                if isinstance(real, int) and isinstance(claimed, int) and real != claimed:
                    raise BundleError(
                        f"{graph.path}: {direction[:-1]} {name!r} has size {real} on axis {axis}, "
                        f"manifest.json declares {claimed}"
                    )
