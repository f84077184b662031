"""`s2s bulk`: every input exactly once, in input order, bad inputs as error rows, the same file for any number of
workers and after a kill and --resume."""

import json
import signal
import subprocess
import sys

import pytest

import s2s_runtime
from s2s_runtime.cli import main
from s2s_runtime.serving.bulk import BulkError, BulkJob, read_sources, run
from tests.conftest import random_sources, wait_until

pytest.importorskip("tqdm")
pyarrow = pytest.importorskip("pyarrow")
import pyarrow.parquet  # noqa: F811 (the submodule, after importorskip gave the package)


@pytest.fixture(scope="module")
def sources():
    words = random_sources(700, seed=21, high=14)
    words[5], words[50], words[300] = "", "x" * 5000, "ab?c"
    return words


def expected_records(bundle, sources):
    model = s2s_runtime.load(bundle, device="cpu")
    expected = []
    for index, source in enumerate(sources):
        try:
            result = model.generate(source)[0]
            expected.append((index, source, result.text, None))
        except ValueError as error:
            expected.append((index, source, None, str(error).replace("inputs[0]: ", "ValueError: ")))
    return expected


def read_output(path):
    if str(path).endswith(".parquet"):
        return pyarrow.parquet.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_text_input_jsonl_output_every_row_once_in_order(small_bundle, sources, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(sources) + "\n")
    out = tmp_path / "out.jsonl"
    assert (
        main(
            [
                "bulk",
                str(tmp_path / "in.txt"),
                str(out),
                str(small_bundle),
                "--workers",
                "1",
                "--shard-size",
                "100",
                "--quiet",
            ]
        )
        == 0
    )
    rows = read_output(out)
    assert [(r["index"], r["source"], r["text"], r["error"]) for r in rows] == expected_records(small_bundle, sources)
    assert rows[50]["error"].startswith("ValueError: 5000 source tokens") and rows[50]["text"] is None
    assert not (tmp_path / "out.jsonl.parts").exists()


def test_any_number_of_workers_writes_the_same_file(small_bundle, sources, tmp_path):
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": i, "word": w}) + "\n" for i, w in enumerate(sources)))
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}.jsonl"
        run(
            BulkJob(str(tmp_path / "in.jsonl"), str(out), str(small_bundle), column="word", shard_size=64),
            workers=workers,
            progress=False,
        )
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


def test_parquet_and_tsv(small_bundle, sources, tmp_path):
    pyarrow.parquet.write_table(
        pyarrow.table({"text": sources, "n": list(range(len(sources)))}), tmp_path / "in.parquet"
    )
    run(
        BulkJob(
            str(tmp_path / "in.parquet"),
            str(tmp_path / "out.parquet"),
            str(small_bundle),
            column="text",
            options={"strategy": "beam", "beam_size": 3, "num_hypotheses": 2},
        ),
        workers=1,
        progress=False,
    )
    rows = read_output(tmp_path / "out.parquet")
    model = s2s_runtime.load(small_bundle, device="cpu")
    beams = model.generate(sources[:40], strategy="beam", beam_size=3, num_hypotheses=2)
    assert [r["hypotheses"] for r in rows[:40]] == [[h.text for h in b.hypotheses] for b in beams]
    assert len(rows) == len(sources) and rows[50]["error"]
    (tmp_path / "in.tsv").write_text("id\tword\n" + "".join(f"{i}\t{w}\n" for i, w in enumerate(sources[:30])))
    assert read_sources(tmp_path / "in.tsv", "word") == sources[:30]
    with pytest.raises(BulkError, match="no column 'nope'"):
        read_sources(tmp_path / "in.tsv", "nope")
    with pytest.raises(BulkError, match="unknown input format"):
        read_sources(tmp_path / "in.csv", "word")


KILLABLE = """
import sys, time
import s2s_runtime.serving.bulk as bulk
original = bulk._write_shard
def slow(job, shard, records):  # one shard every 0.2 s: the job is still running when it is killed
    time.sleep(0.2)
    original(job, shard, records)
bulk._write_shard = slow
bulk.run(bulk.BulkJob(sys.argv[1], sys.argv[2], sys.argv[3], shard_size=50), workers=1, resume=True,
         progress=False)
"""


def test_a_killed_job_resumes_to_the_same_file(small_bundle, sources, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(sources) + "\n")
    reference = tmp_path / "reference.jsonl"
    run(BulkJob(str(tmp_path / "in.txt"), str(reference), str(small_bundle), shard_size=50), workers=1, progress=False)
    out = tmp_path / "out.jsonl"
    parts = tmp_path / "out.jsonl.parts"
    process = subprocess.Popen([sys.executable, "-c", KILLABLE, str(tmp_path / "in.txt"), str(out), str(small_bundle)])
    try:
        wait_until(lambda: len(list(parts.glob("shard-*.jsonl"))) >= 3, timeout=60)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not out.exists()
    done = sorted(parts.glob("shard-*.jsonl"))
    assert 3 <= len(done) < 14
    # Mark a finished shard: if --resume recomputed it, the mark would be gone.
    first = done[0].read_text().splitlines()
    marked = json.loads(first[0])
    marked["text"] = "marked"
    done[0].write_text("\n".join([json.dumps(marked)] + first[1:]) + "\n")
    assert (
        main(
            [
                "bulk",
                str(tmp_path / "in.txt"),
                str(out),
                str(small_bundle),
                "--workers",
                "2",
                "--shard-size",
                "50",
                "--resume",
                "--quiet",
            ]
        )
        == 0
    )
    rows, expected = read_output(out), read_output(reference)
    assert rows[0]["text"] == "marked"  # the finished shard was kept, not decoded again
    rows[0]["text"] = expected[0]["text"]
    assert rows == expected


def test_resume_refuses_another_job(small_bundle, tmp_path):
    (tmp_path / "in.txt").write_text("abc\ncab\n")
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    (parts / "job.json").write_text(
        json.dumps(
            {
                **BulkJob(str(tmp_path / "in.txt"), str(tmp_path / "out.jsonl"), str(small_bundle)).__dict__,
                "shard_size": 7,
            }
        )
    )
    with pytest.raises(BulkError, match=r"--resume of another job \(changed: shard_size"):
        run(
            BulkJob(str(tmp_path / "in.txt"), str(tmp_path / "out.jsonl"), str(small_bundle)),
            resume=True,
            progress=False,
        )


def test_bad_settings_are_refused_before_any_work(small_bundle, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("abc\n")
    assert main(["bulk", str(tmp_path / "in.txt"), str(tmp_path / "out.csv"), str(small_bundle)]) == 2
    assert "unknown output format" in capsys.readouterr().err
    assert (
        main(["bulk", str(tmp_path / "in.txt"), str(tmp_path / "out.jsonl"), str(small_bundle), "--beam-size", "3"])
        == 2
    )
    assert "beam_size: only used with strategy='beam'" in capsys.readouterr().err
    assert main(["bulk", str(tmp_path / "missing.txt"), str(tmp_path / "out.jsonl"), str(small_bundle)]) == 2
    assert "file not found" in capsys.readouterr().err
