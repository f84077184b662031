"""Hostile and careless HTTP clients against a real server on 127.0.0.1: every request gets a result or its
documented error, the server answers a normal request exactly as before after each one, and no client can stall it.
All traffic stays on the loopback interface; every loop is bounded in count and time."""

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytest.importorskip("starlette")  # the serve extra
pytest.importorskip("uvicorn")  # the serve extra
pytest.importorskip("prometheus_client")  # the serve extra
httpx = pytest.importorskip("httpx")  # the test extra

import s2s_runtime
from s2s_runtime.serving import BatcherConfig
from s2s_runtime.serving.http import ServerConfig, create_app
from tests.conftest import Wrapped, slowed, wait_until
from tests.support.background_server import BackgroundServer
from tests.support.sockets import read_reply

NORMAL = {"inputs": ["abc", "hello", "jihgfedcba"]}
CONFIG = ServerConfig(
    max_body_bytes=64 * 1024,
    max_inputs=8,
    request_timeout_s=10,
    max_header_bytes=4096,
    read_timeout_s=1.0,
    keep_alive_s=1.0,
    max_connections=24,
    shutdown_grace_s=2,
)


@pytest.fixture(scope="module")
def model(small_bundle):
    return s2s_runtime.load(small_bundle, device="cpu")


@pytest.fixture(scope="module")
def server(model):
    app = create_app(model, BatcherConfig(max_batch_size=16, max_wait_ms=2, max_streams=4), CONFIG)
    with BackgroundServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def serial(model):
    return [r.to_dict() for r in model.generate(NORMAL["inputs"])]


def still_serves(server, serial):
    response = httpx.post(f"{server.url}/v1/generate", json=NORMAL, timeout=30)
    assert response.status_code == 200 and response.json()["results"] == serial


def nested(depth):
    return "[" * depth + "]" * depth


