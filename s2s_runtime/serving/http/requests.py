"""Reading and checking a /v1/generate request body: bounded in size, time and depth, with only known fields."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from ...config import GenerationOptions
from ...files import parse_json
from .config import ServerConfig
from .errors import HTTPError

FIELDS = ("inputs", "options", "target_prefix", "stream")


@dataclass(frozen=True)
class GenerateRequest:
    """A checked /v1/generate body."""

    inputs: list
    options: GenerationOptions
    prefixes: list | None
    stream: bool

    def prefix(self, index: int) -> Any:
        return self.prefixes[index] if self.prefixes else None


async def read_body(request: Any, config: ServerConfig) -> bytes:
    """The body's bytes: at most max_body_bytes (413), arriving within read_timeout_s (408)."""
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
    return bytes(body)


def json_object(body: bytes, config: ServerConfig, fields: tuple[str, ...]) -> dict:
    """The body as a JSON object nested at most max_json_depth, with no field outside `fields` (HTTPError)."""
    try:
        payload = parse_json(body, ValueError, "body", max_depth=config.max_json_depth)
    except ValueError as problem:
        raise HTTPError(400, "bad_request", str(problem)) from None
    if not isinstance(payload, dict):
        raise HTTPError(400, "bad_request", "body must be a JSON object")
    unknown = sorted(set(payload) - set(fields))
    if unknown:
        raise HTTPError(400, "bad_request", f"unknown field {unknown[0]!r} (fields: {', '.join(fields)})")
    return payload


def parse_generate(body: bytes, config: ServerConfig) -> GenerateRequest:
    """A /v1/generate body, checked (HTTPError naming the field at fault)."""
    payload = json_object(body, config, FIELDS)
    inputs = payload.get("inputs")
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not inputs:
        raise HTTPError(400, "bad_request", "'inputs' must be a string or a non-empty list")
    check_input_count(len(inputs), config)
    parsed = generation_options(payload.get("options", {}), "options")
    prefixes = payload.get("target_prefix")
    if prefixes is not None and (not isinstance(prefixes, list) or len(prefixes) != len(inputs)):
        raise HTTPError(400, "bad_request", "'target_prefix' must be a list with one entry (or null) per input")
    stream = payload.get("stream", False)
    if not isinstance(stream, bool):
        raise HTTPError(400, "bad_request", f"'stream' must be true or false, got {json_type(stream)}")
    if stream and len(inputs) != 1:
        raise HTTPError(400, "bad_request", "streaming takes exactly one input")
    return GenerateRequest(inputs, parsed, prefixes, stream)


def check_input_count(count: int, config: ServerConfig) -> None:
    if count > config.max_inputs:
        raise HTTPError(413, "too_large", f"{count} inputs exceed the limit of {config.max_inputs}")


def generation_options(options: object, where: str) -> GenerationOptions:
    """Decoding options from a request's object of them (`where` names it in errors)."""
    if not isinstance(options, dict):
        raise HTTPError(400, "bad_request", f"'{where}' must be an object, got {json_type(options)}")
    if "max_batch_size" in options or "max_batch_tokens" in options:
        raise HTTPError(
            400, "bad_request", "'max_batch_size' and 'max_batch_tokens' are server settings, not request options"
        )
    try:
        return GenerationOptions.from_kwargs(options)
    except (TypeError, ValueError) as problem:
        raise HTTPError(400, "bad_input", f"{where}: {problem}") from None


def json_type(value: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
