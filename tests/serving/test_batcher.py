"""Thread safety and the dynamic batcher: every request gets exactly its own answer, or an explicit error."""

import asyncio
import random
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor

import pytest

import s2s_runtime
from s2s_runtime import BatcherClosed, BatcherConfig, Overloaded, RequestTimeout
from s2s_runtime.serving import Batcher
from tests.conftest import Wrapped, random_sources, slowed, wait_until


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
    with Batcher(model, BatcherConfig(max_batch_size=32, max_wait_ms=20)) as batcher:
        short = [batcher.submit("abcdefg", max_length=2) for _ in range(5)]
        beam = [batcher.submit("abcdefg", max_length=5, strategy="beam", beam_size=2) for _ in range(5)]
        assert all(len(f.result(timeout=30).ids) <= 2 for f in short)
        expected = model.generate("abcdefg", max_length=5, strategy="beam", beam_size=2)[0].ids
        assert all(f.result(timeout=30).ids == expected for f in beam)


def test_bad_input_fails_alone_at_submit(model):
    """A bad input or option is refused when submitted: it never reaches a batch, and its neighbours are decoded
    once, together."""
    sizes = []

    class Observer:
        def batch_done(self, size, seconds, tokens):
            sizes.append(size)

        def queue_depth(self, depth):
            pass

    with Batcher(model, BatcherConfig(max_batch_size=8, max_wait_ms=50, warmup=False), observer=Observer()) as batcher:
        good = [batcher.submit("abc", max_length=4) for _ in range(3)]
        with pytest.raises(ValueError, match="max_source_length"):
            batcher.submit("a" * 2000, max_length=4)
        with pytest.raises(TypeError, match=r"inputs\[0\]"):
            batcher.submit(42, max_length=4)
        with pytest.raises(ValueError, match="beam_size: 1000000 is more than"):
            batcher.submit("abc", strategy="beam", beam_size=1_000_000)
        assert [f.result(timeout=30).ids for f in good] == [model.generate("abc", max_length=4)[0].ids] * 3
    assert sizes == [3]  # one batch, never re-decoded one by one
    with pytest.raises(TypeError, match="unknown generation option"):
        batcher.submit("abc", beam=3)


def blocked_batcher(model, **config):
    """A batcher whose worker is stuck in a slow batch, so the queue fills deterministically."""
    gate = threading.Event()

    class SlowModel:
        def __getattr__(self, name):
            return getattr(model, name)

        def start(self, *args, **kwargs):
            gate.wait(30)
            return model.start(*args, **kwargs)

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
        with Batcher(model, BatcherConfig(max_batch_size=32, max_wait_ms=5)) as batcher:
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

    def overlapping(method, args, kwargs):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.02)  # long enough for the other worker to start its own batch
        try:
            return method(*args, **kwargs)
        finally:
            with lock:
                in_flight[0] -= 1

    batcher = Batcher(Wrapped(model, overlapping), BatcherConfig(max_batch_size=8, max_wait_ms=1, workers=2))
    assert batcher.ready.wait(30)
    with ThreadPoolExecutor(16) as pool:
        futures = list(pool.map(lambda s: batcher.submit(s, max_length=12), sources))
    batcher.close(drain=True)
    assert [f.result(timeout=1).ids for f in futures] == [expected[s] for s in sources]
    assert peak[0] == 2
    with pytest.raises(ValueError, match="workers"):
        BatcherConfig(workers=0)


def test_an_exception_in_a_batch_fails_only_its_own_requests(model):
    """Any exception — not only ValueError — fails exactly the requests it concerns with an error naming the
    cause; the worker survives and later requests succeed."""

    def around(method, args, kwargs):
        items = args[0]
        if any(item.tokens[:1] == ["j"] for item in items):
            raise OverflowError("int too large to convert to float")
        if any(item.tokens[:1] == ["i"] for item in items):
            raise MemoryError()
        return method(*args, **kwargs)

    batcher = Batcher(Wrapped(model, around), BatcherConfig(max_batch_size=8, max_wait_ms=50, warmup=False))
    futures = [batcher.submit(word, max_length=4) for word in ("abc", "jab", "cab", "ibc")]
    assert futures[0].result(timeout=30).ids == model.generate("abc", max_length=4)[0].ids
    assert futures[2].result(timeout=30).ids == model.generate("cab", max_length=4)[0].ids
    with pytest.raises(s2s_runtime.serving.InternalError, match="OverflowError: int too large") as caught:
        futures[1].result(timeout=30)
    assert isinstance(caught.value.__cause__, OverflowError)
    with pytest.raises(s2s_runtime.serving.InternalError, match="MemoryError"):
        futures[3].result(timeout=30)
    wait_until(batcher.is_ready)
    assert batcher.submit("abc", max_length=4).result(timeout=30).ids == futures[0].result().ids
    assert batcher.is_ready()
    batcher.close()


