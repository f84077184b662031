"""Hostile and careless use of the library and of bundles: every case gets a result or its documented error, and the
model answers a normal input exactly as before afterwards. (HTTP cases: tests/serving/http/test_hostile.py.)"""

import json
import os
import random
import shutil
import threading

import numpy as np
import pytest

import s2s_runtime
from s2s_runtime import BundleError, GenerationOptions, RequestLimits
from s2s_runtime.bundle import Bundle, sha256_of
from tests.conftest import as_revision_2

NORMAL = ["abc", "hello", "jihgfedcba"]

# (case name, generate() keyword arguments, expected exception type or None for a result, message fragment)
LIBRARY_CASES = [
    ("huge length penalty", dict(length_penalty=1000), ValueError, r"length_penalty: must be in \[0, 10\]"),
    ("overflowing length penalty", dict(strategy="beam", length_penalty=1e308), ValueError, "length_penalty"),
    ("nan length penalty", dict(length_penalty=float("nan")), ValueError, "length_penalty: must be finite"),
    ("infinite ratio", dict(max_length_ratio=float("inf")), ValueError, "max_length_ratio: must be finite"),
    ("overflowing ratio", dict(max_length_ratio=1e308), ValueError, r"max_length_ratio: must be in \(0, 1000\]"),
    ("ratio past the output cap", dict(max_length_ratio=999.0), ValueError, "max_length_ratio: 999 ×"),
    ("a million beams", dict(strategy="beam", beam_size=1_000_000), ValueError, "beam_size: 1000000 is more than"),
    ("a billion tokens", dict(max_length=1_000_000_000), ValueError, "max_length: 1000000000 is more than"),
    ("endless min length", dict(max_length=100_000_000, min_length=100_000_000), ValueError, "max_length"),
    ("min length past the cap", dict(min_length=100_000), ValueError, "min_length: 100000 is more than"),
    ("ten thousand samples", dict(strategy="sample", num_hypotheses=10_000), ValueError, "num_hypotheses: 10000"),
    ("huge n-gram", dict(no_repeat_ngram_size=10**6), ValueError, "no_repeat_ngram_size"),
    ("underflowing temperature", dict(strategy="sample", temperature=1e-45, seed=1), None, ""),
    ("subnormal temperature", dict(strategy="sample", temperature=5e-324, seed=1), None, ""),
    ("enormous temperature", dict(strategy="sample", temperature=1e308, seed=1), None, ""),
    ("vanishing nucleus", dict(strategy="sample", top_p=1e-50, seed=1), None, ""),
    ("top-k past the vocabulary", dict(strategy="sample", top_k=10**9, seed=1), None, ""),
    ("seed past 2^63", dict(strategy="sample", seed=2**70), ValueError, r"seed: must be < 2\^63"),
    ("negative seed", dict(strategy="sample", seed=-1), ValueError, "seed: must be ≥ 0"),
    ("huge repetition penalty", dict(repetition_penalty=1e308), ValueError, "repetition_penalty"),
    *[
        (f"400-digit {name}", {**extra, name: 10**400}, ValueError, f"{name}: must be finite")
        for name, extra in [
            ("length_penalty", {}),
            ("temperature", dict(strategy="sample")),
            ("top_p", dict(strategy="sample")),
            ("max_length_ratio", {}),
            ("repetition_penalty", {}),
            ("coverage_penalty", dict(strategy="beam")),
        ]
    ],
    ("tiny repetition penalty", dict(repetition_penalty=1e-300), None, ""),
    ("suppressed id past the vocabulary", dict(suppress_tokens=[10**30]), ValueError, "outside the target"),
    ("everything suppressed but eos", dict(suppress_tokens=list(range(4, 16)) + [0, 1, 2]), None, ""),
    ("bool beam size", dict(strategy="beam", beam_size=True), TypeError, "beam_size: expected an int"),
    ("float max length", dict(max_length=3.5), TypeError, "max_length: expected an int"),
    ("string options", dict(options="beam"), TypeError, "options: expected a GenerationOptions, got str"),
    ("unknown option", dict(beam=3), TypeError, "unknown generation option 'beam'"),
    ("zero batch size", dict(max_batch_size=0), ValueError, "max_batch_size: must be ≥ 1"),
    ("one-token batches", dict(max_batch_tokens=1), None, ""),
    (
        "unknown prefix token",
        dict(target_prefix=["ab?", None, None]),
        ValueError,
        r"target_prefix\[0\]: token '\?' is not in the target vocabulary",
    ),
    (
        "prefix past the length limit",
        dict(target_prefix=["abcdefghij" * 3, None, None], max_length=5),
        ValueError,
        r"target_prefix\[0\]: 30 tokens, more than the max length 5",
    ),
    ("endless prefix", dict(target_prefix=["a" * 10**6, None, None]), ValueError, r"target_prefix\[0\]: more than"),
    ("prefix as one string", dict(target_prefix="abc"), ValueError, "one prefix"),
    ("prefix count", dict(target_prefix=[None]), ValueError, "one prefix"),
    ("prefix of numbers", dict(target_prefix=[[1, 2], None, None]), TypeError, r"target_prefix\[0\]"),
    ("attention without attention", dict(return_attention=True), None, ""),
]


