"""`s2s serve`'s HTTP application (Starlette): the routes, each a handler at module level over the AppState.

POST /v1/generate   {"inputs": "text" | ["text", ...], "options": {...}, "target_prefix": [...], "stream": false}
                    → {"results": [{"text", "tokens", "ids", "score", "finished", "hypotheses": [...]}]}
                    With "stream": true and one input: server-sent events, one `token` event per token, then `end`
                    (or a final `error` event with the error's type and message).
GET  /healthz       the process is up
GET  /readyz        the model is warmed up, every batcher worker alive, and the service not draining (503 otherwise)
GET  /metrics       Prometheus: requests and latency by outcome, batch size, queue depth, open streams, tokens

Bad input → 400/413 with {"error": {"type", "message"}}; overload or shutting down → 503; deadline → 504; a
failure that is not the request's fault → 500. Every request's work is checked against the model's RequestLimits
before it is queued, deadlines hold during decoding, and a client that disconnects cancels its work.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ...model import Seq2SeqModel
from ..config import BatcherConfig
from . import openapi, v2
from .config import ServerConfig
from .errors import HTTPError, closing_headers
from .handling import (
    GONE,
    admit,
    body_of,
    bounded_answer,
    counted,
    decode,
    open_stream,
    state_of,
    stream_events,
    time_left,
)
from .observability import RequestContext, request_id
from .requests import parse_generate
from .responses import render
from .state import AppState


def create_app(
    model: Seq2SeqModel,
    batcher_config: BatcherConfig = BatcherConfig(),
    config: ServerConfig = ServerConfig(),
    *,
    state: AppState | None = None,
    access_log_json: bool = False,
) -> Any:
    """The Starlette application; the batcher starts with the app and drains on shutdown.

    Examples:
        >>> app = create_app(s2s_runtime.load("g2p-en"))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    state = state or AppState(model, batcher_config, config)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        batcher = state.start()
        yield
        await asyncio.to_thread(batcher.close, drain=True, timeout=config.shutdown_grace_s)

    app = Starlette(
        routes=[
            Route("/v1/generate", generate, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", prometheus),
            Route("/openapi.json", openapi_document),
            Route("/docs", openapi_ui),
            *v2.routes(),
        ],
        lifespan=lifespan,
        exception_handlers={404: _routing_error, 405: _routing_error},
        middleware=[Middleware(RequestContext, access_log_json=access_log_json)],
    )
    app.state.s2s = state
    return app


def error_response(state: AppState, problem: HTTPError) -> Any:
    """{"error": {"type", "message"}} with the problem's status (the connection closes after 408/413/431, and while
    draining)."""
    from starlette.responses import JSONResponse

    headers = closing_headers(problem, state.draining)
    body = {"error": {"type": problem.kind, "message": str(problem), "request_id": request_id()}}
    return JSONResponse(body, status_code=problem.status, headers=headers)


async def generate(request: Any) -> Any:
    """POST /v1/generate."""
    return await counted(request, lambda state, started: _generate(state, request, started), error_response)


async def _generate(state: AppState, request: Any, started: float) -> tuple[Any, str | None]:
    from starlette.responses import Response, StreamingResponse

    admit(state)
    asked = parse_generate(await body_of(state, request), state.config)
    timeout = time_left(state, started)
    bound = bounded_answer(state, asked.inputs, asked.options)
    if asked.stream:
        tokens = open_stream(state, asked.inputs[0], asked.prefix(0), asked.options, timeout)
        events = stream_events(state, tokens, started, _token_event, "event: end\ndata: {}\n\n", _error_event)
        return StreamingResponse(events, media_type="text/event-stream"), None
    results = await decode(state, request, asked.inputs, asked.options, asked.prefixes, timeout)
    if results is None:
        return Response(status_code=GONE), "cancelled"
    headers = {"connection": "close"} if state.draining else None
    return Response(await render(results, bound), media_type="application/json", headers=headers), "ok"


async def openapi_document(request: Any) -> Any:
    """GET /openapi.json: the API of this app (made once, on first ask)."""
    from starlette.responses import JSONResponse

    app = request.app
    if not hasattr(app.state, "openapi"):
        app.state.openapi = openapi.document(app.routes)
    return JSONResponse(app.state.openapi)


async def openapi_ui(request: Any) -> Any:
    from starlette.responses import HTMLResponse

    return HTMLResponse(openapi.SWAGGER_UI)


async def _routing_error(request: Any, problem: Any) -> Any:
    """404 and 405 in the JSON shape of the route family asked for (no plain-text answer from the server)."""
    kind = "not_found" if problem.status_code == 404 else "method_not_allowed"
    message = f"{request.method} {request.url.path}: {problem.detail}"
    headers = getattr(problem, "headers", None)
    error = HTTPError(problem.status_code, kind, message)
    state = state_of(request)
    response = v2.error_response(state, error) if request.url.path.startswith("/v2") else error_response(state, error)
    if headers:
        response.headers.update(headers)
    return response


def _token_event(token: Any) -> str:
    payload = {"token": token.token, "id": token.id, "log_prob": token.log_prob}
    return f"event: token\ndata: {json.dumps(payload)}\n\n"


def _error_event(kind: str, message: str) -> str:
    payload = {"type": kind, "message": message, "request_id": request_id()}
    return f"event: error\ndata: {json.dumps(payload)}\n\n"


async def healthz(request: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"status": "ok"})


async def readyz(request: Any) -> Any:
    from starlette.responses import JSONResponse

    state = state_of(request)
    if state.draining:
        return JSONResponse({"status": "draining"}, status_code=503, headers={"connection": "close"})
    batcher = state.batcher
    if batcher is None or not state.ready():
        status = "starting" if batcher is None or not batcher.ready.is_set() else "unavailable"
        return JSONResponse({"status": status}, status_code=503)
    return JSONResponse({"status": "ready", "queue_depth": batcher.queue_depth()})


async def prometheus(request: Any) -> Any:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.responses import Response

    return Response(generate_latest(state_of(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)
