"""The manifest schema: one typed form read and written by the same code, format revisions upgraded on read."""

import json
import shutil

import numpy as np
import pytest

import s2s_runtime
from s2s_runtime import BundleError
from s2s_runtime.bundle import sha256_of
from s2s_runtime.schema import FORMAT_VERSION, Manifest
from tests.conftest import as_revision_2

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper


def test_parse_and_write_round_trip(small_bundle):
    data = json.loads((small_bundle / "manifest.json").read_text())
    assert data["format_version"] == FORMAT_VERSION == 3
    assert Manifest.parse(data).to_json() == data  # nothing written that is not read, nothing read and lost
    assert "tokenizer" not in data["source"]  # the vocabulary file's own field, not repeated


def revision_1(bundle):
    """A copy of a current bundle as a revision-1 exporter wrote it: tokenizers repeated per side, no explicit
    memory bias at padding, and the greedy choice output apart (next_ids, next_log_probs) from an ArgMax."""
    manifest = json.loads((as_revision_2(bundle) / "manifest.json").read_text())
    manifest["format_version"] = 1
    for side in ("source", "target"):
        vocab = json.loads((bundle / manifest[side]["vocab"]).read_text())
        manifest[side]["tokenizer"] = vocab["tokenizer"]
    del manifest["decoding"]["memory_bias_padding"]
    step = onnx.load(str(bundle / "decoder_step.onnx"))
    log_probs = manifest["graphs"]["decoder_step"]["outputs"]["log_probs"]["name"]
    step.graph.node.extend(
        [
            helper.make_node("ArgMax", [log_probs], ["next_ids"], axis=1, keepdims=0),
            helper.make_node("ReduceMax", [log_probs], ["next_log_probs"], axes=[1], keepdims=0),
        ]
    )
    step.graph.output.extend(
        [
            helper.make_tensor_value_info("next_ids", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("next_log_probs", TensorProto.FLOAT, ["batch"]),
        ]
    )
    onnx.save(step, str(bundle / "decoder_step.onnx"))
    manifest["graphs"]["decoder_step"]["outputs"].update(
        next_ids={"name": "next_ids", "dtype": "int64", "shape": ["batch"]},
        next_log_probs={"name": "next_log_probs", "dtype": "float32", "shape": ["batch"]},
    )
    manifest["files"]["decoder_step.onnx"] = sha256_of(bundle / "decoder_step.onnx")
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def test_revision_1_bundles_are_upgraded_on_load_and_decode_the_same(small_bundle, tmp_path):
    old = revision_1(shutil.copytree(small_bundle, tmp_path / "old"))
    upgraded = s2s_runtime.load(old, device="cpu")
    assert upgraded.bundle.manifest.memory_bias_padding == -1e9
    assert "ignored.next_ids" in upgraded.bundle.graphs["decoder_step"].outputs  # never read
    current = s2s_runtime.load(small_bundle, device="cpu")
    sources = ["abc", "hello", "jihgfedcba", "a", "bbbbbbbbbbbbbbbbbbbb"]
    for options in ({}, {"strategy": "beam", "beam_size": 3}, {"max_batch_size": 2}):
        expected, got = current.generate(sources, **options), upgraded.generate(sources, **options)
        assert [r.ids for r in got] == [r.ids for r in expected]
        assert np.allclose([r.score for r in got], [r.score for r in expected], atol=1e-5)


def test_unknown_revisions_and_keys_are_refused(small_bundle, tmp_path):
    bundle = shutil.copytree(small_bundle, tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    for change, message in (
        (dict(format_version=4), "unsupported format_version 4"),
        (dict(graphs={**manifest["graphs"], "beam": manifest["graphs"]["greedy"]}), "unknown graph 'beam'"),
        (
            dict(graphs={**manifest["graphs"], "greedy": {**manifest["graphs"]["greedy"], "outputs": {}}}),
            "graphs.greedy.outputs lacks the required role 'chosen_ids'",
        ),
        (
            dict(
                graphs={
                    **manifest["graphs"],
                    "greedy": {
                        **manifest["graphs"]["greedy"],
                        "outputs": {
                            **manifest["graphs"]["greedy"]["outputs"],
                            "attention": manifest["graphs"]["decoder_step"]["outputs"]["attention"],
                        },
                    },
                }
            ),
            r"graphs.greedy.outputs must have the roles \['chosen_ids', 'chosen_log_probs'\]",
        ),
        (dict(colour="red"), "unknown key 'colour'"),
        (dict(precision="int4"), "precision 'int4' is not one of"),
        (dict(decoding={**manifest["decoding"], "memory_bias_padding": None}), "memory_bias_padding is missing"),
        (
            dict(decoding={**manifest["decoding"], "memory_bias_padding": 5.0}),
            "memory_bias_padding must be a finite negative number",
        ),
    ):
        (bundle / "manifest.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(BundleError, match=message):
            s2s_runtime.load(bundle, device="cpu")
