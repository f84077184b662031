"""`s2s convert`: a model trained elsewhere reproduces its own tool's outputs after conversion and export.

g2p-en: tests/fixtures/g2p_en holds g2p_en 2.1.0's own checkpoint20.npz and golden.json, its predictions (and the
log-prob of each step) for 206 words, made by regenerate.py with g2p_en's own code."""

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

import s2s_runtime
from s2s_export.bundle_export import ExportOptions, export_bundle
from s2s_export.convert import REPORT_FILE, ConversionError, convert
from s2s_runtime.cli import main

G2P_EN = Path(__file__).parent.parent / "fixtures" / "g2p_en"
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
    with pytest.raises(ConversionError, match=r"format 'keras2' is not one of g2p-en, keras, opennmt, torch-tutorial$"):
        convert("keras2", tmp_path / "shape.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written for a refused model


KERAS = Path(__file__).parent.parent / "fixtures" / "keras"  # made by Keras itself: tests/fixtures/keras/regenerate.py


def convert_and_load(tmp_path: Path, model_file: Path, tokens: Path, sources: list[str]) -> s2s_runtime.Seq2SeqModel:
    conversion = convert("keras", model_file, tmp_path / "checkpoint", tokens=tokens)
    bundle = export_bundle(
        tmp_path / "checkpoint",
        tmp_path / "bundle",
        validation_sources=sources,
        options=ExportOptions(**conversion.export_options),
    )
    return s2s_runtime.load(bundle, device="cpu")


@pytest.mark.parametrize("name", ["teacher_forced", "repeat_vector"])
def test_keras_models_reproduce_their_own_outputs(tmp_path, name):
    """Keras's lstm_seq2seq shape (one-hot, LSTM states into the decoder) and the seed's RepeatVector shape
    (Embedding mask_zero, GRU), trained by Keras: 120 inputs each, outputs identical, log-probs within 1e-4."""
    golden = json.loads((KERAS / f"{name}.golden.json").read_text())["outputs"]
    sources = [entry["source"] for entry in golden]
    model = convert_and_load(tmp_path, KERAS / f"{name}.keras", KERAS / f"{name}.tokens.json", sources)
    assert [r.text for r in model.generate(sources)] == [entry["output"] for entry in golden]
    scores = model.score(sources, [entry["output"] for entry in golden])
    for entry, scored in zip(golden, scores, strict=True):
        expected = entry["step_log_probs"]
        assert np.allclose(scored.log_probs[: len(expected)], expected, rtol=0, atol=1e-4), entry["source"]


def keras_module():
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


def test_a_model_trained_by_keras_here_agrees_end_to_end(tmp_path):
    """Built and trained by Keras in this test (GRU, Embedding inputs on both sides, teacher-forced), converted,
    exported and compared with Keras's own step-by-step greedy decoding."""
    keras = keras_module()
    keras.utils.set_random_seed(3)
    letters = "abcd"
    tokens = ["<pad>", "\t", "\n", *letters]
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list(letters), size=rng.integers(1, 5))) for _ in range(400)]
    length = 6
    x = np.zeros((len(words), length), np.int64)
    y_in = np.zeros((len(words), length), np.int64)
    y_out = np.zeros((len(words), length), np.int64)
    for i, word in enumerate(words):
        x[i, : len(word)] = [tokens.index(c) for c in word]
        target = [tokens.index(c) for c in ["\t", *word[::-1], "\n"]]
        y_in[i, : len(target) - 1], y_out[i, : len(target) - 1] = target[:-1], target[1:]
    source_in, target_in = keras.Input(shape=(None,), dtype="int64"), keras.Input(shape=(None,), dtype="int64")
    _, state = keras.layers.GRU(16, return_state=True)(
        keras.layers.Embedding(len(tokens), 8, mask_zero=True)(source_in)
    )
    target_embedding = keras.layers.Embedding(len(tokens), 8)
    decoder = keras.layers.GRU(16, return_sequences=True, return_state=True)
    dense = keras.layers.Dense(len(tokens), activation="softmax")
    outputs, _ = decoder(target_embedding(target_in), initial_state=[state])
    model = keras.Model([source_in, target_in], dense(outputs))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit([x, y_in], y_out, epochs=3, batch_size=32, verbose=0)
    model.save(tmp_path / "model.keras")
    (tmp_path / "tokens.json").write_text(
        json.dumps(
            {
                "source": tokens,
                "target": tokens,
                "specials": {"source": {"pad": "<pad>"}, "target": {"pad": "<pad>"}},
                "max_target_length": length,
            }
        )
    )

    encoder = keras.Model(source_in, state)
    h_in = keras.Input(shape=(16,))
    step, h_out = decoder(target_embedding(target_in), initial_state=[h_in])
    step_model = keras.Model([target_in, h_in], [dense(step), h_out])
    tests = sorted(set(words))[:30]
    expected = []
    for word in tests:
        h = encoder.predict(np.array([[tokens.index(c) for c in word]]), verbose=0)
        previous, out = tokens.index("\t"), ""
        for _ in range(length):
            probs, h = step_model.predict([np.array([[previous]]), h], verbose=0)
            previous = int(probs[0, -1].argmax())
            if tokens[previous] == "\n":
                break
            out += tokens[previous]
        expected.append(out)
    converted = convert_and_load(tmp_path, tmp_path / "model.keras", tmp_path / "tokens.json", tests)
    assert [r.text for r in converted.generate(tests)] == expected


