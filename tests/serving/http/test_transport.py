"""The transport guard and the answer's bounds against a real server on 127.0.0.1: transfer codings, half-closing
clients, clients that never read, connections past the cap, deadlines that pass while a body arrives, answers too
large to render."""

import json
import socket
import time

import httpx
import pytest

import s2s_runtime
from s2s_runtime.serving import BatcherConfig
from s2s_runtime.serving.http import ServerConfig, create_app
from tests.conftest import wait_until
from tests.support.background_server import BackgroundServer
from tests.support.sockets import read_reply


@pytest.fixture(scope="module")
def model(small_bundle):
    return s2s_runtime.load(small_bundle, device="cpu")


def serving(model, **config):
    settings = dict(
        max_inputs=256, read_timeout_s=5.0, write_timeout_s=0.5, max_connections=4, max_response_bytes=1 << 26
    )
    return BackgroundServer(create_app(model, BatcherConfig(warmup=False), ServerConfig(**{**settings, **config})))


@pytest.fixture(scope="module")
def server(model):
    with serving(model) as running:
        yield running


def connect(server, receive_buffer=None):
    host, port = server.url.removeprefix("http://").split(":")
    connection = socket.socket()
    if receive_buffer is not None:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    connection.settimeout(10)
    connection.connect((host, int(port)))
    return connection


def post(body, extra=b""):
    return (
        b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + extra
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def metric(server, name):
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_transfer_coding_other_than_chunked_is_not_implemented(server):
    """gzip, chunked used to be accepted and the gzip ignored (the body misread)."""
    with connect(server) as connection:
        connection.sendall(
            b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        reply = read_reply(connection)
    assert reply.startswith(b"HTTP/1.1 501")
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "not_implemented"


def test_a_client_that_half_closes_after_its_request_gets_its_answer(server):
    with connect(server) as connection:
        connection.sendall(post(b'{"inputs": "abc"}', b"Connection: close\r\n"))
        connection.shutdown(socket.SHUT_WR)  # nothing more to send; still reading
        reply = read_reply(connection)
    assert reply.startswith(b"HTTP/1.1 200") and b'"results"' in reply


def test_a_client_that_never_reads_its_answer_is_cut_off(server):
    """An answer of some 10 MB to a client with a tiny receive buffer that reads nothing: the connection (and the
    answer buffered for it) is dropped after write_timeout_s instead of being kept for good."""
    before = metric(server, 's2s_connections_rejected_total{reason="write_timeout"}')
    body = json.dumps(
        {
            "inputs": ["abcdefghij"] * 256,
            "options": {
                "strategy": "beam",
                "beam_size": 8,
                "num_hypotheses": 8,
                "return_attention": True,
                "min_length": 40,
                "max_length": 40,
            },
        }
    ).encode()
    connection = connect(server, receive_buffer=4096)
    try:
        connection.sendall(post(body))
        wait_until(
            lambda: metric(server, 's2s_connections_rejected_total{reason="write_timeout"}') == before + 1, timeout=60
        )
    finally:
        connection.close()


def test_connections_past_the_cap_are_answered_and_counted_as_overloaded(model):
    with serving(model, max_connections=2) as server:
        held = [connect(server) for _ in range(2)]
        try:
            with connect(server) as third:
                reply = read_reply(third)
        finally:
            for connection in held:
                connection.close()
        assert reply.startswith(b"HTTP/1.1 503")
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "overloaded"
        wait_until(lambda: httpx.get(f"{server.url}/healthz").status_code == 200)
        assert metric(server, 's2s_requests_total{outcome="overloaded"}') == 1


def test_a_deadline_that_passes_while_the_body_arrives_is_a_timeout(model):
    with serving(model, request_timeout_s=0.5) as server, connect(server) as connection:
        body = b'{"inputs": "abc"}'
        request = post(body)
        connection.sendall(request[:-5])
        time.sleep(0.8)
        connection.sendall(request[-5:])
        reply = read_reply(connection)
    assert reply.split(b" ", 2)[1] == b"504"
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]["type"] == "timeout"


def test_an_answer_that_could_pass_max_response_bytes_is_refused_before_decoding(model):
    """The probe's 34 MB answer (48 inputs × 16 samples × attention × 138 tokens) was decoded and rendered on the
    event loop; now its size is bounded from the request before anything is decoded."""
    with serving(model, max_response_bytes=1 << 20) as server:
        before = metric(server, "s2s_batch_size_count")
        body = {
            "inputs": ["abcdefghij"] * 48,
            "options": {"strategy": "sample", "num_hypotheses": 16, "return_attention": True, "max_length": 30},
        }
        response = httpx.post(f"{server.url}/v1/generate", json=body, timeout=30)
        assert response.status_code == 413 and response.json()["error"]["type"] == "too_large"
        assert "max_response_bytes 1048576" in response.json()["error"]["message"]
        assert metric(server, "s2s_batch_size_count") == before
        small = httpx.post(f"{server.url}/v1/generate", json={"inputs": ["abc"] * 48}, timeout=30)
        assert small.status_code == 200 and len(small.json()["results"]) == 48