BODY_CASES = [  # (name, raw body, status, error type, message fragment)
    ("not json", b"{not json", 400, "bad_request", "not valid JSON"),
    *[
        (
            f"400-digit {name}",
            b'{"inputs": "abc", "options": {' + extra + b'"' + name.encode() + b'": 1' + b"0" * 400 + b"}}",
            400,
            "bad_input",
            f"{name}: must be finite",
        )
        for name, extra in [
            ("length_penalty", b""),
            ("temperature", b'"strategy": "sample", '),
            ("top_p", b'"strategy": "sample", '),
            ("max_length_ratio", b""),
            ("repetition_penalty", b""),
            ("coverage_penalty", b'"strategy": "beam", '),
        ]
    ],
    (
        "deep nesting in options",
        b'{"inputs": "abc", "options": {"suppress_tokens": ' + nested(2000).encode() + b"}}",
        400,
        "bad_request",
        "nested deeper than 32",
    ),
    ("nesting past the parser", nested(30_000).encode(), 400, "bad_request", "nested deeper than"),
    ("options as a list", b'{"inputs": "abc", "options": []}', 400, "bad_request", "'options' must be an object"),
    ("options as zero", b'{"inputs": "abc", "options": 0}', 400, "bad_request", "'options' must be an object"),
    ("options as false", b'{"inputs": "abc", "options": false}', 400, "bad_request", "'options' must be an object"),
    ("options as null", b'{"inputs": "abc", "options": null}', 400, "bad_request", "'options' must be an object"),
    ("stream as a string", b'{"inputs": "abc", "stream": "false"}', 400, "bad_request", "'stream' must be true or"),
    ("stream as a number", b'{"inputs": "abc", "stream": 1}', 400, "bad_request", "'stream' must be true or false"),
    (
        "integer of 5000 digits",
        b'{"inputs": "abc", "options": {"seed": ' + b"9" * 5000 + b"}}",
        400,
        "bad_request",
        "not valid JSON",
    ),
    ("NaN literal", b'{"inputs": "abc", "options": {"length_penalty": NaN}}', 400, "bad_input", "must be finite"),
    (
        "huge length penalty",
        b'{"inputs": "hello", "options": {"length_penalty": 1000}}',
        400,
        "bad_input",
        "length_penalty",
    ),
    (
        "overflowing ratio",
        b'{"inputs": "abc", "options": {"max_length_ratio": 1e308}}',
        400,
        "bad_input",
        "max_length_ratio",
    ),
    (
        "overflowing beam penalty",
        b'{"inputs": "abc", "options": {"strategy": "beam", "length_penalty": 1e308}}',
        400,
        "bad_input",
        "length_penalty",
    ),
    (
        "a million beams",
        b'{"inputs": "abc", "options": {"strategy": "beam", "beam_size": 1000000}}',
        400,
        "bad_input",
        "beam_size: 1000000 is more than",
    ),
    (
        "a billion tokens on two inputs",
        b'{"inputs": ["abc", "de"], "options": {"max_length": 1000000000}}',
        400,
        "bad_input",
        "max_length",
    ),
    (
        "endless decode",
        b'{"inputs": "abc", "options": {"max_length": 100000000, "min_length": 100000000}}',
        400,
        "bad_input",
        "max_length",
    ),
    (
        "server settings as options",
        b'{"inputs": "abc", "options": {"max_batch_size": 100000}}',
        400,
        "bad_request",
        "server settings",
    ),
    (
        "unknown option",
        b'{"inputs": "abc", "options": {"beam_width": 2}}',
        400,
        "bad_input",
        "unknown generation option",
    ),
    ("unknown field", b'{"inputs": "abc", "colour": 1}', 400, "bad_request", "unknown field 'colour'"),
    ("no inputs", b'{"inputs": []}', 400, "bad_request", "non-empty list"),
    ("number input", b'{"inputs": [3]}', 400, "bad_input", "inputs[0]"),
    ("nested input", b'{"inputs": [[["a"]]]}', 400, "bad_input", "inputs[0]"),
    ("prefix count", b'{"inputs": ["a", "b"], "target_prefix": ["a"]}', 400, "bad_request", "one entry"),
    (
        "unknown prefix token",
        b'{"inputs": ["a"], "target_prefix": ["a?"]}',
        400,
        "bad_input",
        "not in the target vocabulary",
    ),
    ("too many inputs", json.dumps({"inputs": ["a"] * 9}).encode(), 413, "too_large", "exceed the limit of 8"),
    ("oversized body", json.dumps({"inputs": "a" * 70_000}).encode(), 413, "too_large", "exceeds the limit"),
    ("body not an object", b'["abc"]', 400, "bad_request", "body must be a JSON object"),
    (
        "beam stream",
        b'{"inputs": "abc", "stream": true, "options": {"strategy": "beam"}}',
        400,
        "bad_input",
        "not streamable",
    ),
    ("bad stream input", b'{"inputs": [5], "stream": true}', 400, "bad_input", "inputs[0]"),
    (
        "vanishing temperature",
        b'{"inputs": "abc", "options": {"strategy": "sample", "temperature": 1e-45}}',
        200,
        None,
        None,
    ),
    ("vanishing nucleus", b'{"inputs": "abc", "options": {"strategy": "sample", "top_p": 1e-50}}', 200, None, None),
]


