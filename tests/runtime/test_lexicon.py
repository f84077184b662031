"""A bundle's lexicon: known inputs answered from it without decoding, marked as such, the model asked on request,
n-best lexicon variants first; bad lexicons are BundleErrors naming the line."""

import gzip
import shutil
import time

import pytest

import s2s_runtime
from s2s_export.lexicon import attach_lexicon
from s2s_runtime import BundleError
from s2s_runtime.lexicon import FILE, MAX_LINE_CHARACTERS, key_of
from tests.conftest import random_checkpoint, write_bundle

LEXICON = [("hello", "a b c"), ("Read", "d e"), ("read", "e d"), ("wide", "f")]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    directory = write_bundle(random_checkpoint(4, hidden_size=16), tmp_path_factory.mktemp("lexicon"))
    assert attach_lexicon(directory, LEXICON) == 3  # "Read" and "read" are one key
    return directory


@pytest.fixture(scope="module")
def model(bundle):
    return s2s_runtime.load(bundle, device="cpu")


def test_known_inputs_come_from_the_lexicon_and_say_so(model):
    known, unknown = model.generate(["Hello!", "abc"])
    assert known.tokens == ["a", "b", "c"] and known.ids == model.bundle.target.vocab.encode(["a", "b", "c"])
    assert known.best.origin == "lexicon" and known.score == 0.0 and known.finished
    assert unknown.best.origin == "model"
    assert known.to_dict()["origin"] == "lexicon"


def test_the_thin_path_answers_known_inputs_as_the_general_path(model):
    default = s2s_runtime.GenerationOptions()  # given explicitly: the general path
    for word in ("Hello!", "read", "wide", "abc"):
        assert model.generate(word) == model.generate([word], options=default) == model.generate([word, "x"])[:1]


def test_the_model_on_request_and_for_token_lists_and_prefixes(model):
    asked = model.generate(["hello"], use_lexicon=False)[0]
    assert asked.best.origin == "model"
    assert model.generate([list("hello")])[0].best.origin == "model"  # a token list is never looked up
    assert model.generate(["hello"], target_prefix=[["b"]])[0].best.origin == "model"
    streamed = list(model.generate_stream("hello"))
    assert [t.token for t in streamed] == ["a", "b", "c"] and all(t.log_prob == 0.0 for t in streamed)
    decoded = [t.token for t in model.generate_stream("hello", use_lexicon=False)]
    assert decoded == model.generate("hello", use_lexicon=False)[0].tokens


def test_an_n_best_has_the_lexicons_variants_first_then_the_models(model):
    [result] = model.generate(["read"], strategy="beam", beam_size=4, num_hypotheses=3)
    assert [h.tokens for h in result.hypotheses[:2]] == [["d", "e"], ["e", "d"]]
    assert [h.origin for h in result.hypotheses] == ["lexicon", "lexicon", "model"]
    assert result.hypotheses[2].tokens not in (["d", "e"], ["e", "d"])
    [two] = model.generate(["read"], strategy="beam", beam_size=4, num_hypotheses=2)
    assert [h.origin for h in two.hypotheses] == ["lexicon", "lexicon"]


def test_the_batcher_and_bulk_answer_from_it(model, tmp_path):
    with s2s_runtime.Batcher(model, s2s_runtime.BatcherConfig(warmup=False)) as batcher:
        assert batcher.submit("wide").result(timeout=30).best.origin == "lexicon"
    from s2s_runtime.serving.records import decode_records

    plan = model.plan(s2s_runtime.GenerationOptions())
    rows = decode_records(model, plan, ["wide", "abc"])
    assert [r["origin"] for r in rows] == ["lexicon", "model"] and rows[0]["tokens"] == ["f"]


def test_a_lookup_is_much_faster_than_a_decode(model):
    def per_call(words, **options):
        started = time.perf_counter()
        for word in words:
            model.generate([word], **options)
        return (time.perf_counter() - started) / len(words)

    per_call(["hello"] * 20)
    assert per_call(["hello"] * 200) < per_call(["hello"] * 200, use_lexicon=False)


@pytest.mark.parametrize(
    "content, message",
    [
        ("hello\tzz\n", r":1: token 'zz' is not in the target vocabulary"),
        ("ok\ta\nhello a b\n", r":2: expected 'key<TAB>output tokens'"),
        ("read\ta\nwide\tb\nread\tc\n", r":3: 'read' is listed again \(first at line 1\)"),
        ("x\t" + "a " * MAX_LINE_CHARACTERS + "\n", f"more than {MAX_LINE_CHARACTERS}"),
    ],
)
def test_bad_lexicons_are_bundle_errors_naming_the_line(bundle, tmp_path, content, message):
    """The file written as given (its checksum in the manifest), then loaded."""
    import json

    from s2s_export.bundle_export import write_manifest
    from s2s_runtime.schema import Manifest

    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    (copy / FILE).write_bytes(gzip.compress(content.encode()))
    write_manifest(copy, Manifest.parse(json.loads((copy / "manifest.json").read_text())))
    with pytest.raises(BundleError, match=message):
        s2s_runtime.load(copy, device="cpu")


def test_keys_that_normalize_alike_share_their_variants(tmp_path, bundle):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    attach_lexicon(copy, [("A", "a"), ("a.", "a"), ("a.", "b")])
    loaded = s2s_runtime.load(copy, device="cpu").bundle
    variants = loaded.lexicon.lookup("A!")
    assert [loaded.target.vocab.decode_tokens(ids) for ids in variants] == [["a"], ["b"]]


def test_key_normalization():
    assert key_of(" «Hello»! ") == "hello" and key_of("don't") == "don't"


def test_a_large_lexicon_loads_without_a_container_per_line():
    """CMUdict-sized lexicons load in a fraction of a second because loading builds nothing per line that the
    garbage collector must walk (measured: docs/model-card.md); this guards that shape, and that every entry is
    still found, variants in order, merged keys once."""
    import gc

    from s2s_runtime.lexicon import Lexicon
    from s2s_runtime.vocab import Vocab

    vocab = Vocab(["<pad>", "</s>", "A", "B", "C"], {"pad": "<pad>", "eos": "</s>"}, "space")
    lines = [f"w{i}\tA B" for i in range(20_000)] + ["read\tA", "read\tB", "Read.\tC", "Read.\tA"]
    data = gzip.compress("\n".join(lines).encode())
    gc.collect()
    before = len(gc.get_objects())
    lexicon = Lexicon.parse(data, vocab, "lexicon.tsv.gz")
    assert len(gc.get_objects()) - before < 100
    assert len(lexicon) == 20_001 and lexicon.lookup("w19999") == ((2, 3),)
    assert lexicon.lookup("READ") == ((2,), (3,), (4,))  # read's variants, then Read.'s new one
