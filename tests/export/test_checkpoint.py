import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from s2s_export.checkpoint import CheckpointError, expected_tensors, load_checkpoint, save_checkpoint
from s2s_export.config import ConfigError
from s2s_runtime.vocab import Vocab, VocabError
from tests.conftest import TARGET_VOCAB, random_checkpoint


@pytest.mark.parametrize(
    "options",
    [
        dict(attention="additive", cell="lstm", bidirectional=True, bridge="linear"),
        dict(tie_target_embedding=True, target_embedding_size=16, hidden_size=16),
    ],
)
def test_round_trip_gives_identical_outputs(tmp_path, options):
    original = random_checkpoint(1, **options)
    loaded = load_checkpoint(save_checkpoint(original, tmp_path / "ckpt"))
    ids, lengths = torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 2])
    kwargs = dict(start_id=2, eos_id=3, max_length=12)
    assert loaded.model.greedy(ids, lengths, **kwargs) == original.model.greedy(ids, lengths, **kwargs)
    target_in = torch.tensor([[2, 4, 5], [2, 6, 6]])
    assert torch.equal(loaded.model(ids, lengths, target_in), original.model(ids, lengths, target_in))
    if options.get("tie_target_embedding"):
        assert "decoder.output.weight" not in load_file(tmp_path / "ckpt" / "model.safetensors")
        assert loaded.model.decoder.output.weight is loaded.model.decoder.embedding.weight


def test_parameter_names_are_pytorch_standard():
    names = expected_tensors(random_checkpoint(0, cell="lstm", bidirectional=True, bridge="linear").config)
    assert {
        "encoder.rnn.weight_ih_l0_reverse",
        "encoder.rnn.bias_hh_l0",
        "decoder.rnn.weight_hh_l0",
        "bridge.hidden.weight",
        "bridge.cell.bias",
        "decoder.output.bias",
    } <= set(names)


@pytest.fixture
def saved(tmp_path):
    return save_checkpoint(random_checkpoint(0), tmp_path / "ckpt")


def test_tensor_shape_mismatch_names_the_tensor(saved):
    state = load_file(saved / "model.safetensors")
    state["decoder.output.bias"] = torch.zeros(3)
    save_file(state, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'decoder\.output\.bias' has shape \(3,\)"):
        load_checkpoint(saved)


def test_missing_and_unexpected_tensors(saved):
    state = load_file(saved / "model.safetensors")
    save_file({k: v for k, v in state.items() if k != "encoder.rnn.weight_hh_l0"}, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensor 'encoder\.rnn\.weight_hh_l0'"):
        load_checkpoint(saved)
    save_file({**state, "extra.weight": torch.zeros(1)}, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'extra\.weight'"):
        load_checkpoint(saved)


def test_vocabulary_missing_a_needed_role(saved):
    data = TARGET_VOCAB.to_dict()
    del data["specials"]["bos"]
    (saved / "target_vocab.json").write_text(json.dumps(data))
    with pytest.raises(VocabError, match=r"target_vocab\.json: missing the 'bos' special token"):
        load_checkpoint(saved)


def test_vocabulary_size_disagreeing_with_config(saved):
    Vocab(TARGET_VOCAB.tokens + ["zz"], TARGET_VOCAB.specials, "char").save(saved / "target_vocab.json")
    with pytest.raises(VocabError, match=r"target_vocab\.json: has 17 tokens but the config's target_vocab_size is 16"):
        load_checkpoint(saved)


def test_bad_config_and_unreadable_weights(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "colour": "red"}))
    with pytest.raises(ConfigError, match=r"config\.json: unknown key 'colour'"):
        load_checkpoint(saved)
    (saved / "config.json").write_text(json.dumps(config))
    (saved / "model.safetensors").write_bytes(b"\x80\x04 pickle? never")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors file"):
        load_checkpoint(saved)
