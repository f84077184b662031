"""`s2s serve`: an HTTP service over the dynamic batcher (Starlette + uvicorn, the `serve` extra).

POST /v1/generate   {"inputs": "text" | ["text", ...], "options": {...}, "target_prefix": [...], "stream": false}
                    → {"results": [{"text", "tokens", "ids", "score", "finished", "hypotheses": [...]}]}
                    With "stream": true and one input: server-sent events, one `token` event per token, then `end`
                    (or a final `error` event with the error's type and message).
GET  /healthz       the process is up
GET  /readyz        the model is warmed up, every batcher worker alive, and the service not draining (503 otherwise)
GET  /metrics       Prometheus: requests and latency by outcome, batch size, queue depth, open streams, tokens

Bad input → 400/413 with {"error": {"type", "message"}}; overload or shutting down → 503; deadline → 504; a
failure that is not the request's fault → 500.

No request can hurt the others: bodies, headers and JSON depth are bounded, a request that does not arrive in time
gets 408, idle connections are closed, connections and streams are capped, every request's work is checked against
the model's RequestLimits before it is queued, deadlines hold during decoding, and a client that disconnects
cancels its work. SIGTERM drains: /readyz turns 503, new requests get 503, in-flight requests get
`shutdown_grace_s` to finish, then what is left is stopped (503) and the process exits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any

from .config import GenerationOptions
from .files import parse_json
from .model import Seq2SeqModel
from .service import Batcher, BatcherClosed, BatcherConfig, InternalError, Overloaded, RequestTimeout

log = logging.getLogger("s2s_runtime.server")

FIELDS = ("inputs", "options", "target_prefix", "stream")
# Each request is counted once, under one of these (503s for shutting down count as overloaded: the service could
# not take the request).
OUTCOMES = ("ok", "bad_input", "overloaded", "timeout", "cancelled", "internal")


@dataclass(frozen=True)
class ServerConfig:
    """Limits of the HTTP layer; batching settings are a BatcherConfig, per-request work a RequestLimits.

    Arguments:
        max_body_bytes: request bodies past this get 413.
        max_inputs: inputs per request past this get 413.
        request_timeout_s: deadline of a request from its arrival, decoding included (504 past it).
        max_header_bytes: request line and headers past this get 431 and the connection is closed.
        read_timeout_s: a request's headers, and then its body, must arrive within this (408 otherwise); a
            connection that sends nothing is closed after it.
        keep_alive_s: an idle keep-alive connection is closed after this.
        max_connections: connections open at once; more are answered 503 and closed.
        max_json_depth: bodies nested deeper get 400.
        shutdown_grace_s: on SIGTERM, how long in-flight requests have to finish before they are stopped.

    Examples:
        >>> ServerConfig(max_inputs=8).max_body_bytes
        1048576
    """

    max_body_bytes: int = 1 << 20
    max_inputs: int = 256
    request_timeout_s: float = 30.0
    max_header_bytes: int = 16 * 1024
    read_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 512
    max_json_depth: int = 32
    shutdown_grace_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_inputs", "max_header_bytes", "max_connections", "max_json_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: must be an int ≥ 1, got {value!r}")
        for name in ("request_timeout_s", "read_timeout_s", "keep_alive_s", "shutdown_grace_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")


class Metrics:
    """Prometheus metrics in their own registry (several apps in one process do not collide)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "s2s_requests",
            "Requests to /v1/generate by outcome, each counted once",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "s2s_request_latency_seconds",
            "Latency of /v1/generate requests by outcome",
            ["outcome"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batch_size = Histogram(
            "s2s_batch_size",
            "Inputs per decoded batch",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.queue = Gauge("s2s_queue_depth", "Requests waiting in the batcher", registry=self.registry)
        self.streams = Gauge("s2s_open_streams", "Streaming responses in progress", registry=self.registry)
        self.tokens = Counter("s2s_tokens_generated", "Tokens generated (eos included)", registry=self.registry)
        self.rejected = Counter(
            "s2s_connections_rejected", "Connections closed before reaching the app", ["reason"], registry=self.registry
        )
        for outcome in OUTCOMES:  # every label present from the start, so rates are defined
            self.requests.labels(outcome=outcome)

    def request_done(self, outcome: str, seconds: float) -> None:
        self.requests.labels(outcome=outcome).inc()
        self.latency.labels(outcome=outcome).observe(seconds)

    # BatcherObserver
    def batch_done(self, size: int, seconds: float, tokens: int) -> None:
        self.batch_size.observe(size)
        self.tokens.inc(tokens)

    def queue_depth(self, depth: int) -> None:
        self.queue.set(depth)


class HTTPError(Exception):
    """A request refused by the HTTP layer: status, error type (of the JSON body) and metrics outcome."""

    def __init__(self, status: int, kind: str, message: str, outcome: str = "bad_input"):
        super().__init__(message)
        self.status, self.kind, self.outcome = status, kind, outcome


# The model's and the batcher's exceptions as HTTP answers: (status, error type, metrics outcome).
ERRORS: list[tuple[type[BaseException], int, str, str]] = [
    (Overloaded, 503, "overloaded", "overloaded"),
    (BatcherClosed, 503, "shutting_down", "overloaded"),
    (RequestTimeout, 504, "timeout", "timeout"),
    (InternalError, 500, "internal", "internal"),
    (ValueError, 400, "bad_input", "bad_input"),
    (TypeError, 400, "bad_input", "bad_input"),
]


def http_error(error: BaseException) -> HTTPError:
    if isinstance(error, HTTPError):
        return error
    for kind, status, name, outcome in ERRORS:
        if isinstance(error, kind):
            return HTTPError(status, name, str(error), outcome)
    return HTTPError(500, "internal", f"{type(error).__name__}: {error}", "internal")


class Service:
    """The application's state: the batcher, the metrics, and whether it is draining."""

    def __init__(self, model: Seq2SeqModel, batcher_config: BatcherConfig, config: ServerConfig):
        self.model, self.batcher_config, self.config = model, batcher_config, config
        self.metrics = Metrics()
        self.batcher: Batcher | None = None
        self.draining = False
        self._active = 0  # /v1/generate requests in progress, body reading included
        self._lock = threading.Lock()

    def start(self) -> Batcher:
        self.batcher = Batcher(self.model, self.batcher_config, observer=self.metrics)
        return self.batcher

    def ready(self) -> bool:
        return self.batcher is not None and not self.draining and self.batcher.is_ready()

    def busy(self) -> bool:
        with self._lock:
            return self._active > 0 or (self.batcher is not None and self.batcher.busy())

    def enter(self) -> None:
        with self._lock:
            self._active += 1

    def leave(self) -> None:
        with self._lock:
            self._active -= 1

    def drain(self, grace_s: float) -> None:
        """Stop taking requests (readiness and new requests answer 503), give in-flight ones `grace_s` to finish,
        then stop what is left (503). Blocking: run it off the event loop."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.batcher is not None:
            self.batcher.close(drain=True, timeout=max(0.0, deadline - time.monotonic()))
        while self._active and time.monotonic() < deadline + 1:  # handlers writing their (error) answers
            time.sleep(0.01)


def create_app(
    model: Seq2SeqModel,
    batcher_config: BatcherConfig = BatcherConfig(),
    config: ServerConfig = ServerConfig(),
    *,
    service: Service | None = None,
) -> Any:
    """The Starlette application; the batcher starts with the app and drains on shutdown.

    Examples:
        >>> app = create_app(s2s_runtime.load("g2p-en"))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    service = service or Service(model, batcher_config, config)
    metrics = service.metrics

    def error_response(problem: HTTPError) -> JSONResponse:
        headers = {"connection": "close"} if problem.status in (408, 413, 431) or service.draining else None
        return JSONResponse(
            {"error": {"type": problem.kind, "message": str(problem)}}, status_code=problem.status, headers=headers
        )

    async def read_json(request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > config.max_body_bytes):
            raise HTTPError(413, "too_large", f"body of {declared} bytes exceeds the limit of {config.max_body_bytes}")
        body = bytearray()

        async def read() -> None:
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > config.max_body_bytes:
                    raise HTTPError(413, "too_large", f"body exceeds the limit of {config.max_body_bytes} bytes")

        try:
            await asyncio.wait_for(read(), config.read_timeout_s)
        except asyncio.TimeoutError:
            raise HTTPError(
                408,
                "timeout",
                f"the request body did not arrive within {config.read_timeout_s:g} s ({len(body)} bytes received)",
            ) from None
        try:
            payload = parse_json(bytes(body), ValueError, "body", max_depth=config.max_json_depth)
        except ValueError as problem:
            raise HTTPError(400, "bad_request", str(problem)) from None
        if not isinstance(payload, dict):
            raise HTTPError(400, "bad_request", "body must be a JSON object")
        unknown = sorted(set(payload) - set(FIELDS))
        if unknown:
            raise HTTPError(400, "bad_request", f"unknown field {unknown[0]!r} (fields: {', '.join(FIELDS)})")
        return payload

    def parse(payload: dict) -> tuple[list, GenerationOptions, list | None, bool]:
        inputs = payload.get("inputs")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not inputs:
            raise HTTPError(400, "bad_request", "'inputs' must be a string or a non-empty list")
        if len(inputs) > config.max_inputs:
            raise HTTPError(413, "too_large", f"{len(inputs)} inputs exceed the limit of {config.max_inputs}")
        options = payload.get("options", {})
        if not isinstance(options, dict):
            raise HTTPError(400, "bad_request", f"'options' must be an object, got {_json_type(options)}")
        if "max_batch_size" in options or "max_batch_tokens" in options:
            raise HTTPError(
                400, "bad_request", "'max_batch_size' and 'max_batch_tokens' are server settings, not request options"
            )
        try:
            parsed = GenerationOptions.from_kwargs(options)
        except (TypeError, ValueError) as problem:
            raise HTTPError(400, "bad_input", f"options: {problem}") from None
        prefixes = payload.get("target_prefix")
        if prefixes is not None and (not isinstance(prefixes, list) or len(prefixes) != len(inputs)):
            raise HTTPError(400, "bad_request", "'target_prefix' must be a list with one entry (or null) per input")
        stream = payload.get("stream", False)
        if not isinstance(stream, bool):
            raise HTTPError(400, "bad_request", f"'stream' must be true or false, got {_json_type(stream)}")
        return inputs, parsed, prefixes, stream

    async def generate(request: Request) -> Response:
        started = time.perf_counter()
        service.enter()
        outcome: str | None = "internal"
        try:
            response, outcome = await answer(request, started)
            return response
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as problem:  # HTTPError, or anything unforeseen (500, never a crash of the server)
            error = http_error(problem)
            if error.status == 500:
                log.exception("generate failed")
            outcome = error.outcome
            return error_response(error)
        finally:
            service.leave()
            if outcome is not None:  # a stream records its outcome when it ends
                metrics.request_done(outcome, time.perf_counter() - started)

    async def answer(request: Request, started: float) -> tuple[Response, str | None]:
        if service.draining or service.batcher is None:
            raise HTTPError(503, "shutting_down", "the service is shutting down", "overloaded")
        inputs, options, prefixes, stream = parse(await read_json(request))
        timeout = config.request_timeout_s - (time.perf_counter() - started)
        batcher = service.batcher
        if stream:
            if len(inputs) != 1:
                raise HTTPError(400, "bad_request", "streaming takes exactly one input")
            try:
                tokens = batcher.stream(
                    inputs[0], target_prefix=prefixes[0] if prefixes else None, options=options, timeout=timeout
                )
            except Exception as problem:  # noqa: BLE001 (every error is answered: http_error maps it)
                raise http_error(problem) from None
            return StreamingResponse(events(tokens, started), media_type="text/event-stream"), None
        try:
            futures = batcher.submit_many(inputs, target_prefixes=prefixes, options=options, timeout=timeout)
        except Exception as problem:  # noqa: BLE001 (every error is answered: http_error maps it)
            raise http_error(problem) from None
        waiting = asyncio.ensure_future(asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))
        disconnected = asyncio.ensure_future(_disconnect(request))
        try:
            done, _ = await asyncio.wait(
                {waiting, disconnected}, timeout=max(timeout, 0) + 1, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            disconnected.cancel()
        if waiting not in done:
            for future in futures:
                future.cancel()
            waiting.cancel()
            if disconnected in done:  # nobody to answer: the work is cancelled and counted
                return Response(status_code=499), "cancelled"
            raise HTTPError(504, "timeout", f"no answer within {config.request_timeout_s:g} s", "timeout")
        try:
            results = waiting.result()
        except CancelledError:
            return Response(status_code=499), "cancelled"
        except Exception as problem:  # noqa: BLE001 (every error is answered: http_error maps it)
            for future in futures:
                future.cancel()
            raise http_error(problem) from None
        log.debug("generate: %d inputs in %.1f ms", len(inputs), (time.perf_counter() - started) * 1e3)
        headers = {"connection": "close"} if service.draining else None
        return JSONResponse({"results": [r.to_dict() for r in results]}, headers=headers), "ok"

    async def events(tokens: Any, started: float):
        outcome = "internal"
        metrics.streams.inc()
        try:
            async for token in tokens:
                payload = {"token": token.token, "id": token.id, "log_prob": token.log_prob}
                yield f"event: token\ndata: {json.dumps(payload)}\n\n"
            outcome = "ok"
            yield "event: end\ndata: {}\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            outcome = "cancelled"
            raise
        except Exception as problem:  # noqa: BLE001 (every error is answered and counted)
            error = http_error(problem)
            outcome = error.outcome if not isinstance(problem, CancelledError) else "cancelled"
            body = {
                "type": error.kind if not isinstance(problem, CancelledError) else "cancelled",
                "message": str(problem),
            }
            yield f"event: error\ndata: {json.dumps(body)}\n\n"
        finally:
            tokens.close()  # a client gone mid-stream stops the decoding
            metrics.streams.dec()
            metrics.request_done(outcome, time.perf_counter() - started)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if service.draining:
            return JSONResponse({"status": "draining"}, status_code=503, headers={"connection": "close"})
        batcher = service.batcher
        if batcher is None or not service.ready():
            status = "starting" if batcher is None or not batcher.ready.is_set() else "unavailable"
            return JSONResponse({"status": status}, status_code=503)
        return JSONResponse({"status": "ready", "queue_depth": batcher.queue_depth()})

    async def prometheus(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Any):
        batcher = service.start()
        yield
        await asyncio.to_thread(batcher.close, drain=True, timeout=config.shutdown_grace_s)

    app = Starlette(
        routes=[
            Route("/v1/generate", generate, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", prometheus),
        ],
        lifespan=lifespan,
    )
    app.state.service = service
    return app


def _json_type(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


async def _disconnect(request: Any) -> None:
    """Returns when the client disconnects (the body has been read, so the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def guarded_protocol(config: ServerConfig, metrics: Metrics) -> type:
    """uvicorn's httptools protocol with the limits uvicorn does not have for it: request line and headers at most
    max_header_bytes (431, before the rest is parsed), headers within read_timeout_s of the connection or of the
    request's first byte (408; a connection that sends nothing is closed), and at most max_connections open (503)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._awaiting_headers, self._header_bytes = True, 0
            self._read_timer: asyncio.TimerHandle | None = None
            if len(self.connections) > config.max_connections:
                self._reject(503, "overloaded", f"more than {config.max_connections} connections", "connections")
                return
            self._arm()

        def _arm(self) -> None:
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(config.read_timeout_s, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timed_out(self) -> None:
            self._read_timer = None
            if self._awaiting_headers and (self.cycle is None or self.cycle.response_complete):
                self._reject(408, "timeout", f"no complete request within {config.read_timeout_s:g} s", "read_timeout")

        def _reject(self, status: int, kind: str, message: str, reason: str) -> None:
            metrics.rejected.labels(reason=reason).inc()
            body = json.dumps({"error": {"type": kind, "message": message}}).encode()
            head = (
                f"HTTP/1.1 {status} {'Request Timeout' if status == 408 else 'Error'}\r\ncontent-type: "
                f"application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
            ).encode()
            if not self.transport.is_closing():
                self.transport.write(head + body)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._awaiting_headers and self.transport is not None and not self.transport.is_closing():
                room = config.max_header_bytes - self._header_bytes
                if len(data) > room:  # feed what fits; if the headers are still not complete, refuse the rest
                    if room > 0:
                        self._header_bytes += room
                        super().data_received(data[:room])
                    if self._awaiting_headers:
                        self._reject(
                            431,
                            "too_large",
                            f"request line and headers exceed {config.max_header_bytes} bytes",
                            "headers_too_large",
                        )
                        return
                    data = data[max(room, 0) :]
                else:
                    self._header_bytes += len(data)
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._awaiting_headers, self._header_bytes = True, self._header_bytes
            self._arm()

        def on_headers_complete(self) -> None:
            self._awaiting_headers = False
            self._disarm()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            self._awaiting_headers, self._header_bytes = True, 0  # the next request's headers; idle: keep-alive
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedProtocol


def uvicorn_config(app: Any, config: ServerConfig, *, host: str, port: int, log_level: str) -> Any:
    import uvicorn

    try:
        import httptools  # noqa: F401
    except ImportError:
        raise ImportError(
            "s2s serve needs httptools (pip install 's2s-runtime[serve]', which installs uvicorn[standard])"
        ) from None
    service: Service = app.state.service
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=guarded_protocol(config, service.metrics),
        timeout_keep_alive=config.keep_alive_s,  # type: ignore[arg-type]  # typed int, used as call_later's float
        timeout_graceful_shutdown=1,
        limit_concurrency=config.max_connections + 16,
    )


class DrainingServer:
    """uvicorn.Server that drains on the first SIGTERM/SIGINT (see Service.drain) and only then stops; a second
    signal stops at once. `drain()` does the same without a signal (tests, embedding)."""

    def __init__(
        self, app: Any, config: ServerConfig, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ):
        import uvicorn

        service: Service = app.state.service
        grace = config.shutdown_grace_s

        class Server(uvicorn.Server):
            draining = False

            def handle_exit(self, sig: int, frame: Any) -> None:
                if self.draining or self.should_exit:
                    return super().handle_exit(sig, frame)
                self._captured_signals.append(sig)
                self.start_drain()

            def start_drain(self) -> None:
                if not self.draining:
                    self.draining = True
                    threading.Thread(target=self._drain, name="s2s-drain", daemon=True).start()

            def _drain(self) -> None:
                service.drain(grace)
                self.should_exit = True

        self.server = Server(uvicorn_config(app, config, host=host, port=port, log_level=log_level))
        self.host = host

    def run(self) -> None:
        self.server.run()

    def drain(self) -> None:
        self.server.start_drain()


def serve(
    model: Seq2SeqModel,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    batcher_config: BatcherConfig = BatcherConfig(),
    config: ServerConfig = ServerConfig(),
    log_level: str = "info",
) -> None:
    """Run the service with uvicorn until SIGTERM or SIGINT, then drain (loopback by default).

    Examples:
        >>> serve(s2s_runtime.load("g2p-en"), port=8000)  # doctest: +SKIP
    """
    DrainingServer(create_app(model, batcher_config, config), config, host=host, port=port, log_level=log_level).run()


class BackgroundServer:
    """The service on a background thread (an ephemeral port by default), for tests and the load test.

    Examples:
        >>> with BackgroundServer(create_app(model)) as server:  # doctest: +SKIP
        ...     httpx.get(f"{server.url}/healthz")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, config: ServerConfig | None = None):
        self.config = config or app.state.service.config
        self.draining = DrainingServer(app, self.config, host=host, port=port)
        self.server = self.draining.server
        self.thread = threading.Thread(target=self.server.run, name="s2s-server", daemon=True)
        self.host = host

    def __enter__(self) -> BackgroundServer:
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

    def drain(self) -> None:
        """Begin a graceful shutdown, as SIGTERM does; the thread ends once it is done."""
        self.draining.drain()

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
