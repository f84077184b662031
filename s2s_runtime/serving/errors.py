"""The errors a service answers with, beside the caller's own ValueError/TypeError (each names its HTTP status)."""

from __future__ import annotations


class Overloaded(RuntimeError):
    """The batcher's queue (or its stream slots) is full; retry later (HTTP 503)."""


class RequestTimeout(TimeoutError):
    """The request's deadline passed before it was answered (HTTP 504)."""


class BatcherClosed(RuntimeError):
    """The batcher is shut down (or shutting down) and takes no more requests, or stopped this one (HTTP 503)."""


class InternalError(RuntimeError):
    """Decoding failed for a reason that is not the request's fault; the message names the original error, which
    is also its __cause__ (HTTP 500)."""


def as_request_error(error: Exception) -> Exception:
    """What a caller gets for an exception from decoding: its own ValueError/TypeError as is, anything else as an
    InternalError naming the cause."""
    if isinstance(error, (ValueError, TypeError)):
        return error
    wrapped = InternalError(f"decoding failed: {type(error).__name__}: {error}")
    wrapped.__cause__ = error
    return wrapped
