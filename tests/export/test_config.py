import dataclasses
import json

import pytest

from s2s_export.config import ConfigError, Seq2SeqConfig, TrainConfig

BASE = dict(source_vocab_size=10, target_vocab_size=12)


def test_defaults_are_valid_and_round_trip(tmp_path):
    cfg = Seq2SeqConfig(**BASE, attention="additive", cell="lstm")
    cfg.save(tmp_path / "config.json")
    assert Seq2SeqConfig.load(tmp_path / "config.json") == cfg


def test_seed_keras_model_is_expressible():
    cfg = Seq2SeqConfig(**BASE, cell="lstm", conditioning="concat", bridge="zeros", feed_previous=False)
    assert cfg.decoder_input_size == cfg.encoder_output_size  # only the repeated context


@pytest.mark.parametrize(
    "options, key",
    [
        (dict(cell="rnn"), "cell"),
        (dict(num_layers=0), "num_layers"),
        (dict(hidden_size=-4), "hidden_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(attention="luong"), "attention"),
        (dict(bridge="zeros"), "bridge"),  # init conditioning needs the context
        (dict(conditioning="concat"), "bridge"),  # concat starts from zeros
        (dict(bidirectional=True), "bridge"),  # copy: sizes differ
        (dict(bidirectional=True, bridge="linear", attention="dot"), "attention"),
        (dict(input_feeding=True), "input_feeding"),
        (dict(feed_previous=False), "feed_previous"),
        (dict(tie_target_embedding=True), "tie_target_embedding"),
        (dict(hidden_size="128"), "hidden_size"),
        (dict(bidirectional="yes"), "bidirectional"),
    ],
)
def test_inconsistent_options_name_the_key(options, key):
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        Seq2SeqConfig(**BASE, **options)


def test_unknown_and_missing_keys_name_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**BASE, "hiden_size": 3}))
    with pytest.raises(ConfigError, match=r"config\.json: unknown key 'hiden_size'"):
        Seq2SeqConfig.load(path)
    path.write_text(json.dumps({"source_vocab_size": 3}))
    with pytest.raises(ConfigError, match=r"config\.json: .*target_vocab_size"):
        Seq2SeqConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"config\.json: not valid JSON"):
        Seq2SeqConfig.load(path)


def test_config_is_frozen():
    cfg = Seq2SeqConfig(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hidden_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "options, key",
    [
        (dict(epochs=0), "epochs"),
        (dict(lr_decay=0), "lr_decay"),
        (dict(target_tokenizer="bpe"), "target_tokenizer"),
        (dict(threads=-1), "threads"),
    ],
)
def test_train_config_validation(options, key):
    with pytest.raises(ConfigError, match=key):
        TrainConfig(**options)
