"""ServerConfig: the limits of the HTTP layer, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from ...numbers import is_finite_number


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
        write_timeout_s: a client that reads none of its answer for this long is disconnected (its buffered answer
            dropped).
        max_response_bytes: a request whose answer could pass this size (bounded from its inputs and options before
            decoding) gets 413.
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
    write_timeout_s: float = 30.0
    max_response_bytes: int = 16 << 20
    max_connections: int = 512
    max_json_depth: int = 32
    shutdown_grace_s: float = 10.0

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_inputs",
            "max_header_bytes",
            "max_connections",
            "max_json_depth",
            "max_response_bytes",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: must be an int ≥ 1, got {value!r}")
        for name in ("request_timeout_s", "read_timeout_s", "keep_alive_s", "write_timeout_s", "shutdown_grace_s"):
            value = getattr(self, name)
            if not is_finite_number(value) or value <= 0:
                raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
