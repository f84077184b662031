import itertools

import numpy as np
import pytest
import torch

import s2s_runtime
from s2s_export.train import max_target_length
from s2s_runtime import GenerationOptions
from tests.conftest import EXTRA_OPTIONS, GRID, SOURCE_VOCAB, grid_id, random_checkpoint, random_sources, write_bundle

RUNTIME_GRID = GRID[::4] + EXTRA_OPTIONS  # every option value still appears (the full grid runs in test_export)


def torch_greedy(checkpoint, sources):
    """Reference: PyTorch greedy decoding of each source alone."""
    eos = [SOURCE_VOCAB.id_of("eos")] if checkpoint.config.source_eos else []
    outputs = []
    for source in sources:
        ids = SOURCE_VOCAB.encode(source) + eos
        outputs += checkpoint.model.greedy(
            torch.tensor([ids]),
            torch.tensor([len(ids)]),
            start_id=2,
            eos_id=3,
            max_length=max_target_length(len(source)),
        )  # the source eos not counted
    return outputs


@pytest.mark.parametrize("options", RUNTIME_GRID, ids=grid_id)
def test_runtime_greedy_equals_pytorch(tmp_path, options):
    checkpoint = random_checkpoint(9, **options)
    model = s2s_runtime.load(write_bundle(checkpoint, tmp_path), device="cpu")
    sources = random_sources(13, seed=1)
    expected = torch_greedy(checkpoint, sources)
    for batch_size in (1, 4, 13):
        results = model.generate(sources, max_batch_size=batch_size)
        assert [r.ids for r in results] == expected, f"batch size {batch_size}"


def test_score_is_the_sum_of_pytorch_log_probs(tmp_path):
    checkpoint = random_checkpoint(9, attention="general", hidden_size=16, cell="lstm")
    model = s2s_runtime.load(write_bundle(checkpoint, tmp_path), device="cpu")
    for source, result in zip(["abc", "jjjab"], model.generate(["abc", "jjjab"], max_length=6), strict=True):
        ids = SOURCE_VOCAB.encode(source)
        targets = result.ids + ([3] if result.finished else [])
        with torch.no_grad():
            log_probs = checkpoint.model(
                torch.tensor([ids]), torch.tensor([len(ids)]), torch.tensor([[2] + targets[:-1]])
            )[0]  # (steps, vocab)
        assert result.score == pytest.approx(float(log_probs[range(len(targets)), targets].sum()), abs=1e-4)


def test_output_does_not_depend_on_batch_composition(small_bundle):
    model = s2s_runtime.load(small_bundle, device="cpu")
    sources = random_sources(40, seed=2, low=1, high=30)
    alone = [model.generate(s)[0] for s in sources]
    mixed = model.generate(sources)
    shuffled_order = np.random.default_rng(0).permutation(len(sources))
    shuffled = model.generate([sources[i] for i in shuffled_order], max_batch_size=7)
    assert [r.ids for r in mixed] == [r.ids for r in alone]
    assert [r.ids for r in model.generate(sources, max_batch_tokens=40)] == [r.ids for r in alone]
    assert [shuffled[j].ids for j in np.argsort(shuffled_order)] == [r.ids for r in alone]
    assert [r.score for r in mixed] == pytest.approx([r.score for r in alone], abs=1e-5)


def test_large_mixed_batches_are_encoded_in_length_groups_exactly(small_bundle, monkeypatch):
    """Groups of similar length, reassembled with the encoder's padding values: the same arrays, bit for bit, as
    one encoder call over the whole batch (memory bias included: the manifest's memory_bias_padding is the value the
    encoder itself writes)."""
    import s2s_runtime.engine.encoding as encoding_module

    model = s2s_runtime.load(small_bundle, device="cpu")
    plan = model.plan(GenerationOptions())
    ids = [model.prepare(s, plan, index=i).ids for i, s in enumerate(random_sources(75, seed=5, low=1, high=25))]
    calls = []
    real_run = model.engine.encoder.run
    monkeypatch.setattr(
        model.engine.encoder, "run", lambda sources: calls.append(sorted(map(len, sources))) or real_run(sources)
    )
    grouped = model.engine.encoder.encode(ids)
    # 75 rows in groups cut in length order where the length changes, once they hold ENCODER_GROUP_ROWS = 32 rows ...
    groups = list(calls)
    assert sorted(itertools.chain.from_iterable(groups)) == sorted(map(len, ids))
    assert all(len(g) >= 32 for g in groups[:-1]) and len(groups) == 3
    assert all(a[-1] < b[0] for a, b in itertools.pairwise(groups))  # no length split between two groups
    monkeypatch.setattr(encoding_module, "GROUP_ROWS", 1000)
    whole = model.engine.encoder.encode(ids)
    assert calls[len(groups) :] == [sorted(map(len, ids))]  # ... against one call
    for got, expected in zip(grouped, whole, strict=True):
        assert got.keys() == expected.keys()
        for role in got:
            np.testing.assert_array_equal(got[role], expected[role], err_msg=role)


def test_trained_model_generates_correct_outputs(reverse_model):
    model = s2s_runtime.load(reverse_model["bundle"], device="cpu")
    words = ["hello", "runtime", "abc", "z", "onnx"]
    results = model.generate(words)
    assert [r.text for r in results] == [w[::-1] for w in words]
    assert all(r.finished and r.score < 0 and r.tokens == list(r.text) for r in results)
    assert model.generate([list("abc")])[0].text == "cba"  # pre-tokenized input


def test_empty_unknown_and_length_limits(small_bundle):
    model = s2s_runtime.load(small_bundle, device="cpu")
    empty, unknown = model.generate(["", "ab?!c"])
    assert (empty.text, empty.ids, empty.score) == ("", [], 0.0)
    assert unknown.unknown_source_tokens == 2
    assert all(len(r.ids) <= 3 for r in model.generate(random_sources(5), max_length=3))
    assert all(len(r.ids) <= max_target_length(2) for r in model.generate(["ab", "cd"]))
    with pytest.raises(ValueError, match=r"inputs\[1\]: 1025 source tokens exceed the bundle's max_source_length 1024"):
        model.generate(["ab", "a" * 1025])


@pytest.mark.parametrize(
    "inputs, message",
    [
        (42, r"inputs: expected a string, a list of strings or a list of token lists, got int"),
        (["ok", 3], r"inputs\[1\]: expected a string or a list of token strings"),
        ([["a", 1]], r"inputs\[0\]"),
        (None, "got NoneType"),
    ],
)
def test_wrong_input_types(small_bundle, inputs, message):
    model = s2s_runtime.load(small_bundle, device="cpu")
    with pytest.raises(TypeError, match=message):
        model.generate(inputs)


def test_options_are_validated(small_bundle):
    model = s2s_runtime.load(small_bundle, device="cpu")
    with pytest.raises(TypeError, match="unknown generation option 'beam_width'"):
        model.generate("abc", beam_width=3)
    with pytest.raises(ValueError, match="max_length: must be ≥ 1, got 0"):
        model.generate("abc", max_length=0)
    with pytest.raises(TypeError, match="max_batch_size: expected an int"):
        model.generate("abc", max_batch_size=2.5)
    with pytest.raises(ValueError, match="strategy: 'magic'"):
        GenerationOptions(strategy="magic")
    base = GenerationOptions(max_length=4)
    assert len(model.generate("abcdefgh", options=base)[0].ids) <= 4
