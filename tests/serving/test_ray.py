"""Scale-out on Ray: the Serve application answers exactly like `s2s serve`, the Ray Data predictor returns every
input exactly once, and `s2s bulk --ray` writes the same file as local workers. A local cluster is started by the
tests, bound to the loopback interface, and shut down after; skipped without the ray extra."""

import json
import os
import random

import numpy as np
import pytest

ray = pytest.importorskip("ray")  # the ray extra
httpx = pytest.importorskip("httpx")

import s2s_runtime
import s2s_runtime.serving.ray as s2s_ray
from s2s_runtime.serving import BatcherConfig
from s2s_runtime.serving.bulk import BulkJob, run
from s2s_runtime.serving.http import ServerConfig, create_app
from s2s_runtime.serving.ray.serving import HAPROXY_INGRESS, ReplicaConfig, start_ray
from tests.conftest import random_sources
from tests.support.background_server import BackgroundServer

PORT = 18765
BATCHER = BatcherConfig(max_batch_size=16, max_wait_ms=2)
SERVER = ServerConfig(max_inputs=8, request_timeout_s=30)


# Serve keeps a deleted direct-ingress replica draining for at least 30 s (HAProxy's routing must move off it first);
# the tests have no traffic left by then.
FAST_DRAIN = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}


@pytest.fixture(scope="module")
def cluster():
    saved = {key: os.environ.get(key) for key in {**HAPROXY_INGRESS, **FAST_DRAIN}}
    os.environ.update(FAST_DRAIN)
    start_ray(None, haproxy=True)  # the recommended configuration, as `s2s serve --ray` runs it
    yield
    from ray import serve

    serve.shutdown()
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_predictor_returns_every_input_once_with_the_direct_outputs(cluster, small_bundle):
    sources = random_sources(2000, seed=31, high=12)
    sources[7] = "x" * 5000  # a bad input: an error row, never a lost one
    dataset = ray.data.from_items([{"id": i, "word": w} for i, w in enumerate(sources)])
    rows = dataset.map_batches(
        s2s_ray.Predictor,
        fn_constructor_kwargs={"bundle": str(small_bundle), "column": "word"},
        concurrency=2,
        num_cpus=0.5,
        batch_size=128,
    ).take_all()
    assert sorted(int(r["id"]) for r in rows) == list(range(len(sources)))
    by_id = {int(r["id"]): r for r in rows}
    assert by_id[7]["error"].startswith("ValueError: 5000 source tokens") and by_id[7]["text"] is None
    model = s2s_runtime.load(small_bundle, device="cpu")
    good = [i for i in range(len(sources)) if i != 7]
    expected = model.generate([sources[i] for i in good])
    assert [by_id[i]["text"] for i in good] == [r.text for r in expected]
    assert np.allclose([by_id[i]["score"] for i in good], [r.score for r in expected], atol=1e-5)


def test_bulk_on_ray_writes_the_same_file_as_local_workers(cluster, small_bundle, tmp_path):
    sources = random_sources(500, seed=32, high=12) + ["ab?", ""]
    (tmp_path / "in.txt").write_text("\n".join(sources) + "\n")
    local, on_ray = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    run(BulkJob(str(tmp_path / "in.txt"), str(local), str(small_bundle), shard_size=100), workers=1, progress=False)
    run(
        BulkJob(str(tmp_path / "in.txt"), str(on_ray), str(small_bundle), shard_size=100),
        workers=2,
        use_ray=True,
        progress=False,
    )
    expected = [json.loads(line) for line in local.read_text().splitlines()]
    got = [json.loads(line) for line in on_ray.read_text().splitlines()]
    scores = [(row.pop("score"), reference.pop("score")) for row, reference in zip(got, expected, strict=True)]
    assert got == expected  # every row once, in order, the same tokens and errors
    # fp32 scores move in the last bits with the batch onnxruntime computes a row in (Ray Data cuts its own batches)
    assert all(a == b or abs(a - b) <= 1e-5 for a, b in scores)


def mixed_requests(count):
    rng = random.Random(5)
    words = random_sources(60, seed=33, high=10)
    kinds = [{}, {"strategy": "beam", "beam_size": 3, "num_hypotheses": 2}, {"strategy": "sample", "seed": 3}]
    requests = []
    for index in range(count):
        if index == 17:
            requests.append({"inputs": ["abc", 42]})  # the bad input: 400, identically
        elif index % 9 == 0:
            requests.append({"inputs": rng.choice(words), "stream": True})
        else:
            requests.append({"inputs": rng.sample(words, rng.randint(1, 3)), "options": rng.choice(kinds)})
    return requests


def answers(url, requests):
    """(status, body) of each request, each sent with the same request id (each server would make its own)."""
    with httpx.Client(timeout=60) as client:
        replies = (
            client.post(f"{url}/v1/generate", json=body, headers={"x-request-id": f"r{index}"})
            for index, body in enumerate(requests)
        )
        return [(r.status_code, r.text) for r in replies]


def test_serve_application_answers_exactly_like_s2s_serve(cluster, small_bundle):
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(
        s2s_ray.app(str(small_bundle), replicas=1, num_cpus=0.5, config=ReplicaConfig(batcher=BATCHER, server=SERVER)),
        route_prefix="/",
    )
    url = f"http://127.0.0.1:{PORT}"
    assert httpx.get(f"{url}/readyz", timeout=30).json()["status"] == "ready"
    requests = mixed_requests(200)
    model = s2s_runtime.load(small_bundle, device="cpu")
    with BackgroundServer(create_app(model, BATCHER, SERVER)) as reference:
        expected = answers(reference.url, requests)
    got = answers(url, requests)
    assert [status for status, _ in got] == [status for status, _ in expected]
    assert sum(status == 400 for status, _ in got) == 1
    for (_, body), (_, reference_body), request in zip(got, expected, requests, strict=True):
        if request.get("stream"):
            assert body == reference_body  # the same events, token by token
        else:
            assert json.loads(body) == json.loads(reference_body)
    metrics = httpx.get(f"{url}/metrics").text
    assert 's2s_requests_total{outcome="ok"}' in metrics
    serve.delete("default")
