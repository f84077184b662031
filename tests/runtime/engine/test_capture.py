"""CUDA graph capture (s2s_runtime.engine.capture): buckets, fixed buffers and the fallbacks, run on the CPU provider.

What only a GPU can show — that onnxruntime captures and replays the step — is not tested here (see the README's
Performance section); everything around it is: the captured runner computes what the bound runner computes, through
padding, reordering, compaction and greedy chaining, and batches reuse their bucket's buffers at fixed addresses.
"""

import logging
import threading

import numpy as np
import pytest

import s2s_runtime
from s2s_runtime.engine.capture import GraphCapture, row_bucket, source_bucket
from s2s_runtime.engine.device import OrtValueDevice
from s2s_runtime.engine.runner import StepRunner
from s2s_runtime.engine.sessions import SessionSettings, create_capture_session
from tests.conftest import bound_runner, drive, random_sources


def cpu_capture(model) -> GraphCapture:
    """The capture machinery on the CPU provider (which ignores the gpu_graph_id run option)."""
    return GraphCapture(model.engine.step_graph, OrtValueDevice("cpu", 0, ["CPUExecutionProvider"]))


def captured_runner(capture, states, statics, with_attention, top_k=1):
    """A StepRunner over the capture's buffers for this batch (None: it runs uncaptured); `release` when done."""
    buffers = capture.buffers(states, statics, with_attention, top_k)
    if buffers is None:
        return None
    runner = StepRunner(capture.graph, buffers, top_k)
    runner.release = buffers.release
    return runner


def test_buckets():
    assert [row_bucket(n) for n in (1, 2, 3, 5, 64, 65, 256)] == [1, 2, 4, 8, 64, 128, 256]
    assert row_bucket(257) is None
    assert [source_bucket(n) for n in (1, 8, 9, 31, 33)] == [8, 8, 16, 32, 64]


@pytest.mark.parametrize("with_attention", [False, True])
def test_captured_runner_equals_the_bound_runner(model, with_attention):
    """5 rows padded to a bucket of 8, sources of 5 padded to 8: every output of every step, through compaction and
    a reorder with repeats, equals the unpadded runner's (the padding is masked or never read)."""
    states, statics = model.engine.encoder.encode([[3, 4, 5], [6, 7], [8, 9, 10, 11], [3], [5, 5, 5, 5, 5]])
    expected = drive(bound_runner(model.engine.step_graph, states, statics, with_attention))
    runner = captured_runner(cpu_capture(model), states, statics, with_attention)
    got = drive(runner)
    runner.release()
    assert [a.shape for a in got] == [b.shape for b in expected]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_captured_greedy_chain_equals_the_bound_runner(model):
    states, statics = model.engine.encoder.encode([[3, 4, 5], [6, 7], [8, 9, 10, 11]])
    reference = bound_runner(model.engine.step_graph, states, statics, False)
    runner = captured_runner(cpu_capture(model), states, statics, False)
    for runner_ in (reference, runner):
        runner_.trace = [tuple(np.array(v) for v in runner_.greedy_step(np.array([2, 2, 2])))]
        for step in range(4):
            if step == 1:
                runner_.select(np.array([2, 0]))
            runner_.trace.append(tuple(np.array(v) for v in runner_.greedy_step()))
    runner.release()
    for (ids_a, lp_a), (ids_b, lp_b) in zip(runner.trace, reference.trace, strict=True):
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_allclose(lp_a, lp_b, rtol=1e-5, atol=1e-6)