@pytest.fixture(scope="module")
def model(small_bundle):
    return s2s_runtime.load(small_bundle, device="cpu")


@pytest.fixture(scope="module")
def serial(model):
    return [r.ids for r in model.generate(NORMAL)]


@pytest.mark.parametrize("name, kwargs, error, message", LIBRARY_CASES, ids=[c[0] for c in LIBRARY_CASES])
def test_hostile_options_get_a_result_or_their_documented_error(model, serial, name, kwargs, error, message):
    inputs = kwargs.pop("inputs", NORMAL)
    if error is None:
        results = model.generate(inputs, **kwargs)
        assert len(results) == len(inputs)
        for result in results:  # real token ids and a real score (the underflow cases: see the test below)
            assert all(0 <= i < len(model.bundle.target.vocab) for i in result.ids) and np.isfinite(result.score)
            assert len(result.ids) <= model.max_output_length
    else:
        with pytest.raises(error, match=message):
            model.generate(inputs, **kwargs)
    assert [r.ids for r in model.generate(NORMAL)] == serial  # the model is unharmed


@pytest.mark.parametrize(
    "inputs, error, message",
    [
        (None, TypeError, "inputs: expected a string"),
        ([None], TypeError, r"inputs\[0\]: expected a string or a list of token strings"),
        ([[1, 2]], TypeError, r"inputs\[0\]"),
        ("a" * 10_000_000, ValueError, r"inputs\[0\]: 10000000 source tokens exceed the bundle's max_source_length"),
        ([["a"] * 5000], ValueError, r"inputs\[0\]: 5000 source tokens exceed"),
    ],
)
def test_hostile_inputs(model, serial, inputs, error, message):
    with pytest.raises(error, match=message):
        model.generate(inputs)
    assert [r.ids for r in model.generate(NORMAL)] == serial


def test_odd_text_is_an_ordinary_input(model, serial):
    odd = ["\x00\x01", "\ud800", "é" * 50, " \t\n", "<pad></s>"]
    results = model.generate(odd, max_length=6)
    assert [r.unknown_source_tokens for r in results] == [2, 1, 50, 3, 7]  # a and d are letters of the vocabulary
    assert [r.ids for r in model.generate(NORMAL)] == serial


def test_scoring_and_streaming_misuse(model):
    with pytest.raises(ValueError, match=r"targets\[0\]: token '\?' is not in the target vocabulary"):
        model.score(["abc"], ["a?"])
    with pytest.raises(ValueError, match=r"sources\[0\]: an empty source cannot be scored"):
        model.score([""], ["a"])
    with pytest.raises(ValueError, match="beam search is not streamable"):
        list(model.generate_stream("abc", strategy="beam"))


def test_sampling_at_extreme_settings_keeps_the_most_likely_token(model):
    """At a vanishing temperature or nucleus, sampling is greedy decoding, never NaN or padding."""
    greedy = [r.ids for r in model.generate(NORMAL)]
    for options in (dict(temperature=1e-45), dict(top_p=1e-50), dict(top_k=1)):
        sampled = model.generate(NORMAL, strategy="sample", seed=4, **options)
        assert [r.ids for r in sampled] == greedy, options


def test_caps_are_configurable_per_model(small_bundle):
    tight = s2s_runtime.load(small_bundle, device="cpu", limits=RequestLimits(max_beam_size=2, max_output_length=5))
    assert tight.max_output_length == 5
    assert all(len(r.ids) <= 5 for r in tight.generate(NORMAL))  # the bundle's rule is clipped to the cap
    with pytest.raises(ValueError, match=r"beam_size: 3 is more than this model allows \(max_beam_size = 2"):
        tight.generate("abc", strategy="beam", beam_size=3)
    with pytest.raises(ValueError, match="max_length: 6 is more than this model allows"):
        tight.generate("abc", max_length=6)
    with pytest.raises(ValueError, match="max_output_length: must be an int ≥ 1"):
        RequestLimits(max_output_length=0)


