"""A Ray Serve application that speaks exactly the HTTP API of `s2s serve`.

Each replica loads the bundle once, with onnxruntime threads set to the replica's CPUs, and serves the very
Starlette application of s2s_runtime.serving.http — same routes, JSON, errors, limits, streaming, readiness and metrics
— with the project's own Batcher inside: it batches only requests with the same options (Serve's @serve.batch knows
nothing of per-request options, and blocks the replica's event loop unless decoding moves to a thread). Serve's
`max_ongoing_requests` (default 5, which would cap every batch at 5 requests) is raised to what the batcher admits.
Serve calls `check_health` periodically, and replaces a replica whose batcher lost a worker for good.

Throughput: Serve's default HTTP proxy is a Python hop that tops out at about 80–100 requests/s on a 2-core machine
even with a model that does nothing (ray#42565). `run(..., haproxy=True)` (the default of `s2s serve --ray`) sets
RAY_SERVE_THROUGHPUT_OPTIMIZED and RAY_SERVE_ENABLE_HA_PROXY: each replica serves HTTP itself and HAProxy balances
the serving port among them (measured figures of both in docs/guides/scale-out.md).
"""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass
from typing import Any

from ...limits import RequestLimits
from ...model import load
from ..config import BatcherConfig
from ..http import ServerConfig, create_app
from ._require import assigned_cpus, import_ray, threads_for

# Serve settings read by its processes at start: each replica serves HTTP itself ("direct ingress"), and HAProxy,
# which Ray runs, balances the port among the replicas.
HAPROXY_INGRESS = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}


@dataclass(frozen=True)
class ReplicaConfig:
    """How each replica serves: the same settings objects as `s2s serve`.

    Arguments:
        batcher: batching settings of the replica's Batcher.
        server: HTTP limits (bodies, inputs, deadlines, connections, shutdown grace).
        limits: the most work one request may ask (RequestLimits).
        device: "cpu", "cuda", "cuda:N" or "auto".
        threads: onnxruntime intra-op threads; None (default) takes the replica's CPUs.

    Examples:
        >>> ReplicaConfig(threads=2).device
        'cpu'
    """

    batcher: BatcherConfig = BatcherConfig()
    server: ServerConfig = ServerConfig()
    limits: RequestLimits = RequestLimits()
    device: str = "cpu"
    threads: int | None = None


class S2SReplica:
    """One replica: the model loaded once, served by the s2s_runtime.serving.http application (see `app`)."""

    def __init__(self, bundle: str, config: ReplicaConfig):
        threads = config.threads or threads_for(assigned_cpus())
        self.model = load(bundle, device=config.device, intra_op_threads=threads, limits=config.limits)
        self.config = config
        self.asgi: Any = None

    def __serve_build_asgi_app__(self) -> Any:
        self.asgi = create_app(self.model, self.config.batcher, self.config.server)
        return self.asgi

    def check_health(self) -> None:
        """Called by Serve: a replica whose batcher lost a worker (and has not restarted it) is unhealthy."""
        state = None if self.asgi is None else self.asgi.state.s2s
        if state is None or state.batcher is None or state.draining or not state.batcher.ready.is_set():
            return  # starting up or draining: not a failure
        if not state.batcher.is_ready():
            raise RuntimeError("a batcher worker is down")


def app(
    bundle: str, *, replicas: int = 1, num_cpus: float = 1.0, config: ReplicaConfig = ReplicaConfig(), name: str = "s2s"
) -> Any:
    """A Serve application (for `serve.run`) serving `bundle` with `replicas` replicas of `num_cpus` CPUs each.

    Examples:
        >>> from ray import serve
        >>> serve.run(app("g2p-en", replicas=2), route_prefix="/")  # doctest: +SKIP
    """
    import_ray()
    from ray import serve

    deployment: Any = serve.deployment(  # a Deployment (Ray's stubs type this call as a decorator)
        serve.ingress()(S2SReplica),
        name=name,
        num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus},
        max_ongoing_requests=config.batcher.max_queue + config.batcher.max_streams,
        graceful_shutdown_timeout_s=config.server.shutdown_grace_s + 1,
        health_check_period_s=5,
    )
    return deployment.bind(bundle, config)


def build_app(args: dict[str, str]) -> Any:
    """The application builder of `serve run s2s_runtime.serving.ray:build_app bundle=g2p-en replicas=2 num_cpus=1`
    (values as strings, as `serve run` passes them; `threads` and the BatcherConfig fields max_batch_size,
    max_wait_ms, max_queue, timeout_s and workers are accepted too).

    Examples:
        >>> build_app({"bundle": "g2p-en", "replicas": "2"})  # doctest: +SKIP
    """
    known = {
        "bundle",
        "replicas",
        "num_cpus",
        "threads",
        "max_batch_size",
        "max_wait_ms",
        "max_queue",
        "timeout_s",
        "workers",
    }
    unknown = sorted(set(args) - known)
    if unknown or "bundle" not in args:
        raise ValueError(
            f"build_app: takes bundle=... and optionally {', '.join(sorted(known - {'bundle'}))}"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    batcher: dict[str, Any] = {
        key: (float if key in ("max_wait_ms", "timeout_s") else int)(args[key])
        for key in ("max_batch_size", "max_wait_ms", "max_queue", "timeout_s", "workers")
        if key in args
    }
    config = ReplicaConfig(
        batcher=BatcherConfig(**batcher), threads=int(args["threads"]) if "threads" in args else None
    )
    return app(
        args["bundle"], replicas=int(args.get("replicas", 1)), num_cpus=float(args.get("num_cpus", 1)), config=config
    )


def start_ray(address: str | None, *, haproxy: bool) -> Any:
    """Start a local Ray cluster bound to the loopback interface (address None) or join the one at `address`,
    with Serve's processes configured for HAProxy ingress when asked."""
    ray = import_ray()
    if haproxy:  # read by Serve's processes when they start: set before Ray starts them
        os.environ.update(HAPROXY_INGRESS)
    local = {"_node_ip_address": "127.0.0.1"} if address is None else {}
    ray.init(
        address=address or "local",
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": dict(HAPROXY_INGRESS)} if haproxy else None,
        **local,
    )
    return ray


def run(
    bundle: str,
    *,
    address: str | None,
    replicas: int,
    num_cpus: float,
    host: str,
    port: int,
    config: ReplicaConfig,
    haproxy: bool = True,
) -> None:
    """`s2s serve --ray`: start (address None) or join a Ray cluster, run the application until SIGTERM or SIGINT,
    then shut Serve down (each replica drains its batcher within the shutdown grace period)."""
    ray = start_ray(address, haproxy=haproxy)
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(app(bundle, replicas=replicas, num_cpus=num_cpus, config=config), route_prefix="/")
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    serve.shutdown()
    ray.shutdown()
