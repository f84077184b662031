"""The greedy graph (the whole greedy decode in one onnxruntime call) against the step loop it replaces: the same ids
and scores for every architecture of the parity grid, int8 included, whatever the batch; per-row limits; stops;
bundles without one; corrupt or mismatched ones."""

import json
import shutil
import threading

import numpy as np
import pytest

import s2s_runtime
from s2s_export.bundle_export import ExportOptions, export_bundle
from s2s_export.checkpoint import save_checkpoint
from s2s_runtime import BundleError
from s2s_runtime.bundle import sha256_of
from s2s_runtime.generation import DecodingStopped
from tests.conftest import EXTRA_OPTIONS, GRID, as_revision_2, grid_id, random_checkpoint, random_sources

STEP_LOOP = dict(greedy_graph_max_batch=0)


def export(tmp_path, options, **export_options):
    checkpoint = random_checkpoint(11, **options)
    save_checkpoint(checkpoint, tmp_path / "checkpoint")
    return export_bundle(
        tmp_path / "checkpoint",
        tmp_path / "bundle",
        validation_sources=random_sources(8),
        options=ExportOptions(validation_size=8, **export_options),
    )


def fused_calls(model, monkeypatch):
    """Count the greedy graph's calls on `model`."""
    calls = []
    real = model.engine.fused.decode
    monkeypatch.setattr(model.engine.fused, "decode", lambda *a, **k: (calls.append(len(a[0])), real(*a, **k))[1])
    return calls


def assert_same(got, expected):
    assert [r.ids for r in got] == [r.ids for r in expected]
    assert [r.finished for r in got] == [r.finished for r in expected]
    np.testing.assert_allclose([r.score for r in got], [r.score for r in expected], rtol=0, atol=1e-6)


@pytest.mark.parametrize("options", GRID + EXTRA_OPTIONS, ids=grid_id)
def test_greedy_graph_decodes_as_the_step_loop_alone_and_in_every_batch(tmp_path, options, monkeypatch):
    bundle = export(tmp_path, options)
    fused, stepwise = s2s_runtime.load(bundle, device="cpu"), s2s_runtime.load(bundle, device="cpu", **STEP_LOOP)
    assert stepwise.engine.fused is None
    calls = fused_calls(fused, monkeypatch)
    sources = random_sources(8, seed=3, low=1, high=12)
    expected = stepwise.generate(sources)
    for batch_size in (1, 3, 8):  # up to the default cut-over: every call goes through the greedy graph
        assert_same(fused.generate(sources, max_batch_size=batch_size), expected)
    assert sum(calls) == 3 * len(sources) and max(calls) == 8


@pytest.mark.parametrize("options", [GRID[0], GRID[-1], EXTRA_OPTIONS[1], EXTRA_OPTIONS[8]], ids=grid_id)
def test_int8_greedy_graph_decodes_as_the_int8_step_loop(tmp_path, options):
    bundle = export(tmp_path, options, precision="int8")
    assert json.loads((bundle / "manifest.json").read_text())["precision"] == "int8"
    fused, stepwise = s2s_runtime.load(bundle, device="cpu"), s2s_runtime.load(bundle, device="cpu", **STEP_LOOP)
    sources = random_sources(8, seed=4)
    expected = [stepwise.generate([s])[0] for s in sources]
    assert_same(fused.generate(sources, max_batch_size=8), expected)
    assert_same([fused.generate([s])[0] for s in sources], expected)


def test_per_row_max_lengths_empty_and_maximal_inputs(small_bundle, monkeypatch):
    fused = s2s_runtime.load(small_bundle, device="cpu")
    stepwise = s2s_runtime.load(small_bundle, device="cpu", **STEP_LOOP)
    calls = fused_calls(fused, monkeypatch)
    sources = random_sources(6, seed=2, low=3, high=9)
    for max_length in range(1, 7):
        assert_same(fused.generate(sources, max_length=max_length), stepwise.generate(sources, max_length=max_length))
    # Each row its own limit inside one call (the ratio gives each source length its own max length).
    assert_same(fused.generate(sources, max_length_ratio=0.5), stepwise.generate(sources, max_length_ratio=0.5))
    longest = "a" * fused.limits.max_source_length
    mixed = ["", longest, "b", ""]
    assert_same(fused.generate(mixed), stepwise.generate(mixed))
    assert fused.generate([""])[0].ids == [] and calls[-1] == 2  # the empty inputs never reach the graph
    assert len(calls) == 8


def test_the_step_loop_decodes_what_the_greedy_graph_cannot(small_bundle, monkeypatch):
    """Logits rules, forced prefixes, attention output, streams and batches above the cut-over take the step loop."""
    fused = s2s_runtime.load(small_bundle, device="cpu", greedy_graph_max_batch=2)
    calls = fused_calls(fused, monkeypatch)
    stepwise = s2s_runtime.load(small_bundle, device="cpu", **STEP_LOOP)
    sources = random_sources(3, seed=6)
    for options in (
        dict(min_length=2),
        dict(suppress_tokens=["a"]),
        dict(no_repeat_ngram_size=2),
        dict(repetition_penalty=1.5),
        dict(return_attention=True),
        dict(strategy="beam", beam_size=2),
    ):
        assert_same(fused.generate(sources, **options), stepwise.generate(sources, **options))
    assert_same(fused.generate(sources, target_prefix=["a"] * 3), stepwise.generate(sources, target_prefix=["a"] * 3))
    assert_same(fused.generate(sources, max_batch_size=3), stepwise.generate(sources))
    assert list(fused.generate_stream(sources[0])) == list(stepwise.generate_stream(sources[0]))
    assert calls == []
    fused.generate(sources, max_batch_size=2)
    assert calls == [2, 1]