@pytest.mark.parametrize("name, body, status, kind, fragment", BODY_CASES, ids=[c[0] for c in BODY_CASES])
def test_hostile_bodies(server, serial, name, body, status, kind, fragment):
    response = httpx.post(
        f"{server.url}/v1/generate", content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == status, response.text
    if kind is not None:
        assert response.json()["error"]["type"] == kind
        assert fragment in response.json()["error"]["message"]
    else:
        assert "<pad>" not in response.json()["results"][0]["tokens"]
    still_serves(server, serial)


def raw(server, data=b"", *, timeout=10.0):
    """Send raw bytes on a fresh connection; returns (status or None if closed without answer, seconds)."""
    host, port = server.url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        if data:
            try:  # noqa: SIM105 (the comment below says why the error is expected)
                connection.sendall(data)
            except OSError:  # the server closed it mid-send (an oversized header)
                pass
        reply = read_reply(connection)
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1") else None
    return status, time.monotonic() - started


def test_an_enormous_header_is_refused_without_stalling_the_server(server, serial):
    header = b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * (8 * 1024 * 1024) + b"\r\n\r\n"
    result = {}
    thread = threading.Thread(target=lambda: result.update(reply=raw(server, header)))
    thread.start()
    started = time.monotonic()
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    assert time.monotonic() - started < 2
    thread.join(30)
    assert result["reply"][0] == 431
    still_serves(server, serial)


def test_idle_and_slow_connections_are_closed(server, serial):
    status, seconds = raw(server)  # connects, sends nothing
    assert status == 408 and seconds < CONFIG.read_timeout_s + 3
    status, seconds = raw(server, b"POST /v1/generate HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    assert status == 408 and seconds < CONFIG.read_timeout_s + 3
    lying = b'POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"inputs": "abc"}'
    status, seconds = raw(server, lying)  # a body that never arrives
    assert status == 408 and seconds < CONFIG.read_timeout_s + 3
    still_serves(server, serial)


def test_idle_keep_alive_connections_are_closed(server):
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert connection.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert connection.recv(65536) == b""  # closed by the server once idle
        assert time.monotonic() - started < CONFIG.keep_alive_s + 3


def test_a_flood_of_idle_sockets_cannot_lock_anyone_out(server, serial):
    host, port = server.url.removeprefix("http://").split(":")
    sockets = [socket.create_connection((host, int(port)), timeout=10) for _ in range(40)]  # past max_connections
    try:
        wait_until(lambda: httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200, timeout=15)
        still_serves(server, serial)
    finally:
        for connection in sockets:
            connection.close()


def test_metrics_count_each_request_once(server):
    def counts():
        text = httpx.get(f"{server.url}/metrics").text
        values = {}
        for line in text.splitlines():
            for prefix in ("s2s_requests_total", "s2s_request_latency_seconds_count", "s2s_batch_size_sum"):
                if line.startswith(prefix):
                    name, value = line.rsplit(" ", 1)
                    values[name] = float(value)
        return values

    before = counts()
    httpx.post(f"{server.url}/v1/generate", json={"inputs": "abc"})
    httpx.post(f"{server.url}/v1/generate", json={"inputs": [3]})
    httpx.post(f"{server.url}/v1/generate", content=b"{")
    after = counts()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta['s2s_requests_total{outcome="ok"}'] == 1
    assert delta['s2s_requests_total{outcome="bad_input"}'] == 2
    assert sum(v for k, v in delta.items() if k.startswith("s2s_requests_total")) == 3
    assert delta['s2s_request_latency_seconds_count{outcome="bad_input"}'] == 2  # every outcome is timed
    assert delta["s2s_batch_size_sum"] == 1  # the bad requests decoded nothing


@pytest.fixture
def slow_server(model, request):
    """A server whose every decoder step takes ≥ 1 ms, so requests stay in flight long enough to be observed
    (request deadline 0.5 s unless the test's `timeout` mark says otherwise)."""
    steps = [0]
    mark = request.node.get_closest_marker("timeout_s")
    app = create_app(
        Wrapped(model, slowed(steps)),
        BatcherConfig(max_batch_size=16, max_wait_ms=0, max_queue=4, max_streams=2, warmup=False),
        ServerConfig(request_timeout_s=mark.args[0] if mark else 0.5, max_inputs=8, shutdown_grace_s=1.0),
    )
    with BackgroundServer(app) as running:
        running.steps = steps
        yield running


def test_overload_timeout_and_rejection_decode_nothing_extra(slow_server):
    url = slow_server.url
    long = {"inputs": "abc", "options": {"min_length": 2000, "max_length": 2000}}
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(httpx.post(f"{url}/v1/generate", json=long, timeout=30)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: slow_server.steps[0] > 0)
    seven = httpx.post(f"{url}/v1/generate", json={"inputs": ["abc"] * 7}, timeout=30)  # more than the queue holds
    assert seven.status_code == 503 and seven.json()["error"]["type"] == "overloaded"
    for thread in threads:
        thread.join(30)
    assert sorted(r.status_code for r in results) == [504, 504]  # deadlines hold during decoding
    assert slow_server.steps[0] < 2000
    text = httpx.get(f"{url}/metrics").text
    assert 's2s_requests_total{outcome="overloaded"} 1.0' in text
    assert 's2s_requests_total{outcome="timeout"} 2.0' in text
    assert "s2s_batch_size_count 0.0" in text  # nothing was decoded to the end: not the 7 rejected inputs either


def test_streams_are_admitted_limited_and_timed(slow_server):
    url = slow_server.url
    long = {"inputs": "abc", "stream": True, "options": {"min_length": 2000, "max_length": 2000}}
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{url}/v1/generate", json=long) as first,
        client.stream("POST", f"{url}/v1/generate", json=long) as second,
    ):
        assert first.status_code == second.status_code == 200
        third = client.post(f"{url}/v1/generate", json=long)
        assert third.status_code == 503 and "streams open" in third.json()["error"]["message"]
        events = [line for line in first.iter_lines() if line.startswith(("event:", "data:"))]
        assert events[-2] == "event: error" and json.loads(events[-1][5:])["type"] == "timeout"
        second.close()
    assert slow_server.steps[0] < 4000


def test_a_disconnected_client_cancels_its_work(slow_server):
    url = slow_server.url
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"inputs": ["abc"] * 4, "options": {"min_length": 2000, "max_length": 2000}}).encode()
    with socket.create_connection((host, int(port))) as connection:
        connection.sendall(
            b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        wait_until(lambda: slow_server.steps[0] > 10)
    wait_until(lambda: 's2s_requests_total{outcome="cancelled"} 1.0' in httpx.get(f"{url}/metrics").text)
    steps = slow_server.steps[0]
    time.sleep(0.1)
    assert slow_server.steps[0] - steps <= 2  # decoding stopped
    assert steps < 400


@pytest.mark.timeout_s(30)
def test_draining_answers_in_flight_requests_and_refuses_new_ones(slow_server):
    url = slow_server.url
    long = {"inputs": "abc", "options": {"min_length": 2000, "max_length": 2000}}  # ≥ 2 s: past the 1 s grace
    reply = {}
    thread = threading.Thread(target=lambda: reply.update(r=httpx.post(f"{url}/v1/generate", json=long, timeout=30)))
    thread.start()
    wait_until(lambda: slow_server.steps[0] > 0)
    slow_server.drain()
    wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 503)
    assert httpx.get(f"{url}/readyz").json()["status"] == "draining"
    refused = httpx.post(f"{url}/v1/generate", json={"inputs": "abc"})
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "shutting_down"
    thread.join(30)
    assert reply["r"].status_code == 503  # answered when the grace period ended
    assert reply["r"].json()["error"]["type"] == "shutting_down"
    slow_server.thread.join(10)
    assert not slow_server.thread.is_alive()


