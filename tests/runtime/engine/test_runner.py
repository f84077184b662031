"""Decoder runners: IO binding (host buffers or on-device gather) must compute exactly what session.run does."""

import numpy as np
import pytest

import s2s_runtime
from s2s_export.runtime_graphs import GRAPHS_DIR, runtime_graph_files
from s2s_runtime.engine.runner import StepRunner
from tests.conftest import array_runner, bound_runner, cpu_ortvalue_device, drive, random_sources


@pytest.mark.parametrize("with_attention", [False, True])
def test_bound_runners_equal_the_plain_runner(model, with_attention):
    states, statics = model.engine.encoder.encode([[3, 4, 5], [6, 7], [8, 9, 10, 11], [3], [5, 5, 5, 5, 5]])
    graph = model.engine.step_graph
    expected = drive(array_runner(graph, states, statics, with_attention))
    host = drive(bound_runner(graph, states, statics, with_attention))
    device = cpu_ortvalue_device()  # the CUDA code path, run on the CPU
    on_device = drive(bound_runner(graph, states, statics, with_attention, device=device))
    for got in (host, on_device):
        assert len(got) == len(expected)
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)


def test_generation_is_identical_with_and_without_io_binding(model):
    bundle = model.bundle.root
    plain = s2s_runtime.load(bundle, device="cpu", io_binding=False)
    sources = random_sources(20, seed=3)
    for options in (dict(), dict(strategy="beam", beam_size=3, num_hypotheses=2), dict(strategy="sample", seed=2)):
        a, b = model.generate(sources, **options), plain.generate(sources, **options)
        assert [[h.ids for h in r.hypotheses] for r in a] == [[h.ids for h in r.hypotheses] for r in b]
        assert [r.score for r in a] == [r.score for r in b]


def test_shipped_gather_graphs_are_up_to_date():
    assert {p.name: p.read_bytes() for p in GRAPHS_DIR.glob("*.onnx")} == runtime_graph_files()


def test_in_graph_greedy_choice_equals_argmax_of_the_log_probs(model):
    states, statics = model.engine.encoder.encode([[3, 4, 5], [6, 7], [8, 9, 10, 11]])
    graph = model.engine.step_graph
    assert graph.ranks  # the top-1 candidate is the greedy choice
    for make in (
        lambda: array_runner(graph, states, statics, False),
        lambda: bound_runner(graph, states, statics, False),
    ):
        reference, chained = make(), make()
        previous = np.array([2, 2, 2])
        ids, log_probs = chained.greedy_step(previous)
        for step in range(5):
            expected = reference.step(previous)[0]
            np.testing.assert_array_equal(ids, expected.argmax(axis=1))
            np.testing.assert_array_equal(log_probs, expected.max(axis=1))
            previous = expected.argmax(axis=1)
            if step == 2:  # compaction keeps the chained ids of the kept rows
                for runner in (reference, chained):
                    runner.select(np.array([2, 0]))
                previous = previous[[2, 0]]
            ids, log_probs = (np.array(v) for v in chained.greedy_step())


@pytest.mark.parametrize(
    "top_k, kinds",
    [(1, ["greedy", "top", "full", "greedy", "full", "top", "greedy"]), (3, ["top", "full", "full", "top"])],
)
def test_bound_runner_binds_each_output_kind_when_first_read(model, top_k, kinds):
    """A bound runner binds the log-probs, the greedy choice and the ranked candidates only once a step reads them:
    whatever kind comes first, and after a compaction re-binds, every step returns what session.run gives. With
    top_k = 1 the ranked candidate is the greedy choice, in the same (chained) buffers."""
    states, statics = model.engine.encoder.encode([[3, 4, 5], [6, 7], [8, 9, 10, 11]])
    graph = model.engine.step_graph
    runner = bound_runner(graph, states, statics, False, top_k=top_k)
    assert runner.selects == (top_k == 1)
    reference = array_runner(graph, states, statics, False)
    previous = np.array([2, 2, 2])
    for step, kind in enumerate(kinds):
        expected = reference.step(previous)[0]
        if kind == "greedy":
            ids, log_probs = runner.greedy_step(previous)
            np.testing.assert_array_equal(ids, expected.argmax(axis=1))
            np.testing.assert_array_equal(log_probs, expected.max(axis=1))
        elif kind == "top":
            values, ids, _ = runner.top_k_step(previous)
            order = np.argsort(-expected, axis=1, kind="stable")[:, :top_k]
            np.testing.assert_array_equal(ids, order)
            np.testing.assert_array_equal(values, np.take_along_axis(expected, order, axis=1))
        else:
            np.testing.assert_array_equal(runner.step(previous)[0], expected)
        previous = expected.argmax(axis=1)
        if step == 1:  # fewer rows: new buffers, every binding made again
            for r in (runner, reference):
                r.select(np.array([2, 0]))
            previous = previous[[2, 0]]


