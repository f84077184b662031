"""Target views: a bundle's alternative spellings of its outputs (g2p-en's no-stress), asked for by name; tokens
and text change, ids do not; hypotheses that become alike are given once; unknown or malformed views are errors."""

import json
import shutil

import pytest

import s2s_runtime
from s2s_export.lexicon import attach_lexicon
from s2s_export.views import attach_target_view, view_removing
from s2s_runtime import BundleError
from tests.conftest import random_checkpoint, random_sources, write_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_bundle(random_checkpoint(5, hidden_size=16), tmp_path_factory.mktemp("views"))


def test_attaching_a_view_writes_the_tokens_it_changes(bundle):
    assert attach_target_view(bundle, "bare", "[<>/]") == 4  # <pad> <unk> <s> </s>; one-letter tokens stay
    views = json.loads((bundle / "manifest.json").read_text())["target_views"]
    assert views == {"bare": {"<pad>": "pad", "<unk>": "unk", "<s>": "s", "</s>": "s"}}
    assert view_removing(r"\d", ["AH0", "EY1", "K", "0"]) == {"AH0": "AH", "EY1": "EY"}  # never an empty token
    assert s2s_runtime.load(bundle, device="cpu").generate(["abc"], view="bare")[0].ids


def test_views_of_the_model_the_lexicon_and_streams(tmp_path):
    directory = write_bundle(random_checkpoint(5, hidden_size=16), tmp_path)
    # A view that shows g, h and i as "x": distinct outputs may become alike.
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["target_views"] = {"x": {"g": "x", "h": "x", "i": "x"}}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    attach_lexicon(directory, [("hello", "g a"), ("hello", "h a"), ("hello", "b")])
    model = s2s_runtime.load(directory, device="cpu")
    sources = random_sources(12, seed=4)
    plain, shown = model.generate(sources), model.generate(sources, view="x")
    for p, s in zip(plain, shown, strict=True):
        assert s.ids == p.ids and s.score == p.score
        assert s.tokens == ["x" if t in "ghi" else t for t in p.tokens] and s.text == "".join(s.tokens)
    [known] = model.generate(["hello"], view="x", strategy="beam", beam_size=3, num_hypotheses=3)
    assert [h.tokens for h in known.hypotheses][:2] == [["x", "a"], ["b"]]  # "g a" and "h a" shown once
    assert model.generate(["hello"], view="x")[0].tokens == ["x", "a"]
    streamed = [t.token for t in model.generate_stream(sources[0], view="x")]
    assert streamed == shown[0].tokens
    with pytest.raises(ValueError, match=r"view: 'no-stress' is not a target view of this model \(its views: x\)"):
        model.generate(["abc"], view="no-stress")
    with pytest.raises(TypeError, match="view: expected a view name"):
        model.generate(["abc"], view=3)


@pytest.mark.parametrize(
    ("views", "message"),
    [
        ({"x": {"zz": "y"}}, r"target_views\.x: 'zz' is not in the target vocabulary"),
        ({"x": {"a": "two words"}}, r"target_views\.x\.a must be a non-empty token without spaces"),
        ({"x": ["a"]}, r"target_views\.x: expected a JSON object"),
    ],
)
def test_malformed_views_are_bundle_errors(bundle, tmp_path, views, message):
    copy = shutil.copytree(bundle, tmp_path / "copy")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["target_views"] = views
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        s2s_runtime.load(copy, device="cpu")


def test_attaching_a_view_that_changes_nothing_is_refused(bundle):
    with pytest.raises(ValueError, match="changes no target token"):
        attach_target_view(bundle, "none", "[0-9]")
    with pytest.raises(ValueError, match="is not a regular expression"):
        attach_target_view(bundle, "bad", "(")
