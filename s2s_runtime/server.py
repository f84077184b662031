"""`s2s serve`: an HTTP service over the dynamic batcher (Starlette + uvicorn, the `serve` extra).

POST /v1/generate   {"inputs": "text" | ["text", ...], "options": {...}, "target_prefix": [...], "stream": false}
                    → {"results": [{"text", "tokens", "ids", "score", "finished", "hypotheses": [...]}]}
                    With "stream": true and one input: server-sent events, one `token` event per token, then `end`.
GET  /healthz       the process is up
GET  /readyz        the model is warmed up and the batcher takes requests (503 otherwise)
GET  /metrics       Prometheus: request latency and batch size histograms, queue depth, tokens, errors by kind

Bad input → 400/413 with {"error": {"type", "message"}}; overload → 503; timeout → 504.
"""

from __future__ import annotations

import asyncio
import json
import threading
import logging
import time
from dataclasses import dataclass
from typing import Any

from .config import GenerationOptions
from .model import Seq2SeqModel
from .service import Batcher, BatcherClosed, BatcherConfig, Overloaded, RequestTimeout

log = logging.getLogger("s2s_runtime.server")


@dataclass(frozen=True)
class ServerConfig:
    """Limits of the HTTP layer; batching settings are a BatcherConfig."""

    max_body_bytes: int = 1 << 20
    max_inputs: int = 256
    request_timeout_s: float = 30.0


