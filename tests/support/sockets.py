"""Raw sockets against a test server."""

from __future__ import annotations

import socket


def read_reply(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it, or the timeout passes)."""
    reply = b""
    try:
        while chunk := connection.recv(65536):
            reply += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return reply