# ---- bundles ------------------------------------------------------------------------------------------------------


@pytest.fixture
def bundle(small_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(small_bundle, copy)
    return copy


def edit_manifest(bundle, change, **dump):
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest, **dump))


def edit_vocab(bundle, name, change):
    vocab = json.loads((bundle / name).read_text())
    change(vocab)
    (bundle / name).write_text(json.dumps(vocab))
    edit_manifest(bundle, lambda m: m["files"].__setitem__(name, sha256_of(bundle / name)))


def shuffled(mapping, rng):
    """The same JSON value with every object's keys in a random order."""
    if isinstance(mapping, dict):
        keys = list(mapping)
        rng.shuffle(keys)
        return {key: shuffled(mapping[key], rng) for key in keys}
    if isinstance(mapping, list):
        return [shuffled(item, rng) for item in mapping]
    return mapping


def test_manifest_key_order_changes_nothing(bundle, small_bundle):
    """Encoder outputs and step inputs are bound by name: listing state.c before state.h, or re-saving the
    manifest with sorted keys, gives the same outputs."""
    sources = ["abc", "hello", "jihgfedcba", "a"]
    expected = [(r.ids, r.score) for r in s2s_runtime.load(small_bundle, device="cpu").generate(sources)]
    for seed in range(3):
        edit_manifest(bundle, lambda m, seed=seed: m.update(shuffled(m, random.Random(seed))))
        assert [(r.ids, r.score) for r in s2s_runtime.load(bundle, device="cpu").generate(sources)] == expected
    edit_manifest(bundle, lambda m: None, sort_keys=True)
    assert [(r.ids, r.score) for r in s2s_runtime.load(bundle, device="cpu").generate(sources)] == expected


def test_manifest_with_reversed_encoder_outputs(tmp_path):
    """An LSTM: state.c listed before state.h, graph names unchanged."""
    from tests.conftest import random_checkpoint, write_bundle

    directory = write_bundle(random_checkpoint(2, hidden_size=16, cell="lstm", num_layers=2), tmp_path)
    sources = ["abc", "hello", "jihgfedcba"]
    expected = [r.ids for r in s2s_runtime.load(directory, device="cpu").generate(sources)]

    def reverse_outputs(manifest):
        outputs = manifest["graphs"]["encoder"]["outputs"]
        manifest["graphs"]["encoder"]["outputs"] = dict(reversed(list(outputs.items())))

    edit_manifest(directory, reverse_outputs)
    assert (
        next(iter(json.loads((directory / "manifest.json").read_text())["graphs"]["encoder"]["outputs"])) == "state.c"
    )
    assert [r.ids for r in s2s_runtime.load(directory, device="cpu").generate(sources)] == expected


def open_in_thread(path):
    """Bundle.open in a thread: a bundle that made it open a FIFO would block there, and the test sees it."""
    outcome = {}

    def target():
        try:
            outcome["bundle"] = Bundle.open(path)
        except Exception as error:  # noqa: BLE001 (the test asserts on whatever it was)
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "opening the bundle blocked: it read a file outside the bundle"
    return outcome


def test_symlinked_vocabulary_is_refused_before_anything_outside_is_read(bundle, tmp_path):
    outside = tmp_path / "outside.fifo"
    os.mkfifo(outside)  # opening it for reading would block until a writer comes: it must never be opened
    (bundle / "source_vocab.json").unlink()
    (bundle / "source_vocab.json").symlink_to(outside)
    outcome = open_in_thread(bundle)
    assert isinstance(outcome.get("error"), BundleError)
    assert "source_vocab.json: is a symbolic link" in str(outcome["error"])


