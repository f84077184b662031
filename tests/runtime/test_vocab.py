import json

import pytest

from s2s_runtime.vocab import Vocab, VocabError


def test_build_is_deterministic_with_roles_first_and_min_frequency():
    vocab = Vocab.build(["abba", "cab", "d"], "char", ["pad", "unk", "eos"], min_frequency=2)
    assert vocab.tokens == ["<pad>", "<unk>", "</s>", "a", "b"]
    assert vocab.special_ids == {"pad": 0, "unk": 1, "eos": 2}


def test_space_tokenizer_and_unknowns():
    vocab = Vocab.build(["HH AH0", "L OW1"], "space", ["unk", "eos"])
    assert vocab.decode(vocab.encode("L AH0")) == "L AH0"
    assert vocab.encode(["ZZ"]) == [vocab.id_of("unk")]


def test_roles_may_sit_anywhere_and_be_absent(tmp_path):
    vocab = Vocab(["x", "y", "<e>"], {"eos": "<e>"}, "char")
    vocab.save(tmp_path / "v.json")
    loaded = Vocab.load(tmp_path / "v.json")
    assert loaded == vocab and loaded.id_of("eos") == 2
    with pytest.raises(VocabError, match="has no 'unk'"):
        loaded.encode("z")
    with pytest.raises(VocabError, match=r"missing the 'bos' special token, needed because"):
        loaded.require(["bos"], "decoding starts from it")


@pytest.mark.parametrize(
    "data, message",
    [
        ({"tokens": ["a", "a"], "specials": {}, "tokenizer": "char"}, "appears more than once"),
        ({"tokens": ["a"], "specials": {"eos": "</s>"}, "tokenizer": "char"}, "not in 'tokens'"),
        ({"tokens": ["a"], "specials": {"end": "a"}, "tokenizer": "char"}, "unknown special role 'end'"),
        ({"tokens": ["a"], "specials": {}, "tokenizer": "bpe"}, "tokenizer 'bpe'"),
        ({"tokens": ["a"], "specials": {}}, "missing key 'tokenizer'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_vocab_files_name_the_file(tmp_path, data, message):
    path = tmp_path / "target_vocab.json"
    path.write_text(json.dumps(data))
    with pytest.raises(VocabError, match=message) as error:
        Vocab.load(path)
    assert "target_vocab.json" in str(error.value)
