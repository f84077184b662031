"""The Open Inference Protocol v2 (KServe v2, REST) and Triton's generate extension, beside /v1, so the clients
teams already use — tritonclient, perf_analyzer, KServe's probes — work unchanged. The same batcher, admission,
limits, deadlines and metrics answer them (s2s_runtime.serving.http.handling); only the request and answer shapes
differ.

    GET  /v2/health/live, /v2/health/ready            200, or 503 while starting, unready or draining
    GET  /v2                                          server metadata (name, version, extensions)
    GET  /v2/models/{model}[/versions/1]              model metadata: its input and output tensors
    GET  /v2/models/{model}[/versions/1]/ready        200 when the model answers
    POST /v2/models/{model}[/versions/1]/infer        input `text_input` (BYTES [n]), JSON or with the binary tensor
                                                      extension; decoding options as request `parameters`; outputs
                                                      `text_output`, `tokens` (a JSON list per input), `score`,
                                                      `finished`, `unknown_source_tokens`
    POST /v2/models/{model}/generate                  {"text_input": "...", "parameters": {...}} → {"text_output"}
    POST /v2/models/{model}/generate_stream           the same, as server-sent events, one per output token

Errors are {"error": "message"} with the status /v1 would give (400, 404, 413, 503, 504, ...).
"""

from __future__ import annotations

import json
import struct
from typing import Any

from ... import __version__
from ...results import Result
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
from .observability import request_id
from .requests import check_input_count, generation_options, json_object
from .state import AppState

VERSION = "1"  # a bundle is one model version
INPUT = "text_input"
OUTPUTS = {  # name → (datatype, the value of one result)
    "text_output": ("BYTES", lambda r: r.text),
    "tokens": ("BYTES", lambda r: json.dumps(r.tokens, ensure_ascii=False)),
    "score": ("FP32", lambda r: r.score),
    "finished": ("BOOL", lambda r: r.finished),
    "unknown_source_tokens": ("INT64", lambda r: r.unknown_source_tokens),
}
# Parameters the protocol reserves for itself (Triton's timeout, priority, sequences, binary output): ignored, never
# taken for decoding options (the deadline is the server's --request-timeout-s).
RESERVED = {"binary_data_output", "timeout", "priority", "sequence_id", "sequence_start", "sequence_end"}
HEADER_LENGTH = "inference-header-content-length"


def routes() -> list:
    from starlette.routing import Route

    model, versioned = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
    return [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        *[Route(path, model_metadata) for path in (model, versioned)],
        *[Route(path + "/ready", model_ready) for path in (model, versioned)],
        *[Route(path + "/infer", infer, methods=["POST"]) for path in (model, versioned)],
        Route(model + "/generate", generate, methods=["POST"]),
        Route(model + "/generate_stream", generate_stream, methods=["POST"]),
    ]


def error_response(state: AppState, problem: HTTPError) -> Any:
    from starlette.responses import JSONResponse

    headers = closing_headers(problem, state.draining)
    body = {"error": str(problem), "request_id": request_id()}
    return JSONResponse(body, status_code=problem.status, headers=headers)


def model_name(state: AppState) -> str:
    return state.model.bundle.root.name


def _model(request: Any) -> AppState:
    """The state, once the path names this server's model (and version); 404 otherwise."""
    state = state_of(request)
    name, version = request.path_params["model"], request.path_params.get("version", VERSION)
    if name != model_name(state) or version not in ("", VERSION):
        raise HTTPError(404, "not_found", f"unknown model {name!r} version {version!r} (serving {model_name(state)!r})")
    return state


async def _plain(request: Any, answer: Any) -> Any:
    """A GET route: its answer, or its error as {"error"}."""
    try:
        return answer()
    except HTTPError as problem:
        return error_response(state_of(request), problem)


async def live(request: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"live": True})


async def ready(request: Any) -> Any:
    from starlette.responses import JSONResponse

    state = state_of(request)
    return JSONResponse({"ready": state.ready()}, status_code=200 if state.ready() else 503)


async def server_metadata(request: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"name": "s2s-runtime", "version": __version__, "extensions": ["generate"]})


async def model_metadata(request: Any) -> Any:
    from starlette.responses import JSONResponse

    def answer() -> Any:
        state = _model(request)
        return JSONResponse(
            {
                "name": model_name(state),
                "versions": [VERSION],
                "platform": "s2s-runtime",
                "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
                "outputs": [{"name": name, "datatype": kind, "shape": [-1]} for name, (kind, _) in OUTPUTS.items()],
            }
        )

    return await _plain(request, answer)


async def model_ready(request: Any) -> Any:
    from starlette.responses import JSONResponse

    def answer() -> Any:
        state = _model(request)
        return JSONResponse(
            {"name": model_name(state), "ready": state.ready()}, status_code=200 if state.ready() else 503
        )

    return await _plain(request, answer)


async def infer(request: Any) -> Any:
    return await counted(request, lambda state, started: _infer(request, started), error_response)


