"""`s2s convert`: a model trained elsewhere reproduces its own tool's outputs after conversion and export.

g2p-en: tests/fixtures/g2p_en holds g2p_en 2.1.0's own checkpoint20.npz and golden.json, its predictions (and the
log-prob of each step) for 206 words, made by regenerate.py with g2p_en's own code."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import s2s_runtime
from s2s_export.convert import REPORT_FILE, ConversionError, convert
from s2s_runtime.cli import main

G2P_EN = Path(__file__).parent / "fixtures" / "g2p_en"
GOLDEN = json.loads((G2P_EN / "golden.json").read_text())["words"]


@pytest.fixture(scope="module")
def g2p_en_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("g2p_en")
    assert (
        main(
            [
                "convert",
                "g2p-en",
                str(G2P_EN / "checkpoint20.npz"),
                "--out",
                str(out / "checkpoint"),
                "--export",
                str(out / "bundle"),
                "--quiet",
            ]
        )
        == 0
    )
    return out


def test_g2p_en_reproduces_its_own_greedy_outputs_and_log_probs(g2p_en_bundle):
    model = s2s_runtime.load(g2p_en_bundle / "bundle", device="cpu")
    words = [entry["word"] for entry in GOLDEN]
    results = model.generate(words)
    assert [r.tokens for r in results] == [entry["phonemes"] for entry in GOLDEN]  # every word, exactly
    assert not results[words.index("pneumonoultramicroscopicsilicovolcanoconiosis")].finished  # its 20-phoneme cap
    scores = model.score(words, [" ".join(entry["phonemes"]) for entry in GOLDEN])
    for entry, scored in zip(GOLDEN, scores, strict=True):
        expected = entry["step_log_probs"]  # eos last, unless the cap came first
        assert np.allclose(scored.log_probs[: len(expected)], expected, rtol=0, atol=1e-4), entry["word"]


def test_the_conversion_report_says_how_g2p_en_decodes(g2p_en_bundle):
    report = json.loads((g2p_en_bundle / "checkpoint" / REPORT_FILE).read_text())
    assert report["format"] == "g2p-en" and report["decoding"]["strategy"] == "greedy"
    assert any("CMUdict" in difference for difference in report["differences"])
    manifest = json.loads((g2p_en_bundle / "bundle" / "manifest.json").read_text())
    assert manifest["limits"]["max_target_length"] == {"ratio": 0.0, "offset": 20}  # g2p_en's own rule
    assert manifest["parity"]["passed"]


def test_g2p_en_refuses_what_it_cannot_convert_exactly(tmp_path):
    arrays = dict(np.load(G2P_EN / "checkpoint20.npz"))
    np.savez(tmp_path / "missing.npz", **{k: v for k, v in arrays.items() if k != "fc_b"})
    with pytest.raises(ConversionError, match=r"missing\.npz: missing array 'fc_b': not a g2p_en checkpoint$"):
        convert("g2p-en", tmp_path / "missing.npz", tmp_path / "out")
    np.savez(tmp_path / "extra.npz", **arrays, attn_w=np.zeros(3, np.float32))
    with pytest.raises(ConversionError, match=r"unexpected array 'attn_w': not the g2p_en model this converts$"):
        convert("g2p-en", tmp_path / "extra.npz", tmp_path / "out")
    np.savez(tmp_path / "shape.npz", **{**arrays, "fc_w": arrays["fc_w"][:70]})
    with pytest.raises(
        ConversionError,
        match=r"array 'fc_w' is float32 \(70, 256\), a g2p_en GRU of embedding 256 and hidden 256 with 29 graphemes "
        r"and 74 phonemes has float32 \(74, 256\)$",
    ):
        convert("g2p-en", tmp_path / "shape.npz", tmp_path / "out")
    np.savez(tmp_path / "pickled.npz", **{**arrays, "fc_b": np.array([object()], dtype=object)})
    with pytest.raises(ConversionError, match=r"not a readable \.npz file of arrays .*allow_pickle=False"):
        convert("g2p-en", tmp_path / "pickled.npz", tmp_path / "out")
    with pytest.raises(ConversionError, match=r"format 'keras2' is not one of g2p-en$"):
        convert("keras2", tmp_path / "shape.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written for a refused model
