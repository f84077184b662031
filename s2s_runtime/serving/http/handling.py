"""What every decoding route shares, whatever its protocol (/v1, Open Inference Protocol v2, Triton's generate):
counting each request once under its outcome, refusing while draining, reading the body within its limits, the
deadline, the answer's size bound, and decoding through the one batcher with cancellation when the client goes.
A route supplies only how it reads its request and how it writes answers and errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import CancelledError
from typing import Any

from ...config import GenerationOptions
from ...results import Result
from .errors import HTTPError, http_error
from .observability import request_id
from .requests import read_body
from .responses import answer_bound
from .state import AppState

log = logging.getLogger("s2s_runtime.server")

Handle = Callable[[AppState, float], Awaitable[tuple[Any, "str | None"]]]  # → (response, outcome or None: later)
RenderError = Callable[[AppState, HTTPError], Any]
GONE = 499  # the client went away: nobody reads the answer (nginx's convention)


def state_of(request: Any) -> AppState:
    return request.app.state.s2s


async def counted(request: Any, handle: Handle, render_error: RenderError) -> Any:
    """Run a decoding route's `handle`, counting the request once under its outcome (a stream counts itself when
    it ends) and answering every failure through `render_error` (an unforeseen one as 500, logged)."""
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response

    state = state_of(request)
    started = time.perf_counter()
    state.enter()
    outcome: str | None = "internal"
    try:
        response, outcome = await handle(state, started)
        return response
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    except ClientDisconnect:  # gone while sending its body: nobody to answer
        outcome = "cancelled"
        return Response(status_code=GONE)
    except Exception as problem:  # HTTPError, or anything unforeseen (500, never a crash of the server)
        error = http_error(problem)
        if error.status == 500:
            log.exception("%s failed (request %s)", request.url.path, request_id())
        outcome = error.outcome
        return render_error(state, error)
    finally:
        state.leave()
        if outcome is not None:
            state.metrics.request_done(outcome, time.perf_counter() - started)


def admit(state: AppState) -> None:
    if state.draining or state.batcher is None:
        raise HTTPError(503, "shutting_down", "the service is shutting down", "overloaded")


async def body_of(state: AppState, request: Any) -> bytes:
    """The request body within max_body_bytes and read_timeout_s (a reader the drain does not wait for)."""
    state.reading(+1)
    try:
        return await read_body(request, state.config)
    finally:
        state.reading(-1)


def time_left(state: AppState, started: float) -> float:
    """The request's remaining deadline; 504 if it passed while the body was still arriving."""
    timeout = state.config.request_timeout_s - (time.perf_counter() - started)
    if timeout <= 0:
        raise HTTPError(504, "timeout", f"no answer within {state.config.request_timeout_s:g} s", "timeout")
    return timeout


def bounded_answer(state: AppState, inputs: list, options: GenerationOptions) -> int:
    """The answer's size bound (s2s_runtime.serving.http.responses); 413 past max_response_bytes."""
    bound = answer_bound(state.model, inputs, options)
    if bound > state.config.max_response_bytes:
        raise HTTPError(
            413,
            "too_large",
            f"the answer could reach {bound} bytes, more than max_response_bytes {state.config.max_response_bytes} "
            "(fewer inputs, hypotheses or output tokens, or no return_attention)",
        )
    return bound


async def decode(
    state: AppState,
    request: Any,
    inputs: list,
    options: GenerationOptions,
    prefixes: Sequence[Any] | None,
    timeout: float,
) -> list[Result] | None:
    """The results of the inputs through the batcher, or None when the client went away (the work is cancelled)."""
    assert state.batcher is not None  # admitted
    try:
        futures = state.batcher.submit_many(inputs, target_prefixes=prefixes, options=options, timeout=timeout)
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
            return None
        raise HTTPError(504, "timeout", f"no answer within {state.config.request_timeout_s:g} s", "timeout")
    try:
        return waiting.result()
    except CancelledError:
        return None
    except Exception as problem:  # noqa: BLE001 (every error is answered: http_error maps it)
        for future in futures:
            future.cancel()
        raise http_error(problem) from None


def open_stream(state: AppState, source: Any, prefix: Any, options: GenerationOptions, timeout: float) -> Any:
    """A TokenStream of one input through the batcher (errors mapped like any request's)."""
    assert state.batcher is not None  # admitted
    try:
        return state.batcher.stream(source, target_prefix=prefix, options=options, timeout=timeout)
    except Exception as problem:  # noqa: BLE001 (every error is answered: http_error maps it)
        raise http_error(problem) from None


async def stream_events(
    state: AppState,
    tokens: Any,
    started: float,
    event: Callable[[Any], str],
    end: str,
    error: Callable[[str, str], str],
) -> Any:
    """Server-sent events of a stream — `event(token)` each, then `end`, or `error(type, message)` — counted once
    when the stream ends; a client gone mid-stream stops the decoding."""
    outcome = "internal"
    state.metrics.streams.inc()
    try:
        async for token in tokens:
            yield event(token)
        outcome = "ok"
        yield end
    except (asyncio.CancelledError, GeneratorExit):
        outcome = "cancelled"
        raise
    except Exception as problem:  # noqa: BLE001 (every error is answered and counted)
        mapped = http_error(problem)
        cancelled = isinstance(problem, CancelledError)
        outcome = "cancelled" if cancelled else mapped.outcome
        yield error("cancelled" if cancelled else mapped.kind, str(problem))
    finally:
        tokens.close()
        state.metrics.streams.dec()
        state.metrics.request_done(outcome, time.perf_counter() - started)


async def _disconnect(request: Any) -> None:
    """Returns when the client disconnects (the body has been read, so the next ASGI message is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