async def _infer(request: Any, started: float) -> tuple[Any, str]:
    from starlette.responses import JSONResponse, Response

    state = _model(request)
    admit(state)
    body = await body_of(state, request)
    header, binary = _split(body, request.headers.get(HEADER_LENGTH))
    payload = json_object(header, state.config, ("id", "parameters", "inputs", "outputs"))
    texts = _texts(payload.get("inputs"), binary)
    check_input_count(len(texts), state.config)
    options = _options(payload.get("parameters", {}))
    wanted = _wanted(payload.get("outputs"))
    timeout = time_left(state, started)
    bounded_answer(state, texts, options)
    results = await decode(state, request, texts, options, None, timeout)
    if results is None:
        return Response(status_code=GONE), "cancelled"
    answer = {"model_name": model_name(state), "model_version": VERSION, "outputs": _tensors(results, wanted)}
    if "id" in payload:
        answer["id"] = payload["id"]
    return JSONResponse(answer), "ok"


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary tensor data of a request that uses the binary tensor extension."""
    if header_length is None:
        return body, b""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise HTTPError(400, "bad_request", f"Inference-Header-Content-Length {header_length!r} is not within the body")
    return body[: int(header_length)], body[int(header_length) :]


def _texts(inputs: object, binary: bytes) -> list[str]:
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise HTTPError(400, "bad_request", f"'inputs' must hold one tensor, {INPUT!r} (BYTES, shape [n])")
    tensor = inputs[0]
    if tensor.get("name") != INPUT or tensor.get("datatype") != "BYTES":
        raise HTTPError(400, "bad_request", f"the input must be {INPUT!r} of datatype BYTES")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not 1 <= len(shape) <= 2 or not all(isinstance(d, int) for d in shape):
        raise HTTPError(400, "bad_request", f"{INPUT}: shape must be [n] or [n, 1], got {shape!r}")
    count = shape[0] * (shape[1] if len(shape) == 2 else 1)
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    values = _bytes_tensor(binary[:size]) if isinstance(size, int) else _flat(tensor.get("data"))
    if len(values) != count or (len(shape) == 2 and shape[1] != 1):
        raise HTTPError(400, "bad_request", f"{INPUT}: shape {shape} does not hold its {len(values)} values")
    return values


def _bytes_tensor(data: bytes) -> list[str]:
    """A BYTES tensor in the binary extension's layout: each element a 4-byte little-endian length, then its bytes."""
    values, offset = [], 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise HTTPError(400, "bad_request", f"{INPUT}: binary data ends inside an element's length")
        (length,) = struct.unpack_from("<I", data, offset)
        element = data[offset + 4 : offset + 4 + length]
        if len(element) != length:
            raise HTTPError(400, "bad_request", f"{INPUT}: binary data ends inside an element")
        try:
            values.append(element.decode("utf-8"))
        except UnicodeDecodeError:
            raise HTTPError(400, "bad_request", f"{INPUT}: element {len(values)} is not UTF-8") from None
        offset += 4 + length
    return values


def _flat(data: object) -> list[str]:
    values = [v for row in data for v in (row if isinstance(row, list) else [row])] if isinstance(data, list) else None
    if values is None or not all(isinstance(v, str) for v in values):
        raise HTTPError(400, "bad_request", f"{INPUT}: 'data' must be a list of strings")
    return values


def _options(parameters: object) -> Any:
    if not isinstance(parameters, dict):
        raise HTTPError(400, "bad_request", "'parameters' must be an object")
    return generation_options({k: v for k, v in parameters.items() if k not in RESERVED}, "parameters")


def _wanted(outputs: object) -> list[str]:
    if outputs is None:
        return list(OUTPUTS)
    names = (
        [o.get("name") for o in outputs]
        if isinstance(outputs, list) and all(isinstance(o, dict) for o in outputs)
        else None
    )
    if names is None or any(name not in OUTPUTS for name in names):
        raise HTTPError(400, "bad_request", f"'outputs' may ask for {', '.join(OUTPUTS)}, got {outputs!r:.100}")
    return names


def _tensors(results: list[Result], names: list[str]) -> list[dict]:
    return [
        {
            "name": name,
            "datatype": OUTPUTS[name][0],
            "shape": [len(results)],
            "data": [OUTPUTS[name][1](r) for r in results],
        }
        for name in names
    ]


async def generate(request: Any) -> Any:
    return await counted(request, lambda state, started: _generate(request, started, stream=False), error_response)


async def generate_stream(request: Any) -> Any:
    return await counted(request, lambda state, started: _generate(request, started, stream=True), error_response)


async def _generate(request: Any, started: float, *, stream: bool) -> tuple[Any, str | None]:
    from starlette.responses import JSONResponse, Response, StreamingResponse

    state = _model(request)
    admit(state)
    payload = json_object(await body_of(state, request), state.config, ("id", INPUT, "parameters"))
    text = payload.get(INPUT)
    if not isinstance(text, str):
        raise HTTPError(400, "bad_request", f"{INPUT!r} must be a string")
    options = _options(payload.get("parameters", {}))
    timeout = time_left(state, started)
    bounded_answer(state, [text], options)
    head = {"model_name": model_name(state), "model_version": VERSION}
    if stream:
        tokens = open_stream(state, text, None, options, timeout)

        def event(token: Any) -> str:
            data = {**head, "text_output": token.token, "token_id": token.id, "log_prob": token.log_prob}
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        events = stream_events(state, tokens, started, event, "", lambda kind, message: _error_data(message))
        return StreamingResponse(events, media_type="text/event-stream"), None
    results = await decode(state, request, [text], options, None, timeout)
    if results is None:
        return Response(status_code=GONE), "cancelled"
    return JSONResponse({**head, "text_output": results[0].text}), "ok"


def _error_data(message: str) -> str:
    return f"data: {json.dumps({'error': message, 'request_id': request_id()}, ensure_ascii=False)}\n\n"