class Metrics:
    """Prometheus metrics in their own registry (several apps in one process do not collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.latency = Histogram("s2s_request_latency_seconds", "Latency of /v1/generate requests",
                                 registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch_size = Histogram("s2s_batch_size", "Inputs per decoded batch", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.queue = Gauge("s2s_queue_depth", "Requests waiting in the batcher", registry=self.registry)
        self.tokens = Counter("s2s_tokens_generated", "Tokens generated (eos included)", registry=self.registry)
        self.errors = Counter("s2s_errors", "Failed requests by kind", ["kind"], registry=self.registry)

    # BatcherObserver
    def batch_done(self, size: int, seconds: float, tokens: int) -> None:
        self.batch_size.observe(size)
        self.tokens.inc(tokens)

    def queue_depth(self, depth: int) -> None:
        self.queue.set(depth)

    def request_failed(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()


class BadRequest(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def create_app(model: Seq2SeqModel, batcher_config: BatcherConfig = BatcherConfig(),
               config: ServerConfig = ServerConfig()) -> Any:
    """The Starlette application; the batcher starts with the app and drains on shutdown.

    Example:
        >>> app = create_app(s2s_runtime.load("g2p-en"))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    metrics = Metrics()
    state: dict[str, Batcher] = {}

    def error(status: int, kind: str, message: str) -> JSONResponse:
        metrics.request_failed(kind)
        return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)

    async def read_json(request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) > config.max_body_bytes:
            raise BadRequest(f"body of {declared} bytes exceeds the limit of {config.max_body_bytes}", 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > config.max_body_bytes:
                raise BadRequest(f"body exceeds the limit of {config.max_body_bytes} bytes", 413)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as problem:
            raise BadRequest(f"body is not valid JSON ({problem})") from None
        if not isinstance(payload, dict):
            raise BadRequest("body must be a JSON object")
        unknown = sorted(set(payload) - {"inputs", "options", "target_prefix", "stream"})
        if unknown:
            raise BadRequest(f"unknown field {unknown[0]!r} (fields: inputs, options, target_prefix, stream)")
        return payload

    def parse(payload: dict) -> tuple[list, GenerationOptions, list | None, bool]:
        inputs = payload.get("inputs")
        single = isinstance(inputs, str)
        inputs = [inputs] if single else inputs
        if not isinstance(inputs, list) or not inputs:
            raise BadRequest("'inputs' must be a string or a non-empty list")
        if len(inputs) > config.max_inputs:
            raise BadRequest(f"{len(inputs)} inputs exceed the limit of {config.max_inputs}", 413)
        options = payload.get("options") or {}
        if not isinstance(options, dict):
            raise BadRequest("'options' must be an object")
        if "max_batch_size" in options:
            raise BadRequest("'max_batch_size' is a server setting, not a request option")
        try:
            parsed = GenerationOptions.from_kwargs(options)
        except (TypeError, ValueError) as problem:
            raise BadRequest(f"options: {problem}") from None
        prefixes = payload.get("target_prefix")
        if prefixes is not None and (not isinstance(prefixes, list) or len(prefixes) != len(inputs)):
            raise BadRequest("'target_prefix' must be a list with one entry (or null) per input")
        return inputs, parsed, prefixes, bool(payload.get("stream", False))

    async def generate(request: Request) -> Response:
        started = time.perf_counter()
        batcher = state["batcher"]
        try:
            inputs, options, prefixes, stream = parse(await read_json(request))
            if stream:
                if len(inputs) != 1:
                    raise BadRequest("streaming takes exactly one input")
                return stream_response(inputs[0], options, prefixes[0] if prefixes else None)
            futures = [batcher.submit(item, options=options, timeout=config.request_timeout_s,
                                      target_prefix=None if prefixes is None else prefixes[i])
                       for i, item in enumerate(inputs)]
            try:
                results = await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(f) for f in futures)),
                                                 timeout=config.request_timeout_s)
            except asyncio.TimeoutError:
                for future in futures:
                    future.cancel()
                raise RequestTimeout(f"no answer within {config.request_timeout_s} s") from None
        except BadRequest as problem:
            return error(problem.status, "bad_request", str(problem))
        except (ValueError, TypeError) as problem:  # the model's verdict on an input
            return error(400, "bad_input", str(problem))
        except Overloaded as problem:
            return error(503, "overloaded", str(problem))
        except BatcherClosed as problem:
            return error(503, "shutting_down", str(problem))
        except RequestTimeout as problem:
            return error(504, "timeout", str(problem))
        metrics.latency.observe(time.perf_counter() - started)
        log.debug("generate: %d inputs in %.1f ms", len(inputs), (time.perf_counter() - started) * 1e3)
        return JSONResponse({"results": [r.to_dict() for r in results]})

    def stream_response(item: Any, options: GenerationOptions, prefix: Any) -> Response:
        if options.strategy == "beam":
            raise BadRequest("options: strategy: beam search is not streamable")
        iterator = model.generate_stream(item, target_prefix=prefix, options=options)

        async def events():
            from starlette.concurrency import iterate_in_threadpool

            try:
                async for token in iterate_in_threadpool(iterator):
                    payload = {"token": token.token, "id": token.id, "log_prob": token.log_prob}
                    yield f"event: token\ndata: {json.dumps(payload)}\n\n"
                yield "event: end\ndata: {}\n\n"
            except (ValueError, TypeError) as problem:
                metrics.request_failed("bad_input")
                yield f"event: error\ndata: {json.dumps({'message': str(problem)})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        batcher = state.get("batcher")
        if batcher is None or not batcher.ready.is_set():
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready", "queue_depth": batcher.queue_depth()})

    async def prometheus(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Any):
        state["batcher"] = Batcher(model, batcher_config, observer=metrics)
        yield
        await asyncio.to_thread(state["batcher"].close, drain=True)

    return Starlette(routes=[Route("/v1/generate", generate, methods=["POST"]), Route("/healthz", healthz),
                             Route("/readyz", readyz), Route("/metrics", prometheus)], lifespan=lifespan)


def serve(model: Seq2SeqModel, *, host: str = "127.0.0.1", port: int = 8000,
          batcher_config: BatcherConfig = BatcherConfig(), config: ServerConfig = ServerConfig(),
          log_level: str = "info") -> None:
    """Run the service with uvicorn until interrupted (loopback by default)."""
    import uvicorn

    uvicorn.run(create_app(model, batcher_config, config), host=host, port=port, log_level=log_level)



class BackgroundServer:
    """A uvicorn server on a background thread (an ephemeral port by default), for tests and the load test.

    Example:
        >>> with BackgroundServer(create_app(model)) as server:  # doctest: +SKIP
        ...     httpx.get(f"{server.url}/healthz")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="s2s-server", daemon=True)
        self.host = host

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://{self.host}:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