def test_special_files_are_refused(bundle, tmp_path):
    (bundle / "manifest.json").rename(tmp_path / "real.json")
    (bundle / "manifest.json").symlink_to(tmp_path / "real.json")
    with pytest.raises(BundleError, match=r"manifest\.json: is a symbolic link"):
        Bundle.open(bundle)
    (bundle / "manifest.json").unlink()
    (bundle / "manifest.json").mkdir()
    with pytest.raises(BundleError, match=r"manifest\.json: is not a regular file"):
        Bundle.open(bundle)
    (bundle / "manifest.json").rmdir()
    os.mkfifo(bundle / "manifest.json")
    assert isinstance(open_in_thread(bundle).get("error"), BundleError)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.__setitem__("config", []), "'config' has the wrong type"),
        (lambda m: m["config"].__setitem__("source_eos", "yes"), "config.source_eos must be true or false"),
        (lambda m: m["config"].__setitem__("source_vocab_size", 99), "config.source_vocab_size 99 disagrees"),
        (lambda m: m["files"].__setitem__("encoder.onnx", 5), r"files.encoder.onnx must be a sha256 hex digest"),
        (lambda m: m["limits"]["max_target_length"].__setitem__("ratio", 1e308), "ratio must be in"),
        (lambda m: m["limits"]["max_target_length"].__setitem__("ratio", True), "ratio must be in"),
        (lambda m: m["limits"]["max_target_length"].__setitem__("ratio", 10**400), "ratio must be in"),
        (lambda m: m["decoding"].__setitem__("memory_bias_padding", -(10**400)), "memory_bias_padding must be"),
        (lambda m: m["files"].__setitem__("enc\u0000oder.onnx", "0" * 64), "files"),
        (lambda m: m["limits"]["max_target_length"].__setitem__("offset", 10**9), "offset must be in"),
        (lambda m: m["limits"].__setitem__("max_source_length", 0), "max_source_length must be in"),
        (lambda m: m["decoding"].__setitem__("eos_id", 2), "decoding.eos_id 2 is not the target vocabulary's eos"),
        (
            lambda m: m["graphs"]["decoder_step"]["outputs"]["log_probs"].__setitem__("shape", ["batch", "vocab"]),
            "log_probs scores vocab tokens, the target vocabulary has 16",
        ),
        (
            lambda m: m["graphs"]["encoder"]["outputs"]["memory"].__setitem__("name", "state_h"),
            "names one graph tensor under two roles",
        ),
        (lambda m: m["graphs"].__setitem__("encoder", "encoder.onnx"), "'encoder' has the wrong type"),
    ],
)
def test_malformed_manifests_are_bundle_errors(bundle, change, message):
    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match=message):
        s2s_runtime.load(bundle, device="cpu")