def repeat_model(keras, *, recurrent=None, embedding=None, wrap=None, layers_before=()):
    encoder = (recurrent or (lambda: keras.layers.GRU(8, name="encoder")))()
    return keras.Sequential(
        [
            keras.Input(shape=(None,), dtype="int64"),
            embedding or keras.layers.Embedding(5, 4, mask_zero=True, name="embedding"),
            *layers_before,
            wrap(encoder, name="bidirectional") if wrap else encoder,
            keras.layers.RepeatVector(3),
            keras.layers.GRU(8, return_sequences=True),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )


REFUSED = {
    "bidirectional": (
        lambda k: repeat_model(k, wrap=k.layers.Bidirectional),
        r"layer 'bidirectional' is a Bidirectional, which this converter does not map \(it takes Dense, "
        r"Embedding, GRU, InputLayer, LSTM, RepeatVector, TimeDistributed\)$",
    ),
    "relu": (
        lambda k: repeat_model(k, recurrent=lambda: k.layers.GRU(8, activation="relu", name="encoder")),
        r"layer 'encoder' has activation='relu'; this family computes activation='tanh'$",
    ),
    "reset_before": (
        lambda k: repeat_model(k, recurrent=lambda: k.layers.GRU(8, reset_after=False, name="encoder")),
        r"layer 'encoder' has reset_after=False; this family computes reset_after=True$",
    ),
    "stacked": (
        lambda k: repeat_model(k, layers_before=[k.layers.GRU(8, return_sequences=True)]),
        r"3 recurrent and 1 Dense layers: this converts one recurrent layer per side and one output Dense "
        r"\(stacked layers are not supported yet\)$",
    ),
    "unmasked": (
        lambda k: repeat_model(k, embedding=k.layers.Embedding(5, 4, name="embedding")),
        r"layer 'embedding' has mask_zero=False: its encoder reads the padding, which this family masks; "
        r"set mask_zero=True$",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_keras_refuses_what_it_cannot_convert_exactly(tmp_path, case):
    keras = keras_module()
    build, message = REFUSED[case]
    build(keras).save(tmp_path / "model.keras")
    (tmp_path / "tokens.json").write_text(json.dumps({"source": list("_abcd"), "target": list("_abcd")}))
    with pytest.raises(ConversionError, match=message):
        convert("keras", tmp_path / "model.keras", tmp_path / "out", tokens=tmp_path / "tokens.json")
    with pytest.raises(ConversionError, match=r"keras needs --tokens FILE"):
        convert("keras", tmp_path / "model.keras", tmp_path / "out")
    assert not (tmp_path / "out").exists()


OPENNMT = Path(__file__).parent.parent / "fixtures" / "opennmt"  # trained by OpenNMT-py itself: its regenerate.py


@pytest.mark.parametrize("name", ["lstm_general_feed", "gru_dot", "brnn_lstm_general", "lstm_mlp", "brnn_gru_bridge"])
def test_opennmt_models_reproduce_their_own_translations(tmp_path, name):
    """OpenNMT-py 3.5.1 RNN models (2-layer LSTM, general attention, input feeding; GRU, dot attention, no input
    feeding; a brnn LSTM encoder, H/2 units per direction; mlp attention; a brnn GRU with -bridge): 120 sources
    each, outputs identical to onmt's greedy translation, scores within 1e-4."""
    golden = json.loads((OPENNMT / f"{name}.golden.json").read_text())["outputs"]
    sources = [entry["source"] for entry in golden]
    conversion = convert("opennmt", OPENNMT / f"{name}.pt", tmp_path / "checkpoint")
    bundle = export_bundle(
        tmp_path / "checkpoint",
        tmp_path / "bundle",
        validation_sources=sources,
        options=ExportOptions(**conversion.export_options),
    )
    results = s2s_runtime.load(bundle, device="cpu").generate(sources)
    assert [r.text for r in results] == [entry["output"] for entry in golden]
    assert max(abs(r.score - entry["score"]) for r, entry in zip(results, golden, strict=True)) < 1e-4
    assert "beam_size 5" in conversion.report["decoding"]["opennmt_defaults"]


OPENNMT_REFUSED = {
    "bridge": (
        {"bridge": True},
        r"bridge with more than one layer cannot be converted exactly: OpenNMT views the \(layers, batch, H\) states "
        r"as rows of layers × H, so each row mixes batch entries$",
    ),
    "sparsemax": (
        {"global_attention_function": "sparsemax"},
        r"global_attention_function 'sparsemax' cannot be converted exactly: attention weights are a softmax$",
    ),
    "layers": (
        {"dec_layers": 1},
        r"enc_layers 2 != dec_layers 1 cannot be converted exactly: the decoder starts from "
        r"every encoder layer's final state$",
    ),
    "copy": ({"copy_attn": True}, r"copy_attn cannot be converted exactly: no copy mechanism$"),
    "transformer": (
        {"encoder_type": "transformer"},
        r"encoder_type 'transformer' cannot be converted exactly: only "
        r"RNN encoders$",
    ),
}


@pytest.mark.parametrize("case", sorted(OPENNMT_REFUSED))
def test_opennmt_refuses_what_it_cannot_convert_exactly(tmp_path, case):
    import argparse

    import torch

    changes, message = OPENNMT_REFUSED[case]
    with torch.serialization.safe_globals([argparse.Namespace]):
        checkpoint = torch.load(OPENNMT / "lstm_general_feed.pt", weights_only=True)
    vars(checkpoint["opt"]).update(changes)
    torch.save(checkpoint, tmp_path / "model.pt")
    with pytest.raises(ConversionError, match=message):
        convert("opennmt", tmp_path / "model.pt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_opennmt_refuses_a_file_that_needs_unpickling_code(tmp_path):
    import torch

    torch.save({"model": {}, "opt": object()}, tmp_path / "evil.pt")  # an arbitrary class: weights_only refuses it
    with pytest.raises(ConversionError, match=r"evil\.pt: not an OpenNMT-py checkpoint torch can load safely"):
        convert("opennmt", tmp_path / "evil.pt", tmp_path / "out")


TUTORIAL = Path(__file__).parent.parent / "fixtures" / "torch_tutorial"  # the tutorial's own classes: its regenerate.py


@pytest.mark.parametrize("name", ["attention", "plain"])
def test_torch_tutorial_models_reproduce_its_evaluate(tmp_path, name):
    """The PyTorch seq2seq tutorial's EncoderRNN with AttnDecoderRNN (Bahdanau attention before the step) or
    DecoderRNN (relu(embedding)): 120 sentences each, outputs identical to its evaluate(), log-probs within 1e-4."""
    golden = json.loads((TUTORIAL / name / "golden.json").read_text())["outputs"]
    sources = [entry["source"] for entry in golden]
    conversion = convert("torch-tutorial", TUTORIAL / name, tmp_path / "checkpoint")
    bundle = export_bundle(
        tmp_path / "checkpoint",
        tmp_path / "bundle",
        validation_sources=sources,
        options=ExportOptions(**conversion.export_options),
    )
    model = s2s_runtime.load(bundle, device="cpu")
    assert [r.text for r in model.generate(sources)] == [entry["output"] for entry in golden]
    for entry, scored in zip(golden, model.score(sources, [e["output"] for e in golden]), strict=True):
        expected = entry["step_log_probs"]
        assert np.allclose(scored.log_probs[: len(expected)], expected, rtol=0, atol=1e-4), entry["source"]
    assert conversion.report["decoder"] == {"attention": "AttnDecoderRNN", "plain": "DecoderRNN"}[name]


def test_torch_tutorial_refuses_other_modules(tmp_path):
    import shutil

    import torch

    shutil.copytree(TUTORIAL / "attention", tmp_path / "model")
    decoder = torch.load(tmp_path / "model" / "decoder.pt", weights_only=True)
    torch.save({**decoder, "attention.extra.weight": torch.zeros(2)}, tmp_path / "model" / "decoder.pt")
    with pytest.raises(
        ConversionError,
        match=r"decoder\.pt: unexpected 'attention\.extra\.weight': not AttnDecoderRNN "
        r"or DecoderRNN$",
    ):
        convert("torch-tutorial", tmp_path / "model", tmp_path / "out")
    (tmp_path / "model" / "encoder.pt").unlink()
    with pytest.raises(
        ConversionError,
        match=r"encoder\.pt: no such file \(the directory needs encoder\.pt and "
        r"decoder\.pt\)$",
    ):
        convert("torch-tutorial", tmp_path / "model", tmp_path / "out")
