"""Request ids and access logs: every request carries an id — the client's `X-Request-ID` (printable ASCII, at most
128 characters) or a new one — returned in the `X-Request-ID` response header, in every error body and in every log
line written while the request is handled; with `s2s serve --log-format json` one JSON access-log line per request
(time, id, method, path, status, milliseconds, client) on the `s2s_runtime.access` logger."""

from __future__ import annotations

import contextvars
import json
import logging
import time
import uuid
from typing import Any

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("s2s_request_id", default="-")
HEADER = b"x-request-id"
MAX_ID_LENGTH = 128
access_log = logging.getLogger("s2s_runtime.access")


def request_id() -> str:
    """The id of the request being handled ("-" outside one)."""
    return REQUEST_ID.get()


def _given_id(scope: dict) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == HEADER:
            text = value.decode("latin-1")
            if 0 < len(text) <= MAX_ID_LENGTH and text.isprintable() and text.isascii():
                return text
    return None


class RequestContext:
    """ASGI middleware: the request id (see the module docstring) and, if asked, the JSON access-log line."""

    def __init__(self, app: Any, *, access_log_json: bool = False):
        self.app, self.access_log_json = app, access_log_json

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _given_id(scope) or uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        started, status = time.perf_counter(), 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (HEADER, rid.encode("latin-1"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log_json:
                access_log.info(
                    json.dumps(
                        {
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "request_id": rid,
                            "method": scope.get("method"),
                            "path": scope.get("path"),
                            "status": status,
                            "ms": round((time.perf_counter() - started) * 1e3, 3),
                            "client": (scope.get("client") or ["-"])[0],
                        }
                    )
                )
            REQUEST_ID.reset(token)