def test_a_dead_worker_is_restarted_and_readiness_tells_the_truth(model):
    failures = [1]

    class Observer:
        def batch_done(self, size, seconds, tokens):
            if failures[0]:
                failures[0] -= 1
                raise RuntimeError("observer bug")  # escapes the batch: the worker thread dies

        def queue_depth(self, depth):
            pass

    batcher = Batcher(model, BatcherConfig(max_wait_ms=0, warmup=False, restart_delay_s=0.3), observer=Observer())
    wait_until(batcher.is_ready)
    first = batcher.submit("abc", max_length=4)
    assert first.result(timeout=30).ids  # answered before the observer failed
    wait_until(lambda: not batcher.is_ready())  # dead, not yet replaced
    queued = batcher.submit("cab", max_length=4)  # waits for the replacement
    wait_until(batcher.is_ready)
    assert queued.result(timeout=30).ids == model.generate("cab", max_length=4)[0].ids
    batcher.close()
    assert not batcher.is_ready()


def test_a_deadline_stops_decoding_between_steps(model):
    steps = [0]
    batcher = Batcher(Wrapped(model, slowed(steps)), BatcherConfig(warmup=False, max_wait_ms=0))
    long = batcher.submit("abc", min_length=2000, max_length=2000, timeout=0.1)
    with pytest.raises(RequestTimeout, match="while it was being decoded"):
        long.result(timeout=30)
    assert 0 < steps[0] < 1000  # stopped long before its 2000 steps
    assert batcher.submit("abc", max_length=4).result(timeout=30).ids  # the worker is free again
    batcher.close()


def test_cancelling_a_running_request_stops_its_batch(model):
    steps = [0]
    batcher = Batcher(Wrapped(model, slowed(steps)), BatcherConfig(warmup=False, max_wait_ms=0))
    long = batcher.submit("abc", strategy="beam", beam_size=4, min_length=2000, max_length=2000)
    wait_until(lambda: steps[0] > 5)
    assert not long.cancel()  # already running: it cannot be marked cancelled, but it is abandoned
    with pytest.raises(CancelledError):
        long.result(timeout=30)
    assert steps[0] < 1000
    batcher.close()


def test_close_stops_in_flight_work_after_its_timeout(model):
    steps = [0]
    batcher = Batcher(Wrapped(model, slowed(steps)), BatcherConfig(warmup=False, max_wait_ms=0))
    long = batcher.submit("abc", min_length=2000, max_length=2000)
    queued = batcher.submit("abc", max_length=3)
    wait_until(lambda: steps[0] > 5)
    started = time.monotonic()
    batcher.close(drain=True, timeout=0.2)
    assert time.monotonic() - started < 10
    with pytest.raises(BatcherClosed, match="while this request was being decoded"):
        long.result(timeout=1)
    with pytest.raises(BatcherClosed):
        queued.result(timeout=1)
    assert not batcher.busy()


def test_a_request_is_admitted_whole_or_not_at_all(model):
    batcher, gate = blocked_batcher(model, max_batch_size=1, max_queue=4)
    running = batcher.submit("abc", max_length=3)
    wait_until(lambda: batcher.queue_depth() == 0)
    with pytest.raises(Overloaded, match="queue full"):
        batcher.submit_many(["abc"] * 7, max_length=3)
    assert batcher.queue_depth() == 0  # none of the 7 was queued
    with pytest.raises(TypeError, match=r"inputs\[2\]"):
        batcher.submit_many(["abc", "abc", 5], max_length=3)
    assert batcher.queue_depth() == 0
    few = batcher.submit_many(["abc", "cab"], max_length=3)
    gate.set()
    assert [f.result(timeout=30).ids for f in few] == [r.ids for r in model.generate(["abc", "cab"], max_length=3)]
    assert running.result(timeout=30).ids
    batcher.close()


def test_request_work_is_capped(small_bundle):
    capped = s2s_runtime.load(small_bundle, device="cpu", limits=s2s_runtime.RequestLimits(max_request_tokens=100))
    with Batcher(capped, BatcherConfig(warmup=False)) as batcher:
        with pytest.raises(ValueError, match="more than max_request_tokens 100"):
            batcher.submit_many(["abc"] * 3, strategy="beam", beam_size=4, max_length=10)
        assert len(batcher.submit_many(["abc"] * 2, strategy="beam", beam_size=4, max_length=10)) == 2