def test_captured_ranked_candidates_equal_the_bound_runner(model):
    states, statics = model.engine.encoder.encode([[3, 4, 5], [6, 7], [8, 9, 10, 11]])
    reference = bound_runner(model.engine.step_graph, states, statics, True, top_k=4)
    runner = captured_runner(cpu_capture(model), states, statics, True, top_k=4)
    previous = np.array([2, 2, 2])
    for step in range(4):
        expected, got = reference.top_k_step(previous), runner.top_k_step(previous)
        np.testing.assert_array_equal(got[1], expected[1])
        for a, b in ((got[0], expected[0]), (got[2], expected[2])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        previous = expected[1][:, 0].copy()  # a copy: the runner rewrites its candidate buffers at every step
        if step == 1:  # beam-style reorder with repeats
            for runner_ in (reference, runner):
                runner_.select(np.array([2, 2, 0]))
            previous = previous[[2, 2, 0]]
    runner.release()


def test_generation_with_capture_reuses_fixed_buffers_and_matches(model):
    plain = s2s_runtime.load(model.bundle.root, device="cpu")
    captured = s2s_runtime.load(model.bundle.root, device="cpu")
    captured.engine.runners.capture = cpu_capture(captured)
    sources = random_sources(12, seed=4)
    options_list = (
        dict(),
        dict(strategy="beam", beam_size=3, num_hypotheses=2),
        dict(strategy="sample", seed=2),
        dict(return_attention=True),
        dict(min_length=2),
    )
    for options in options_list:
        a, b = captured.generate(sources, **options), plain.generate(sources, **options)
        assert [[h.ids for h in r.hypotheses] for r in a] == [[h.ids for h in r.hypotheses] for r in b]
        assert [r.score for r in a] == pytest.approx([r.score for r in b], abs=1e-4)
    sets = dict(captured.engine.runners.capture._sets)
    assert sets and all(not s.lock.locked() for s in sets.values())  # every batch gave its buffers back
    addresses = {key: s.states[0][next(iter(s.states[0]))].data_ptr() for key, s in sets.items()}
    for options in options_list:  # the same shapes again: the same buffer sets at the same addresses
        captured.generate(sources, **options)
    assert captured.engine.runners.capture._sets == sets
    assert {key: s.states[0][next(iter(s.states[0]))].data_ptr() for key, s in sets.items()} == addresses


def test_busy_or_oversized_batches_run_uncaptured(model):
    captured = s2s_runtime.load(model.bundle.root, device="cpu")
    capture = captured.engine.runners.capture = cpu_capture(captured)
    expected = [r.ids for r in s2s_runtime.load(model.bundle.root, device="cpu").generate(["abc", "de"])]
    states, statics = captured.engine.encoder.encode([[3, 4, 5], [6, 7]])
    holder = captured_runner(capture, states, statics, False)  # holds the (2 rows, 8) buffer set
    assert captured_runner(capture, states, statics, False) is None
    results = []
    worker = threading.Thread(target=lambda: results.extend(captured.generate(["abc", "de"])))
    worker.start()
    worker.join()
    assert [r.ids for r in results] == expected
    holder.release()
    big_states = {
        role: np.repeat(value, 129, axis=captured.engine.step_graph.batch_axes[role]) for role, value in states.items()
    }
    big_statics = {
        role: np.repeat(value, 129, axis=captured.engine.step_graph.batch_axes[role]) for role, value in statics.items()
    }
    assert captured_runner(capture, big_states, big_statics, False) is None  # 258 rows: above the largest bucket


def test_cuda_graph_is_a_logged_no_op_without_cuda(small_bundle, caplog):
    with caplog.at_level(logging.INFO, logger="s2s_runtime"):
        model = s2s_runtime.load(small_bundle, device="cpu", cuda_graph=True)
    assert model.engine.runners.capture is None and "cuda_graph=True has no effect" in caplog.text
    assert model.generate("abc")[0].ids is not None


def test_capture_session_is_refused_where_cuda_does_not_run(small_bundle, caplog):
    """onnxruntime without a working CUDA (here: the CPU package, or onnxruntime-gpu without its libraries) must
    not hand back a CPU session posing as a captured one."""
    model = s2s_runtime.load(small_bundle, device="cpu")
    graph, weights = model.engine.step_graph.spec, model.bundle.read_weights()
    with caplog.at_level(logging.WARNING, logger="s2s_runtime"):
        assert create_capture_session(graph, 0, SessionSettings(cuda_graph=True), weights) is None
    assert "CUDA graph capture is off" in caplog.text