def test_a_stop_ends_the_one_call_of_the_greedy_graph(small_bundle, monkeypatch):
    """A deadline inside the call: the watchdog sets the call's RunOptions.terminate, onnxruntime ends the call, and
    the caller gets DecodingStopped; the model decodes on."""
    model = s2s_runtime.load(small_bundle, device="cpu")
    real = model.engine.fused.session
    in_call = threading.Event()

    class UntilTerminated:  # a call that lasts until terminated, as a Loop of very many steps would
        def run(self, names, feeds, run_options=None):
            in_call.set()
            for _ in range(5000):
                if run_options is not None and run_options.terminate:
                    break
                threading.Event().wait(0.001)
            return real.run(names, feeds, run_options)  # onnxruntime itself refuses a terminated call

    monkeypatch.setattr(model.engine.fused, "session", UntilTerminated())
    plan = model.plan(s2s_runtime.GenerationOptions())
    asked = []

    def stop():  # False when asked before the call; True once the call runs (the watchdog asks then)
        asked.append(in_call.is_set())
        return in_call.is_set()

    with pytest.raises(DecodingStopped):
        model.decode([model.prepare("abc", plan)], plan, stop=stop)
    assert asked[0] is False and asked[-1] is True
    monkeypatch.undo()
    assert_same(model.generate(["abc", "de"]), s2s_runtime.load(small_bundle, device="cpu").generate(["abc", "de"]))


def test_a_bundle_without_a_greedy_graph_decodes_as_before(small_bundle, tmp_path):
    old = as_revision_2(shutil.copytree(small_bundle, tmp_path / "old"))
    model = s2s_runtime.load(old, device="cpu")
    assert model.engine.fused is None and "greedy" not in model.bundle.graphs and model.bundle.weights is None
    sources = random_sources(10, seed=8)
    assert_same(model.generate(sources), s2s_runtime.load(small_bundle, device="cpu").generate(sources))


def test_a_corrupt_or_mismatched_greedy_graph_is_a_bundle_error(small_bundle, tmp_path):
    bundle = shutil.copytree(small_bundle, tmp_path / "bundle")
    greedy = bundle / "greedy.onnx"
    greedy.write_bytes(greedy.read_bytes()[:1000])
    with pytest.raises(BundleError, match=r"greedy\.onnx: sha256 does not match"):
        s2s_runtime.load(bundle, device="cpu")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["greedy.onnx"] = sha256_of(greedy)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"greedy\.onnx: onnxruntime cannot load this graph"):
        s2s_runtime.load(bundle, device="cpu")
    # A greedy graph whose weights differ from the step's (here one output bias changed): decodes differently.
    onnx = pytest.importorskip("onnx")
    shutil.rmtree(bundle)
    shutil.copytree(small_bundle, bundle)
    model = onnx.load(str(greedy))  # with its external data, saved back holding it
    bias = max(model.graph.initializer, key=lambda t: t.name.startswith("step/") and len(t.dims) == 1 and t.dims[0] > 8)
    values = onnx.numpy_helper.to_array(bias).copy()
    values[:] = np.arange(values.size, dtype=values.dtype) * 100.0  # every step now picks the highest id
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(greedy))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["greedy.onnx"] = sha256_of(greedy)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"greedy\.onnx: the greedy graph does not decode as the encoder and step"):
        s2s_runtime.load(bundle, device="cpu")
    assert s2s_runtime.load(bundle, device="cpu", **STEP_LOOP).generate(["abc"])  # not loaded: not checked


def test_the_thin_path_for_one_input_answers_as_the_general_path(small_bundle, monkeypatch):
    """generate("word") with the default options takes the thin path (one call of the greedy graph, nothing around
    it) and gives the Result the general path gives, checks and errors included."""
    model = s2s_runtime.load(small_bundle, device="cpu")
    stepwise = s2s_runtime.load(small_bundle, device="cpu", **STEP_LOOP)
    assert stepwise._single is None
    thin = []
    real = model.engine.fused.decode_one
    monkeypatch.setattr(model.engine.fused, "decode_one", lambda *a: (thin.append(a), real(*a))[1])
    longest = "j" * model.limits.max_source_length
    for source in [*random_sources(20, seed=9), "ab?c", longest, "a"]:
        general = model.generate([source], options=s2s_runtime.GenerationOptions())  # options given: general path
        for answer in (model.generate(source), model.generate([source]), model.generate((source,), max_batch_size=1)):
            assert answer == general == stepwise.generate(source)
    assert len(thin) == 3 * 23 and model.generate("ab?c")[0].unknown_source_tokens == 1
    thin.clear()
    for bad, error, options in (
        (longest + "j", ValueError, {}),
        (5, TypeError, {}),
        ([5], TypeError, {}),
        ("abc", ValueError, {"max_batch_size": 0}),  # batching says nothing about one input, but is checked
        ("abc", TypeError, {"max_batch_tokens": "8"}),
    ):
        with pytest.raises(error) as thin_error:
            model.generate(bad, **options)
        with pytest.raises(error) as general_error:
            stepwise.generate(bad, **options)
        assert str(thin_error.value) == str(general_error.value)
    assert model.generate("")[0].text == "" and thin == []  # the empty input: the general way
    assert model.generate(["ab", "cd"]) == stepwise.generate(["ab", "cd"]) and thin == []