def test_streams_go_through_the_queue_limits_and_deadlines(model):
    expected = [t.token for t in model.generate_stream("hello", max_length=8)]
    with Batcher(model, BatcherConfig(max_wait_ms=0, warmup=False)) as batcher:
        assert [t.token for t in batcher.stream("hello", max_length=8)] == expected

        async def read():
            return [t.token async for t in batcher.stream("hello", max_length=8)]

        assert asyncio.run(read()) == expected
        with pytest.raises(ValueError, match="beam search is not streamable"):
            batcher.stream("hello", strategy="beam")
        with pytest.raises(TypeError, match=r"inputs\[0\]"):
            batcher.stream(7)
    steps = [0]
    batcher = Batcher(Wrapped(model, slowed(steps)), BatcherConfig(warmup=False, max_wait_ms=0, max_streams=1))
    late = batcher.stream("abc", min_length=2000, max_length=2000, timeout=0.1)
    with pytest.raises(Overloaded, match="streams open"):
        batcher.stream("abc")
    with pytest.raises(RequestTimeout):
        list(late)
    assert steps[0] < 1000
    again = batcher.stream("abc", min_length=2000, max_length=2000)  # the slot is free again
    wait_until(lambda: steps[0] > 20)
    again.close()
    with pytest.raises(CancelledError):
        list(again)
    batcher.close()


def test_a_batch_reaches_the_decoder_whole(model):
    """BatcherConfig.max_batch_size is the one batch size of a service: 100 collected requests are one generation of
    100 rows, not split by any other default."""
    sizes, gate = [], threading.Event()

    def around(method, args, kwargs):
        gate.wait(30)
        sizes.append(len(args[0]))
        return method(*args, **kwargs)

    batcher = Batcher(Wrapped(model, around), BatcherConfig(max_batch_size=100, max_wait_ms=0, warmup=False))
    first = batcher.submit("abc", max_length=3)
    wait_until(lambda: batcher.queue_depth() == 0)  # the worker holds `first`
    futures = [batcher.submit(word, max_length=3) for word in random_sources(100, seed=9)]
    gate.set()
    assert all(f.result(timeout=60).ids is not None for f in [first] + futures)
    batcher.close()
    assert sizes == [1, 100]


def test_cancelled_requests_give_their_queue_slots_up(model):
    """Eight queued callers cancel (or, over HTTP, disconnect): the next live request is admitted, not Overloaded."""
    batcher, gate = blocked_batcher(model, max_batch_size=1, max_queue=8)
    first = batcher.submit("abc", max_length=3)
    wait_until(lambda: batcher.queue_depth() == 0)  # the worker holds `first`
    queued = [batcher.submit("abc", max_length=3) for _ in range(8)]
    for future in queued:
        assert future.cancel()
    live = batcher.submit("abc", max_length=3)
    gate.set()
    assert live.result(timeout=30).text and first.result(timeout=30).text
    batcher.close()


def test_a_stream_read_on_a_loop_closed_without_shutdown_keeps_the_worker_alive(model):
    """The stream's async reader is left suspended on a loop that is closed without shutdown_asyncgens: waking it
    used to raise inside the worker's error handler and kill the worker for good (every later request hung)."""
    import asyncio

    batcher = Batcher(model, BatcherConfig(warmup=False, max_wait_ms=0, restart_delay_s=0))
    stream = batcher.stream("abcdefgh", max_length=8)
    loop = asyncio.new_event_loop()

    async def first_token():
        async for token in stream:
            return token

    assert loop.run_until_complete(first_token()) is not None
    loop.close()  # the async generator (and its waker) is left behind
    assert batcher.submit("abc", max_length=3).result(timeout=30).text
    assert batcher.is_ready()
    batcher.close()


def test_waiting_inside_a_done_callback_is_refused_not_a_deadlock(model):
    """A done callback runs on the worker that answered; waiting there on another request of the same batcher
    would wait for that very worker."""
    batcher = Batcher(model, BatcherConfig(warmup=False, max_wait_ms=0))
    seen = []

    def callback(_):
        second = batcher.submit("abd", max_length=3)
        try:
            second.result(timeout=30)
        except RuntimeError as error:
            seen.append(str(error))

    batcher.submit("abc", max_length=3).add_done_callback(callback)
    wait_until(lambda: seen)
    assert "would never end" in seen[0]
    assert batcher.submit("abc", max_length=3).result(timeout=30).text
    batcher.close()


def test_a_batcher_dropped_without_close_releases_its_workers_and_model(model):
    import gc
    import weakref

    fresh = s2s_runtime.load(model.bundle.root, device="cpu")
    before = set(threading.enumerate())
    batcher = Batcher(fresh, BatcherConfig(warmup=False, workers=2))
    assert batcher.submit("abc", max_length=3).result(timeout=30).text
    model_ref = weakref.ref(fresh)
    workers = [t for t in set(threading.enumerate()) - before if t.name.startswith("s2s-batcher-")]
    assert len(workers) == 2
    del batcher, fresh
    gc.collect()
    wait_until(lambda: not any(t.is_alive() for t in workers))
    gc.collect()
    assert model_ref() is None