SERVE_SCRIPT = textwrap.dedent("""
    import sys, time
    import s2s_runtime
    from s2s_runtime.serving.http import ServerConfig, serve
    from s2s_runtime.serving import BatcherConfig

    class Slow:  # the real model, every decoder step ≥ 1 ms
        def __init__(self, model):
            self.model = model
        def __getattr__(self, name):
            return getattr(self.model, name)
        def start(self, items, plan, **kwargs):
            generation = self.model.start(items, plan, **kwargs)
            run = generation.run
            generation.run = lambda stop=None: run(lambda: (time.sleep(0.001), stop())[1])
            return generation

    sys.exit(serve(Slow(s2s_runtime.load(sys.argv[1], device="cpu")), port=int(sys.argv[2]), log_level="warning",
             batcher_config=BatcherConfig(warmup=False), config=ServerConfig(shutdown_grace_s=float(sys.argv[3]))))
""")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("grace", [1.5])
def test_sigterm_during_a_long_decode_exits_within_the_grace_period(small_bundle, grace, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, str(small_bundle), str(port), str(grace)])
    try:
        wait_until(lambda: _ready(url), timeout=60)
        replies = {}

        def post(name, options):
            replies[name] = httpx.post(f"{url}/v1/generate", json={"inputs": "abc", "options": options}, timeout=30)

        short = threading.Thread(target=post, args=("short", {"min_length": 200, "max_length": 200}))
        endless = threading.Thread(target=post, args=("long", {"min_length": 2000, "max_length": 2000}))
        short.start()  # decoded first (one worker), well within the grace period
        time.sleep(0.05)
        endless.start()  # queued behind it, then decoding when the grace period ends
        time.sleep(0.2)
        process.terminate()  # SIGTERM
        signalled = time.monotonic()
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 503, timeout=5)
        process.wait(timeout=grace + 10)
        exited = time.monotonic() - signalled
        short.join(10)
        endless.join(10)
        assert exited < grace + 1.0
        assert replies["short"].status_code == 200  # finished within the grace period
        assert replies["long"].status_code == 503  # stopped at its end, but answered
        assert replies["long"].json()["error"]["type"] == "shutting_down"
    finally:
        process.kill()
        process.wait()


