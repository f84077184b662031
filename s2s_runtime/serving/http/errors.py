"""Errors as HTTP answers: the one mapping from the model's and the batcher's exceptions to a status, the JSON
error type and the metrics outcome."""

from __future__ import annotations

from ..errors import BatcherClosed, InternalError, Overloaded, RequestTimeout


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


def closing_headers(problem: HTTPError, draining: bool) -> dict[str, str] | None:
    """An error answer closes its connection after 408, 413 and 431 (the rest of the request may still be on its
    way) and while the service drains."""
    return {"connection": "close"} if problem.status in (408, 413, 431) or draining else None


def http_error(error: BaseException) -> HTTPError:
    if isinstance(error, HTTPError):
        return error
    for kind, status, name, outcome in ERRORS:
        if isinstance(error, kind):
            return HTTPError(status, name, str(error), outcome)
    return HTTPError(500, "internal", f"{type(error).__name__}: {error}", "internal")
