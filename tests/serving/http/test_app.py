"""A real uvicorn server on 127.0.0.1 (ephemeral port), exercised over HTTP."""

import json
import threading

import pytest

pytest.importorskip("starlette")  # the serve extra
pytest.importorskip("uvicorn")  # the serve extra
pytest.importorskip("prometheus_client")  # the serve extra
httpx = pytest.importorskip("httpx")  # the test extra

import s2s_runtime
from s2s_runtime.serving import BatcherConfig
from s2s_runtime.serving.http import ServerConfig, create_app
from tests.support.background_server import BackgroundServer


@pytest.fixture(scope="module")
def server(reverse_model):
    model = s2s_runtime.load(reverse_model["bundle"], device="cpu")
    app = create_app(
        model,
        BatcherConfig(max_batch_size=16, max_wait_ms=2),
        ServerConfig(max_body_bytes=4096, max_inputs=8, request_timeout_s=10),
    )
    with BackgroundServer(app) as running:
        yield running


def test_generate_health_readiness(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").status_code in (200, 503)
    response = httpx.post(f"{server.url}/v1/generate", json={"inputs": ["hello", "abc"]})
    assert response.status_code == 200
    assert [r["text"] for r in response.json()["results"]] == ["olleh", "cba"]
    beam = httpx.post(
        f"{server.url}/v1/generate",
        json={
            "inputs": "stream",
            "target_prefix": ["m"],
            "options": {"strategy": "beam", "beam_size": 3, "num_hypotheses": 2},
        },
    ).json()
    assert beam["results"][0]["text"] == "maerts" and len(beam["results"][0]["hypotheses"]) == 2
    assert httpx.get(f"{server.url}/readyz").json()["status"] == "ready"


def test_many_concurrent_clients_get_their_own_answers(server):
    words = [f"{a}{b}{c}" for a in "abcd" for b in "efgh" for c in "ijk"]
    answers = {}

    def client(word):
        answers[word] = httpx.post(f"{server.url}/v1/generate", json={"inputs": word}, timeout=30).json()

    threads = [threading.Thread(target=client, args=(w,)) for w in words]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {w: a["results"][0]["text"] for w, a in answers.items()} == {w: w[::-1] for w in words}


def test_streaming_server_sent_events(server):
    with httpx.stream("POST", f"{server.url}/v1/generate", json={"inputs": "hello", "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data:")]
    tokens = [json.loads(e[5:])["token"] for e in events[:-1]]
    assert "".join(tokens) == "olleh" and events[-1] == "data: {}"


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"inputs": "abc", "options": {"beam_width": 2}}).encode(), 400, "unknown generation option"),
        (json.dumps({"inputs": "abc", "options": {"strategy": "sample", "top_p": 2}}).encode(), 400, "top_p"),
        (json.dumps({"inputs": "abc", "options": {"view": "no-stress"}}).encode(), 400, "not a target view"),
        (json.dumps({"inputs": []}).encode(), 400, "non-empty list"),
        (json.dumps({"inputs": ["a"] * 9}).encode(), 413, "exceed the limit of 8"),
        (json.dumps({"inputs": "a" * 5000}).encode(), 413, "exceeds the limit of 4096"),
        (json.dumps({"inputs": "abc", "colour": 1}).encode(), 400, "unknown field 'colour'"),
        (json.dumps({"inputs": [3]}).encode(), 400, "inputs[0]"),
        (json.dumps({"inputs": ["ab", "cd"], "stream": True}).encode(), 400, "exactly one input"),
    ],
)
def test_bad_requests_get_4xx_json_errors(server, body, status, fragment):
    response = httpx.post(f"{server.url}/v1/generate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


def test_metrics(server):
    httpx.post(f"{server.url}/v1/generate", json={"inputs": "abc"})
    httpx.post(f"{server.url}/v1/generate", content=b"{")
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "s2s_request_latency_seconds_bucket",
        "s2s_batch_size_bucket",
        "s2s_queue_depth",
        "s2s_tokens_generated_total",
        "s2s_idle_buffer_bytes",
        's2s_requests_total{outcome="bad_input"}',
        's2s_requests_total{outcome="ok"}',
    ):
        assert name in text


def test_overload_and_timeout_statuses(reverse_model):
    model = s2s_runtime.load(reverse_model["bundle"], device="cpu")
    gate = threading.Event()
    original = model.start

    def slow(*args, **kwargs):
        gate.wait(10)
        return original(*args, **kwargs)

    model.start = slow  # the worker stalls, so the queue fills and deadlines pass
    app = create_app(
        model,
        BatcherConfig(max_batch_size=1, max_wait_ms=0, max_queue=1, warmup=False),
        ServerConfig(request_timeout_s=0.5),
    )
    with BackgroundServer(app) as running, httpx.Client(timeout=10) as client:
        results = []
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    client.post(f"{running.url}/v1/generate", json={"inputs": "abc"}).status_code
                )
            )
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        gate.set()
    assert 503 in results and 504 in results


def test_load_generator_checks_every_answer(server):
    import asyncio

    from s2s_bench.load import Probe, drive, word_probes

    words = ["abc", "hello", "xyz", "seq"]
    closed = asyncio.run(
        drive(server.url, word_probes(words, {w: w[::-1] for w in words}), clients=8, duration=0.5, rate=None)
    )
    assert closed["requests"] > 0 and closed["failures"] == 0 and closed["mismatches"] == 0
    wrong = asyncio.run(
        drive(server.url, word_probes(words, dict.fromkeys(words, "?")), clients=2, duration=0.3, rate=50)
    )
    assert wrong["mismatches"] == wrong["requests"] > 0  # a mismatch would be noticed
    streamed = [Probe({"inputs": w, "stream": True}, texts=(w[::-1],)) for w in words]
    bad = [Probe({"inputs": w, "options": {"beam_size": 3}}, status=400) for w in words]
    mixed = asyncio.run(drive(server.url, streamed + bad, clients=4, duration=0.5, rate=None))
    assert mixed["requests"] > 0 and mixed["failures"] == mixed["mismatches"] == 0
    refused = asyncio.run(drive(server.url, [Probe({"inputs": "abc"}, status=400)], clients=2, duration=0.2, rate=None))
    assert refused["failures"] == refused["requests"] > 0  # an unexpected status counts as a failure
