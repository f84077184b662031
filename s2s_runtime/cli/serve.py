"""`s2s serve`: the HTTP service (the serve extra), on this machine or as Ray Serve replicas."""

from __future__ import annotations

import argparse
from typing import Any

from ..serving.config import BatcherConfig
from .common import add_bundle, add_limit_flags, add_session_flags, load_model, request_limits
from .flags import add_fields, given


def add_parser(commands: Any) -> None:
    from ..serving.http.config import ServerConfig

    parser = commands.add_parser(
        "serve",
        help="HTTP service with dynamic batching (the serve extra)",
        description="POST /v1/generate, GET /healthz, /readyz, /metrics. Binds to loopback unless --host says "
        "otherwise.",
    )
    add_bundle(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level (default: info)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="json: one JSON access-log line per request (time, request id, method, path, status, ms, client)",
    )
    # The request deadline is the server's (it also becomes the batcher's): one flag, --request-timeout-s.
    add_fields(
        parser,
        BatcherConfig,
        title="batching (BatcherConfig fields)",
        skip=("timeout_s",),
        names={"workers": "batch_workers"},
    )
    add_fields(
        parser, ServerConfig, title="HTTP limits (ServerConfig fields)", aliases={"request_timeout_s": ["--timeout-s"]}
    )
    ray_group = parser.add_argument_group("scale-out on Ray (the ray extra)")
    ray_group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="serve with Ray Serve replicas: on a new local cluster, or the cluster at ADDRESS",
    )
    ray_group.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (with --ray; default 1)")
    ray_group.add_argument(
        "--replica-cpus", type=float, default=1.0, help="CPUs per replica; its onnxruntime threads follow (default 1)"
    )
    ray_group.add_argument(
        "--ray-ingress",
        choices=["haproxy", "serve-proxy"],
        default="haproxy",
        help="haproxy (default): replicas serve HTTP themselves behind HAProxy; serve-proxy: "
        "Ray Serve's Python proxy, about 10× slower here (see the docs)",
    )
    add_session_flags(parser)
    add_limit_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401

        from ..serving.http import ServerConfig, serve
    except ImportError:
        raise ImportError("s2s serve needs the serve extra: pip install 's2s-runtime[serve]'") from None
    config = ServerConfig(**given(args, ServerConfig))
    batcher_config = BatcherConfig(**given(args, BatcherConfig), timeout_s=config.request_timeout_s)
    if args.ray is not None:
        from ..serving.ray.serving import ReplicaConfig
        from ..serving.ray.serving import run as run_on_ray

        replica = ReplicaConfig(
            batcher=batcher_config, server=config, limits=request_limits(args), device=args.device, threads=None
        )
        run_on_ray(
            args.bundle,
            address=None if args.ray == "local" else args.ray,
            replicas=args.replicas,
            num_cpus=args.replica_cpus,
            host=args.host,
            port=args.port,
            config=replica,
            haproxy=args.ray_ingress == "haproxy",
        )
        return 0
    model = load_model(args)
    return serve(
        model,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_format=args.log_format,
        batcher_config=batcher_config,
        config=config,
    )
