import datetime
import re

import pytest

from s2s_export.data import (
    DataError,
    bucketed_batches,
    cmudict_pairs,
    cmudict_split_of,
    encode_pairs,
    read_pairs,
    task_pairs,
)
from s2s_runtime.vocab import Vocab


def test_tsv_and_jsonl(tmp_path):
    (tmp_path / "d.tsv").write_text("ab\tb a\n\nc\td\te\n")
    assert [(p.source, p.target) for p in read_pairs(tmp_path / "d.tsv")] == [("ab", "b a"), ("c", "d\te")]
    (tmp_path / "d.jsonl").write_text('{"source": "x", "target": "y"}\n')
    assert read_pairs(tmp_path / "d.jsonl")[0].target == "y"


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("empty.tsv", "", r"empty\.tsv: no examples"),
        ("notab.tsv", "ab\tba\nabc cba\n", r"notab\.tsv:2: no tab"),
        ("bad.jsonl", '{"source": "x"}\n', r"bad\.jsonl:1: expected an object"),
        ("broken.jsonl", "{\n", r"broken\.jsonl:1: not valid JSON"),
    ],
)
def test_bad_data_names_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=message):
        read_pairs(tmp_path / name)


def test_missing_file_and_unknown_task(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_pairs(tmp_path / "nope.tsv")
    with pytest.raises(DataError, match="unknown task 'nope'"):
        task_pairs("nope", "train")


def test_generated_tasks_are_deterministic_and_correct():
    assert task_pairs("sort", "train", size=50, seed=3) == task_pairs("sort", "train", size=50, seed=3)
    assert task_pairs("sort", "train", size=50, seed=3) != task_pairs("sort", "train", size=50, seed=4)
    for pair in task_pairs("add", "dev", size=200):
        a, b = pair.source.split("+")
        assert int(pair.target) == int(a) + int(b)
    for pair in task_pairs("reverse", "test", size=200):
        assert pair.target == pair.source[::-1]
    for pair in task_pairs("dates", "train", size=300):
        datetime.date.fromisoformat(pair.target)
        assert str(int(pair.target[:4])) in pair.source


def test_cmudict_split_is_deterministic_disjoint_and_keeps_pronunciations_together():
    splits = {split: cmudict_pairs(split) for split in ("train", "dev", "test")}
    words = {split: {p.source for p in pairs} for split, pairs in splits.items()}
    assert (
        not (words["train"] & words["dev"])
        and not (words["train"] & words["test"])
        and not (words["dev"] & words["test"])
    )
    assert 0.85 < len(words["train"]) / sum(len(w) for w in words.values()) < 0.95
    assert cmudict_pairs("dev") == splits["dev"]
    assert all(cmudict_split_of(p.source) == "test" for p in splits["test"])
    multi = [p for p in splits["train"] if p.source == "read"]
    assert len(multi) >= 2 and all(not any(c.isdigit() for c in p.target) for p in multi)


def test_cmudict_stress_task_keeps_the_digits_and_is_the_same_split_and_order():
    plain, stressed = task_pairs("cmudict", "dev"), task_pairs("cmudict-stress", "dev")
    assert [p.source for p in stressed] == [p.source for p in plain]
    assert [re.sub(r"\d", "", p.target) for p in stressed] == [p.target for p in plain]
    read = [p.target for p in task_pairs("cmudict-stress", cmudict_split_of("read")) if p.source == "read"]
    assert read == ["R EH1 D", "R IY1 D"]  # a homograph's pronunciations, in CMUdict's order
    vowels = {t for p in stressed for t in p.target.split() if t[-1].isdigit()}
    assert {t[-1] for t in vowels} == {"0", "1", "2"}


def test_bucketed_batches_cover_everything_once_and_group_lengths():
    vocab = Vocab.build(["abcdefghij"], "char", ["pad", "unk", "bos", "eos"])
    pairs = task_pairs("reverse", "train", size=300)
    examples = encode_pairs(pairs, vocab, vocab, source_eos=False)
    import random

    batches = bucketed_batches(examples, 16, random.Random(0))
    assert sorted(id(e) for b in batches for e in b) == sorted(id(e) for e in examples)
    assert max(max(len(e.source_ids) for e in b) - min(len(e.source_ids) for e in b) for b in batches) <= 1
