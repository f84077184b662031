"""The Open Inference Protocol v2 and Triton's generate extension, driven by the real `tritonclient[http]` against a
real server on 127.0.0.1: the same answers as /v1, the documented errors, the same admission."""

import json
import threading

import httpx
import numpy as np
import pytest

import s2s_runtime
from s2s_runtime.serving import BatcherConfig
from s2s_runtime.serving.http import ServerConfig, create_app
from tests.conftest import wait_until
from tests.support.background_server import BackgroundServer

triton = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException

WORDS = ["hello", "world", "encoder"]


@pytest.fixture(scope="module")
def model():
    return s2s_runtime.load("g2p-en", device="cpu")


@pytest.fixture(scope="module")
def server(model):
    app = create_app(model, BatcherConfig(max_batch_size=16, max_wait_ms=1), ServerConfig(max_inputs=8))
    with BackgroundServer(app) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    wait_until(client.is_server_ready)
    yield client
    client.close()


def text_input(words, binary=True):
    tensor = triton.InferInput("text_input", [len(words)], "BYTES")
    tensor.set_data_from_numpy(np.array(words, dtype=object), binary_data=binary)
    return tensor


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("g2p-en")
    assert not client.is_model_ready("nope")
    assert client.get_server_metadata()["name"] == "s2s-runtime"
    metadata = client.get_model_metadata("g2p-en")
    assert metadata["inputs"] == [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"] for o in metadata["outputs"]} == {
        "text_output",
        "tokens",
        "score",
        "finished",
        "unknown_source_tokens",
    }
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_answers_like_the_library(client, model, binary):
    expected = model.generate(WORDS, strategy="beam", beam_size=4)
    result = client.infer(
        "g2p-en", [text_input(WORDS, binary)], parameters={"strategy": "beam", "beam_size": 4}, request_id="7"
    )
    assert [t.decode() if isinstance(t, bytes) else t for t in result.as_numpy("text_output")] == [
        r.text for r in expected
    ]
    tokens = [json.loads(t) for t in result.as_numpy("tokens")]
    assert tokens == [r.tokens for r in expected]
    np.testing.assert_allclose(result.as_numpy("score"), [r.score for r in expected], rtol=1e-6)
    assert result.get_response()["id"] == "7"


def test_infer_errors_are_the_documented_ones(client, server):
    with pytest.raises(InferenceServerException, match="beam_size: only used with strategy='beam'"):
        client.infer("g2p-en", [text_input(["hello"])], parameters={"beam_size": 4})
    with pytest.raises(InferenceServerException, match="9 inputs exceed the limit of 8"):
        client.infer("g2p-en", [text_input(["a"] * 9)])
    response = httpx.post(f"{server.url}/v2/models/g2p-en/infer", json={"inputs": []})
    assert response.status_code == 400 and "text_input" in response.json()["error"]


def test_an_overloaded_server_answers_503(model):
    gate = threading.Event()

    class Held:
        def __getattr__(self, name):
            return getattr(model, name)

        def start(self, *args, **kwargs):
            gate.wait(30)
            return model.start(*args, **kwargs)

    app = create_app(Held(), BatcherConfig(max_batch_size=1, max_wait_ms=0, max_queue=1, warmup=False))
    with BackgroundServer(app) as server:
        client = triton.InferenceServerClient(server.url.removeprefix("http://"), concurrency=4)
        pending = [client.async_infer("g2p-en", [text_input(["hello"])]) for _ in range(2)]
        wait_until(lambda: app.state.s2s.batcher.queue_depth() == 1)
        with pytest.raises(InferenceServerException, match="queue full"):
            client.infer("g2p-en", [text_input(["hello"])])
        gate.set()
        assert all(p.get_result().as_numpy("text_output")[0] for p in pending)
        client.close()


def test_generate_and_generate_stream(server, model):
    expected = model.generate("hello")[0]
    answer = httpx.post(f"{server.url}/v2/models/g2p-en/generate", json={"text_input": "hello"}).json()
    assert answer["text_output"] == expected.text and answer["model_name"] == "g2p-en"
    with httpx.stream(
        "POST", f"{server.url}/v2/models/g2p-en/generate_stream", json={"text_input": "hello", "parameters": {}}
    ) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert [e["text_output"] for e in events] == expected.tokens
    bad = httpx.post(f"{server.url}/v2/models/g2p-en/generate", json={"text_input": "hello", "parameters": {"x": 1}})
    assert bad.status_code == 400 and "unknown generation option 'x'" in bad.json()["error"]


def test_unknown_routes_and_methods_answer_json(server):
    for method, path, status in [
        ("GET", "/nope", 404),
        ("GET", "/v1/generate", 405),
        ("DELETE", "/v2/models/g2p-en/infer", 405),
        ("GET", "/v2/nope", 404),
    ]:
        response = httpx.request(method, f"{server.url}{path}")
        assert response.status_code == status and response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert (error if path.startswith("/v2") else error["message"]).startswith(f"{method} {path}")
    assert "POST" in httpx.get(f"{server.url}/v1/generate").headers["allow"]


def test_request_ids_are_returned_and_in_every_error(server):
    given = httpx.post(f"{server.url}/v1/generate", json={"inputs": "abc"}, headers={"x-request-id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = httpx.post(f"{server.url}/v1/generate", content=b"{")
    assert (
        len(made.headers["x-request-id"]) == 32 and made.json()["error"]["request_id"] == made.headers["x-request-id"]
    )
    v2 = httpx.post(f"{server.url}/v2/models/g2p-en/infer", json={}, headers={"x-request-id": "r1"})
    assert v2.json()["request_id"] == "r1"
    odd = httpx.get(f"{server.url}/healthz", headers={"x-request-id": "x" * 500})
    assert odd.headers["x-request-id"] != "x" * 500  # too long: a new one


def test_process_metrics_beside_the_service_metrics(server):
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("process_resident_memory_bytes", "process_open_fds", "python_gc_objects_collected_total"):
        assert name in text


def test_a_json_access_log_line_per_request(small_bundle, tmp_path):
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "s2s_runtime.cli", "serve", str(small_bundle), "--device", "cpu", "--port"]
    process = subprocess.Popen(
        [*command, str(port), "--log-format", "json", "--log-level", "warning"], stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _up(url), timeout=60)
        httpx.post(f"{url}/v1/generate", json={"inputs": "abc"}, headers={"x-request-id": "log-me"})
        httpx.post(f"{url}/v1/generate", content=b"{")
    finally:
        process.terminate()
        stderr = process.communicate(timeout=30)[1]
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    mine = next(line for line in lines if line["request_id"] == "log-me")
    assert mine["method"] == "POST" and mine["path"] == "/v1/generate" and mine["status"] == 200 and mine["ms"] > 0
    assert any(line["status"] == 400 for line in lines)


def _up(url):
    try:
        return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