def _ready(url):
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def started_server(bundle, grace):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT, str(bundle), str(port), str(grace)], stderr=subprocess.PIPE, text=True
    )
    wait_until(lambda: _ready(url), timeout=60)
    return process, url


def in_flight(url, replies, name, options):
    thread = threading.Thread(
        target=lambda: replies.update(
            {name: httpx.post(f"{url}/v1/generate", json={"inputs": "abc", "options": options}, timeout=30)}
        )
    )
    thread.start()
    return thread


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT])
def test_sighup_and_sigint_drain_like_sigterm_and_exit_0_quietly(small_bundle, sig):
    """SIGHUP used to kill the server at once (5 of 6 in-flight requests unanswered); SIGINT printed a
    KeyboardInterrupt traceback and exited 130 after its drain."""
    process, url = started_server(small_bundle, 5)
    try:
        replies = {}
        thread = in_flight(url, replies, "short", {"min_length": 200, "max_length": 200})
        time.sleep(0.1)
        process.send_signal(sig)
        assert process.wait(timeout=15) == 0
        thread.join(10)
        assert replies["short"].status_code == 200
        assert "Traceback" not in process.stderr.read()
    finally:
        process.kill()
        process.wait()


def test_a_second_signal_stops_at_once_and_answers_what_is_in_flight(small_bundle):
    """The second SIGTERM used to wait out the grace (9.6 s) and leave the in-flight request a plain-text 500."""
    process, url = started_server(small_bundle, 30)
    try:
        replies = {}
        thread = in_flight(url, replies, "long", {"min_length": 2000, "max_length": 2000})
        time.sleep(0.3)
        process.terminate()
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 503, timeout=5)
        process.terminate()
        second = time.monotonic()
        assert process.wait(timeout=10) == 1
        assert time.monotonic() - second < 3
        thread.join(10)
        assert replies["long"].status_code == 503
        assert replies["long"].json()["error"]["type"] == "shutting_down"
    finally:
        process.kill()
        process.wait()


def test_sigterm_while_a_body_is_still_arriving_exits_within_the_grace(small_bundle):
    grace = 1.0
    process, url = started_server(small_bundle, grace)
    try:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.2)
            process.terminate()
            signalled = time.monotonic()
            assert process.wait(timeout=10) == 0
            assert time.monotonic() - signalled < grace + 1.5  # it waited for the body: 2 s past a 2 s grace
    finally:
        process.kill()
        process.wait()
