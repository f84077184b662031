"""Thread safety and the dynamic batcher: every request gets exactly its own answer, or an explicit error."""

import asyncio
import random
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor

import pytest

import s2s_runtime
from conftest import random_sources
from s2s_runtime import BatcherClosed, BatcherConfig, Overloaded, RequestTimeout
from s2s_runtime.service import Batcher


@pytest.fixture(scope="module")
def model(small_bundle):
    return s2s_runtime.load(small_bundle, device="cpu")


@pytest.fixture(scope="module")
def serial(model):
    sources = random_sources(96, seed=11, high=14)
    return sources, {s: model.generate(s, max_length=12)[0].ids for s in set(sources)}


def test_model_is_thread_safe(model, serial):
    sources, expected = serial
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda s: model.generate(s, max_length=12)[0].ids, sources * 2))
    assert results == [expected[s] for s in sources * 2]


def test_batcher_answers_each_request_with_its_own_result(model, serial):
    sources, expected = serial
    sizes = []

    class Observer:
        def batch_done(self, size, seconds, tokens):
            sizes.append(size)

        def queue_depth(self, depth):
            pass

        def request_failed(self, kind):
            pass

    with Batcher(model, BatcherConfig(max_batch_size=16, max_wait_ms=5), observer=Observer()) as batcher:
        with ThreadPoolExecutor(32) as pool:
            futures = list(pool.map(lambda s: batcher.submit(s, max_length=12), sources * 2))
        results = [f.result(timeout=60).ids for f in futures]
    assert results == [expected[s] for s in sources * 2]
    assert max(sizes) > 1 and sum(sizes) == len(sources) * 2  # requests were really batched, none twice


def test_different_options_are_never_mixed(model):
    with model.batcher(max_batch_size=32, max_wait_ms=20) as batcher:
        short = [batcher.submit("abcdefg", max_length=2) for _ in range(5)]
        beam = [batcher.submit("abcdefg", max_length=5, strategy="beam", beam_size=2) for _ in range(5)]
        assert all(len(f.result(timeout=30).ids) <= 2 for f in short)
        expected = model.generate("abcdefg", max_length=5, strategy="beam", beam_size=2)[0].ids
        assert all(f.result(timeout=30).ids == expected for f in beam)


def test_bad_input_fails_alone(model):
    with model.batcher(max_batch_size=8, max_wait_ms=50) as batcher:
        good = batcher.submit("abc", max_length=4)
        bad = batcher.submit("a" * 2000, max_length=4)
        wrong_type = batcher.submit(42, max_length=4)
        assert good.result(timeout=30).ids == model.generate("abc", max_length=4)[0].ids
        with pytest.raises(ValueError, match="max_source_length"):
            bad.result(timeout=30)
        with pytest.raises(TypeError):
            wrong_type.result(timeout=30)
    with pytest.raises(TypeError, match="unknown generation option"):
        batcher.submit("abc", beam=3)


def wait_until(predicate, timeout=10.0):
    """Poll instead of sleeping a fixed time, so a loaded CI machine cannot reorder the steps of a test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def blocked_batcher(model, **config):
    """A batcher whose worker is stuck in a slow batch, so the queue fills deterministically."""
    gate = threading.Event()
    original = model.generate

    class SlowModel:
        bundle = model.bundle

        def generate(self, *args, **kwargs):
            gate.wait(30)
            return original(*args, **kwargs)

    batcher = Batcher(SlowModel(), BatcherConfig(warmup=False, max_wait_ms=0, **config))
    return batcher, gate


def test_full_queue_is_overloaded_at_once(model):
    batcher, gate = blocked_batcher(model, max_batch_size=1, max_queue=3)
    first = batcher.submit("abc", max_length=3)
    wait_until(lambda: batcher.queue_depth() == 0)  # the worker holds `first`
    queued = [batcher.submit("abc", max_length=3) for _ in range(3)]
    started = time.perf_counter()
    with pytest.raises(Overloaded, match="queue full"):
        batcher.submit("abc", max_length=3)
    assert time.perf_counter() - started < 0.5
    gate.set()
    assert all(f.result(timeout=30).ids for f in [first] + queued)
    batcher.close()


def test_timeout_cancellation_and_shutdown_answer_everything(model):
    batcher, gate = blocked_batcher(model, max_batch_size=1, max_queue=10)
    running = batcher.submit("abc", max_length=3)
    wait_until(lambda: batcher.queue_depth() == 0)
    expiring = batcher.submit("abc", max_length=3, timeout=0.05)
    cancelled = batcher.submit("abc", max_length=3)
    assert cancelled.cancel()  # frees its slot: never decoded
    pending = [batcher.submit("abc", max_length=3) for _ in range(4)]
    time.sleep(0.1)  # past `expiring`'s 0.05 s deadline while it is still queued behind the blocked worker
    gate.set()
    with pytest.raises(RequestTimeout):
        expiring.result(timeout=30)
    with pytest.raises(CancelledError):
        cancelled.result(timeout=1)
    batcher.close(drain=True)
    assert running.result(timeout=1).ids and all(f.result(timeout=1).ids for f in pending)
    with pytest.raises(BatcherClosed):
        batcher.submit("abc")


def test_shutdown_without_draining_fails_pending_requests(model):
    batcher, gate = blocked_batcher(model, max_batch_size=1, max_queue=10)
    running = batcher.submit("abc", max_length=3)
    wait_until(lambda: batcher.queue_depth() == 0)
    pending = [batcher.submit("abc", max_length=3) for _ in range(3)]
    closer = threading.Thread(target=batcher.close, kwargs={"drain": False})
    closer.start()
    wait_until(lambda: all(f.done() for f in pending))  # failed by close(), before the worker is free again
    gate.set()
    closer.join(30)
    assert running.result(timeout=1).ids
    for future in pending:
        with pytest.raises(BatcherClosed):
            future.result(timeout=1)


def test_asyncio_api(model, serial):
    sources, expected = serial

    async def main():
        with model.batcher(max_batch_size=32, max_wait_ms=5) as batcher:
            chosen = random.Random(1).sample(sources, 40)
            results = await asyncio.gather(*(batcher.generate(s, max_length=12) for s in chosen))
            return chosen, results

    chosen, results = asyncio.run(main())
    assert [r.ids for r in results] == [expected[s] for s in chosen]


def test_several_workers_decode_batches_at_once_and_answer_everything(model, serial):
    """Two workers: two batches in flight at the same time, every request answered with its own result, all
    workers warmed up before `ready`, and close() drains what is queued."""
    sources, expected = serial
    in_flight, peak, lock = [0], [0], threading.Lock()
    original = model.generate

    class Overlapping:
        bundle = model.bundle

        def generate(self, *args, **kwargs):
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            time.sleep(0.02)  # long enough for the other worker to start its own batch
            try:
                return original(*args, **kwargs)
            finally:
                with lock:
                    in_flight[0] -= 1

    batcher = Batcher(Overlapping(), BatcherConfig(max_batch_size=8, max_wait_ms=1, workers=2))
    assert batcher.ready.wait(30)
    with ThreadPoolExecutor(16) as pool:
        futures = list(pool.map(lambda s: batcher.submit(s, max_length=12), sources))
    batcher.close(drain=True)
    assert [f.result(timeout=1).ids for f in futures] == [expected[s] for s in sources]
    assert peak[0] == 2
    with pytest.raises(ValueError, match="workers"):
        BatcherConfig(workers=0)