def test_deeply_nested_manifest(bundle):
    (bundle / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nested deeper than"):
        Bundle.open(bundle)


def test_vocabulary_sizes_are_checked_against_the_graphs(bundle):
    edit_vocab(bundle, "target_vocab.json", lambda v: v["tokens"].pop())  # shorter than the graph's output
    edit_manifest(bundle, lambda m: m["config"].pop("target_vocab_size"))
    with pytest.raises(BundleError, match="log_probs scores 16 tokens, the target vocabulary has 15"):
        s2s_runtime.load(bundle, device="cpu")


def test_source_vocabulary_longer_than_the_encoder_table(bundle):
    edit_vocab(bundle, "source_vocab.json", lambda v: v["tokens"].extend(["x", "y", "z"]))
    edit_manifest(bundle, lambda m: m["config"].__setitem__("source_vocab_size", 16))
    with pytest.raises(
        BundleError,
        match=r"encoder.onnx: the graph fails on source id 15, the highest of the "
        "source vocabulary",
    ):
        s2s_runtime.load(bundle, device="cpu")


def test_declared_fixed_sizes_are_checked_against_the_graph(bundle):
    def wrong_hidden(manifest):
        for kind, direction in (("encoder", "outputs"), ("decoder_step", "inputs"), ("decoder_step", "outputs")):
            spec = manifest["graphs"][kind][direction]["state.h"]
            spec["shape"] = [spec["shape"][0], "batch", 17]

    edit_manifest(bundle, wrong_hidden)
    with pytest.raises(BundleError, match=r"has size 16 on axis 2, manifest\.json declares 17"):
        s2s_runtime.load(bundle, device="cpu")


def test_missing_roles_are_bundle_errors(bundle):
    edit_vocab(bundle, "target_vocab.json", lambda v: v["specials"].pop("eos"))
    edit_manifest(bundle, lambda m: m["target"]["special_ids"].pop("eos"))
    with pytest.raises(BundleError, match="is not the target vocabulary's eos token"):
        s2s_runtime.load(bundle, device="cpu")


def test_source_eos_needs_an_eos_token(bundle):
    edit_vocab(bundle, "source_vocab.json", lambda v: v["specials"].pop("eos"))
    edit_manifest(
        bundle, lambda m: (m["source"]["special_ids"].pop("eos"), m["config"].__setitem__("source_eos", True))
    )
    with pytest.raises(BundleError, match=r"config\.source_eos is true but the source vocabulary has no 'eos'"):
        s2s_runtime.load(bundle, device="cpu")


@pytest.mark.parametrize("weights_bin", [True, False], ids=["bundle-with-weights.bin", "bundle-without"])
def test_graphs_with_external_data_but_the_verified_weights_bin_are_refused(bundle, tmp_path, monkeypatch, weights_bin):
    """onnxruntime would read external data relative to the current directory: the runtime must not let it. The
    only external data a graph may name is the bundle's own weights.bin, verified and handed over in memory."""
    onnx = pytest.importorskip("onnx")
    if not weights_bin:
        as_revision_2(bundle)
    location = "elsewhere.bin" if weights_bin else "weights.bin"
    encoder = onnx.load(str(bundle / "encoder.onnx"))
    onnx.save_model(
        encoder, str(bundle / "encoder.onnx"), save_as_external_data=True, location=location, size_threshold=0
    )
    shutil.copy(bundle / location, tmp_path / location)
    monkeypatch.chdir(tmp_path)  # where onnxruntime would find the weights if it looked
    edit_manifest(bundle, lambda m: m["files"].__setitem__("encoder.onnx", sha256_of(bundle / "encoder.onnx")))
    with pytest.raises(
        BundleError,
        match=r"encoder\.onnx: onnxruntime cannot load this graph \(it keeps tensors in "
        "external data files",
    ):
        s2s_runtime.load(bundle, device="cpu")


def test_invalid_vocabulary_files(bundle):
    (bundle / "target_vocab.json").write_text('{"tokens": ' + "[" * 5000 + "]" * 5000 + "}")
    edit_manifest(
        bundle, lambda m: m["files"].__setitem__("target_vocab.json", sha256_of(bundle / "target_vocab.json"))
    )
    with pytest.raises(BundleError, match=r"target_vocab\.json: JSON nested deeper than"):
        s2s_runtime.load(bundle, device="cpu")


def test_generation_options_object_is_validated(model):
    with pytest.raises(TypeError, match="options: expected a GenerationOptions"):
        model.plan({"strategy": "beam"})
    assert model.plan(GenerationOptions()) is model.plan(GenerationOptions())  # checked once per options


def test_a_bundle_allowing_huge_sources_is_capped_by_request_limits(bundle):
    """A bundle that allows 1,000,000-character sources let one request take 2 GB and overrun its deadline (the
    encoder cannot be interrupted): RequestLimits.max_source_length (1,024 by default) caps it whatever the bundle
    says, and an operator can raise it."""
    edit_manifest(bundle, lambda m: m["limits"].__setitem__("max_source_length", 1_000_000))
    model = s2s_runtime.load(bundle, device="cpu")
    with pytest.raises(
        ValueError, match=r"inputs\[0\]: 5000 source tokens exceed RequestLimits.max_source_length 1024"
    ):
        model.generate("a" * 5000)
    assert model.max_output_length <= model.bundle.default_max_length(1024)
    raised = s2s_runtime.load(bundle, device="cpu", limits=RequestLimits(max_source_length=6000))
    assert raised.generate("a" * 5000, max_length=2)[0].ids


def test_a_manifest_binding_state_h_and_state_c_the_wrong_way_round_is_refused(tmp_path):
    """The graph names of state.h and state.c swapped everywhere in the manifest used to load and answer wrongly
    ("hello" → "OW"); the load-time probe checks an LSTM's |h| ≤ |tanh(c)|."""
    from tests.conftest import random_checkpoint, write_bundle

    for cell, bridge in (("lstm", "copy"), ("lstm", "linear")):
        directory = write_bundle(random_checkpoint(2, hidden_size=16, cell=cell, bridge=bridge), tmp_path / bridge)
        s2s_runtime.load(directory, device="cpu")  # the true names pass

        def swap(manifest):
            for graph in manifest["graphs"].values():
                for side in ("inputs", "outputs"):
                    io = graph[side]
                    if "state.h" in io and "state.c" in io:
                        io["state.h"]["name"], io["state.c"]["name"] = io["state.c"]["name"], io["state.h"]["name"]

        edit_manifest(directory, swap)
        with pytest.raises(BundleError, match="binds the two names the wrong way round"):
            s2s_runtime.load(directory, device="cpu")