def test_reused_runners_are_never_shared_by_interleaved_calls(model):
    """A stream in progress keeps its runner; calls in between on the same thread get their own."""
    plain = s2s_runtime.load(model.bundle.root, device="cpu", io_binding=False)
    sources = [
        s for s in random_sources(60, seed=5, low=3, high=3) if len(plain.generate(s, max_length=8)[0].ids) >= 2
    ][:3]
    expected = {s: plain.generate(s, max_length=8)[0].ids for s in sources}
    assert len(expected) == 3
    stream = model.generate_stream(sources[0], max_length=8)
    first = next(stream)
    assert model.generate(sources[1], max_length=8)[0].ids == expected[sources[1]]  # same shape: reuse candidate
    assert [first.id] + [t.id for t in stream] == expected[sources[0]]
    for source in sources[::-1] + sources:  # sequential reuse with fresh states each time
        assert model.generate(source, max_length=8)[0].ids == expected[source]


def test_runners_are_reused_per_shape(model, monkeypatch):
    """Single inputs of alternating lengths (a source length is part of an attention model's shapes) re-use one
    runner per shape instead of re-allocating and re-binding each call, and still decode each input afresh."""
    import s2s_runtime.engine.runners as runner_module  # where Runners makes them

    fresh = s2s_runtime.load(model.bundle.root, device="cpu")
    created = []
    real = runner_module.BoundBuffers

    class Counting(real):
        def __init__(self, *args, **kwargs):
            created.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(runner_module, "BoundBuffers", Counting)
    sources = ["ab", "abcdef", "abc"] * 3
    plain = s2s_runtime.load(model.bundle.root, device="cpu", io_binding=False)
    expected = [r.ids for r in plain.generate(sources, max_batch_size=1)]
    assert [fresh.generate(s)[0].ids for s in sources] == expected
    assert len(created) <= 3  # one per source length (the GRU model without attention even shares one)


def test_ranked_candidates_are_the_best_log_probs_in_order(model):
    """top_k_step (beam search's in-graph candidates) returns what sorting the full log-probs gives, and the states
    follow the ids fed, whichever runner."""
    states, statics = model.engine.encoder.encode([[3, 4, 5], [6, 7], [8, 9, 10, 11]])
    graph = model.engine.step_graph
    assert graph.ranks
    for runner in (
        array_runner(graph, states, statics, True, top_k=4),
        bound_runner(graph, states, statics, True, top_k=4),
    ):
        reference, previous = array_runner(graph, states, statics, True), np.array([2, 2, 2])
        for _ in range(4):
            log_probs, attention = reference.step(previous)
            values, ids, weights = runner.top_k_step(previous)
            order = np.argsort(-log_probs, axis=1, kind="stable")[:, :4]  # (rows, 4)
            np.testing.assert_array_equal(ids, order)
            np.testing.assert_array_equal(values, np.take_along_axis(log_probs, order, axis=1))
            np.testing.assert_array_equal(weights, attention)
            previous = order[:, 1].copy()  # not the argmax: the states must follow the ids fed


def test_beam_search_ranks_in_the_graph_unless_it_needs_the_full_log_probs(model, monkeypatch):
    fresh = s2s_runtime.load(model.bundle.root, device="cpu")  # its load-time probe steps: counted from here on
    calls = {"step": 0, "top_k_step": 0}
    for name in calls:
        real = getattr(StepRunner, name)
        monkeypatch.setattr(
            StepRunner,
            name,
            lambda self, *a, _real=real, _name=name: (calls.__setitem__(_name, calls[_name] + 1), _real(self, *a))[1],
        )
    fresh.generate(["abc", "de"], strategy="beam", beam_size=3)
    assert calls["top_k_step"] > 0 and calls["step"] == 0
    fresh.generate(["abc", "de"], strategy="beam", beam_size=3, no_repeat_ngram_size=2)
    assert calls["step"] > 0


def test_idle_runners_are_bounded_by_bytes_per_process_whatever_the_threads(model):
    """Runners kept for reuse are one pool per model and process (not per thread), least recently used leaving first
    once their bytes pass idle_buffer_bytes; a runner larger than the whole budget is never kept."""
    from concurrent.futures import ThreadPoolExecutor

    from s2s_runtime.engine.runners import IDLE_RUNNERS

    limit = 64 * 1024
    fresh = s2s_runtime.load(model.bundle.root, device="cpu", idle_buffer_bytes=limit)
    runners = fresh.engine.runners
    lengths = range(2, 14)

    def decode(length):
        fresh.generate(["a" * length] * (1 + length % 5), strategy="beam", beam_size=4)
        assert runners.idle_bytes() <= limit

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(decode, [*lengths, *lengths]))
    assert 0 < runners.idle_bytes() <= limit and len(runners._idle) <= IDLE_RUNNERS
    fresh.generate(["abcdefghij"] * 64, strategy="beam", beam_size=8)  # its buffers alone pass the budget
    assert runners.idle_bytes() <= limit
    assert all(buffers.nbytes <= limit for buffers in runners._idle.values())
