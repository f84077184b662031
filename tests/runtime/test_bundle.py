import json
import shutil

import pytest

import s2s_runtime
from s2s_runtime import BundleError
from s2s_runtime.bundle import sha256_of


@pytest.fixture
def bundle(small_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(small_bundle, copy)
    return copy


def edit_manifest(bundle, change):
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def refresh_checksum(bundle, name):
    edit_manifest(bundle, lambda m: m["files"].__setitem__(name, sha256_of(bundle / name)))


def test_valid_bundle_loads(bundle):
    assert s2s_runtime.load(bundle, device="cpu").generate("abc")[0].finished in (True, False)


def test_truncated_onnx_fails_checksum(bundle):
    data = (bundle / "decoder_step.onnx").read_bytes()
    (bundle / "decoder_step.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"decoder_step\.onnx: sha256 does not match manifest\.json"):
        s2s_runtime.load(bundle)


def test_truncated_onnx_with_matching_checksum_is_still_a_bundle_error(bundle):
    data = (bundle / "encoder.onnx").read_bytes()
    (bundle / "encoder.onnx").write_bytes(data[: len(data) // 2])
    refresh_checksum(bundle, "encoder.onnx")
    with pytest.raises(BundleError, match=r"encoder\.onnx: onnxruntime cannot load this graph"):
        s2s_runtime.load(bundle)


def test_wrong_checksum(bundle):
    edit_manifest(bundle, lambda m: m["files"].__setitem__("target_vocab.json", "0" * 64))
    with pytest.raises(BundleError, match=r"target_vocab\.json: sha256 does not match"):
        s2s_runtime.load(bundle)


def test_missing_file(bundle):
    (bundle / "encoder.onnx").unlink()
    with pytest.raises(BundleError, match=r"encoder\.onnx: file not found \(named by manifest\.json files\)"):
        s2s_runtime.load(bundle)


def test_missing_manifest_and_directory(bundle, tmp_path):
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json: file not found"):
        s2s_runtime.load(bundle)
    with pytest.raises(BundleError, match="not a bundle directory"):
        s2s_runtime.load(tmp_path / "nowhere")


def test_unknown_format_version(bundle):
    edit_manifest(bundle, lambda m: m.__setitem__("format_version", 99))
    with pytest.raises(BundleError, match="unsupported format_version 99"):
        s2s_runtime.load(bundle)


@pytest.mark.parametrize("path", ["../encoder.onnx", "/etc/passwd", "sub/encoder.onnx", "..", ""])
def test_paths_leaving_the_bundle_are_rejected(bundle, path):
    edit_manifest(bundle, lambda m: m["graphs"]["encoder"].__setitem__("file", path))
    with pytest.raises(BundleError, match="is not a plain file name inside the bundle"):
        s2s_runtime.load(bundle)


def test_checksum_list_cannot_name_outside_files(bundle):
    edit_manifest(bundle, lambda m: m["files"].__setitem__("../manifest.json", "0" * 64))
    with pytest.raises(BundleError, match="not a plain file name"):
        s2s_runtime.load(bundle)


def test_missing_required_key(bundle):
    edit_manifest(bundle, lambda m: m.pop("limits"))
    with pytest.raises(BundleError, match="missing required key 'limits'"):
        s2s_runtime.load(bundle)


def test_graph_inputs_must_match_manifest(bundle):
    edit_manifest(bundle, lambda m: m["graphs"]["decoder_step"]["inputs"]["state.h"].__setitem__("name", "hidden"))
    with pytest.raises(
        BundleError,
        match=r"decoder_step\.onnx: graph inputs do not match manifest\.json "
        r"graphs\.decoder_step\.inputs .*'hidden'.*'state_h'",
    ):
        s2s_runtime.load(bundle)


def test_graph_dtype_and_rank_must_match_manifest(bundle):
    edit_manifest(bundle, lambda m: m["graphs"]["encoder"]["inputs"]["source_lengths"].__setitem__("dtype", "int32"))
    with pytest.raises(
        BundleError,
        match=r"encoder\.onnx: input 'source_lengths' is int64 of rank 1, manifest\.json "
        r"declares int32 of rank 1",
    ):
        s2s_runtime.load(bundle)
    edit_manifest(
        bundle, lambda m: m["graphs"]["encoder"]["inputs"]["source_lengths"].update(dtype="int64", shape=["batch", 1])
    )
    with pytest.raises(BundleError, match="declares int64 of rank 2"):
        s2s_runtime.load(bundle)


def test_contract_between_graphs_is_checked(bundle):
    edit_manifest(bundle, lambda m: m["graphs"]["encoder"]["outputs"].pop("memory"))
    with pytest.raises(BundleError, match=r"graphs\.decoder_step\.inputs\.memory is not produced by the encoder"):
        s2s_runtime.load(bundle)


def test_special_ids_must_agree_with_vocab(bundle):
    edit_manifest(bundle, lambda m: m["target"]["special_ids"].__setitem__("eos", 7))
    with pytest.raises(BundleError, match=r"target\.special_ids .* disagree with target_vocab\.json"):
        s2s_runtime.load(bundle)


def test_source_vocabulary_needs_a_pad_token(bundle):
    vocab = json.loads((bundle / "source_vocab.json").read_text())
    del vocab["specials"]["pad"]
    (bundle / "source_vocab.json").write_text(json.dumps(vocab))
    refresh_checksum(bundle, "source_vocab.json")
    edit_manifest(bundle, lambda m: m["source"]["special_ids"].pop("pad"))
    with pytest.raises(BundleError, match=r"source_vocab\.json: the source vocabulary has no 'pad' special token"):
        s2s_runtime.load(bundle, device="cpu")
