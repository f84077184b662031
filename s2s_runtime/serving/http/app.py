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
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import CancelledError
from contextlib import asynccontextmanager
from typing import Any

from ...model import Seq2SeqModel
from ..config import BatcherConfig
from .config import ServerConfig
from .errors import HTTPError, http_error
from .requests import GenerateRequest, parse_generate, read_json
from .responses import answer_bound, render
from .state import AppState

log = logging.getLogger("s2s_runtime.server")


def create_app(
    model: Seq2SeqModel,
    batcher_config: BatcherConfig = BatcherConfig(),
    config: ServerConfig = ServerConfig(),
    *,
    state: AppState | None = None,
) -> Any:
    """The Starlette application; the batcher starts with the app and drains on shutdown.

    Examples:
        >>> app = create_app(s2s_runtime.load("g2p-en"))  # doctest: +SKIP
        >>> uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP
    """
    from starlette.applications import Starlette
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
        ],
        lifespan=lifespan,
    )
    app.state.s2s = state
    return app


def _state(request: Any) -> AppState:
    return request.app.state.s2s


def error_response(state: AppState, problem: HTTPError) -> Any:
    from starlette.responses import JSONResponse

    headers = {"connection": "close"} if problem.status in (408, 413, 431) or state.draining else None
    return JSONResponse(
        {"error": {"type": problem.kind, "message": str(problem)}}, status_code=problem.status, headers=headers
    )


async def generate(request: Any) -> Any:
    """POST /v1/generate: every request counted once under its outcome (a stream when it ends)."""
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response

    state = _state(request)
    started = time.perf_counter()
    state.enter()
    outcome: str | None = "internal"
    try:
        response, outcome = await _answer(state, request, started)
        return response
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    except ClientDisconnect:  # gone while sending its body: nobody to answer
        outcome = "cancelled"
        return Response(status_code=499)
    except Exception as problem:  # HTTPError, or anything unforeseen (500, never a crash of the server)
        error = http_error(problem)
        if error.status == 500:
            log.exception("generate failed")
        outcome = error.outcome
        return error_response(state, error)
    finally:
        state.leave()
        if outcome is not None:  # a stream records its outcome when it ends
            state.metrics.request_done(outcome, time.perf_counter() - started)


async def _answer(state: AppState, request: Any, started: float) -> tuple[Any, str | None]:
    from starlette.responses import StreamingResponse

    if state.draining or state.batcher is None:
        raise HTTPError(503, "shutting_down", "the service is shutting down", "overloaded")
    config = state.config
    state.reading(+1)
    try:
        body = await read_json(request, config)
    finally:
        state.reading(-1)
    asked = parse_generate(body, config)
    timeout = config.request_timeout_s - (time.perf_counter() - started)
    if timeout <= 0:  # the deadline passed while the body was still arriving
        raise HTTPError(504, "timeout", f"no answer within {config.request_timeout_s:g} s", "timeout")
    bound = answer_bound(state.model, asked.inputs, asked.options)
    if bound > config.max_response_bytes:
        raise HTTPError(
            413,
            "too_large",
            f"the answer could reach {bound} bytes, more than max_response_bytes {config.max_response_bytes} "
            "(fewer inputs, hypotheses or output tokens, or no return_attention)",
        )
    if asked.stream:
        try:
            tokens = state.batcher.stream(
                asked.inputs[0], target_prefix=asked.prefix(0), options=asked.options, timeout=timeout
            )
        except Exception as problem:  # noqa: BLE001 (every error is answered: http_error maps it)
            raise http_error(problem) from None
        return StreamingResponse(_events(state, tokens, started), media_type="text/event-stream"), None
    return await _decode(state, request, asked, timeout, bound)


async def _decode(state: AppState, request: Any, asked: GenerateRequest, timeout: float, bound: int) -> tuple[Any, str]:
    from starlette.responses import Response

    assert state.batcher is not None  # checked by _answer
    try:
        futures = state.batcher.submit_many(
            asked.inputs, target_prefixes=asked.prefixes, options=asked.options, timeout=timeout
        )
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
        raise HTTPError(504, "timeout", f"no answer within {state.config.request_timeout_s:g} s", "timeout")
    try:
        results = waiting.result()
    except CancelledError:
        return Response(status_code=499), "cancelled"
    except Exception as problem:  # noqa: BLE001 (every error is answered: http_error maps it)
        for future in futures:
            future.cancel()
        raise http_error(problem) from None
    headers = {"connection": "close"} if state.draining else None
    body = await render(results, bound)
    return Response(body, media_type="application/json", headers=headers), "ok"


async def _events(state: AppState, tokens: Any, started: float) -> AsyncIterator[str]:
    """The server-sent events of a stream; its outcome is counted when it ends."""
    outcome = "internal"
    state.metrics.streams.inc()
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
        cancelled = isinstance(problem, CancelledError)
        outcome = "cancelled" if cancelled else error.outcome
        body = {"type": "cancelled" if cancelled else error.kind, "message": str(problem)}
        yield f"event: error\ndata: {json.dumps(body)}\n\n"
    finally:
        tokens.close()  # a client gone mid-stream stops the decoding
        state.metrics.streams.dec()
        state.metrics.request_done(outcome, time.perf_counter() - started)


async def healthz(request: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"status": "ok"})


async def readyz(request: Any) -> Any:
    from starlette.responses import JSONResponse

    state = _state(request)
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

    return Response(generate_latest(_state(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _disconnect(request: Any) -> None:
    """Returns when the client disconnects (the body has been read, so the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
