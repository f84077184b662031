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


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--strategy", "beam", "--beam-size", "32"], "beam_size: 32 is more than this model allows"),
        (["--max-length", "100000"], "max_length: 100000 is more than this model allows"),
        (["--suppress-tokens", "NOPE"], "suppress_tokens: 'NOPE' is not in the target vocabulary"),
    ],
)
def test_what_the_model_refuses_ends_the_job_before_any_worker_starts(small_bundle, tmp_path, capsys, flags, message):
    """With several workers these used to make every worker's start fail, and multiprocessing replaced them forever."""
    (tmp_path / "in.txt").write_text("abc\n")
    argv = ["bulk", str(tmp_path / "in.txt"), str(tmp_path / "out.jsonl"), str(small_bundle), "--workers", "2"]
    assert main([*argv, "--quiet", *flags]) == 2
    assert message in capsys.readouterr().err
    assert main([*argv[:3], str(tmp_path / "no-bundle"), "--workers", "2", "--quiet"]) == 2
    assert "no-bundle" in capsys.readouterr().err


def test_a_worker_that_cannot_start_ends_the_job(small_bundle, tmp_path, monkeypatch):
    """Whatever fails in a worker's start (here: its model load) ends the job with that error, once."""
    import s2s_runtime.serving.bulk as bulk

    def broken(*args, **kwargs):
        raise MemoryError("no room for the model")

    (tmp_path / "in.txt").write_text("abc\nde\n")
    job = BulkJob(str(tmp_path / "in.txt"), str(tmp_path / "out.jsonl"), str(small_bundle))
    bulk._worker.clear()
    monkeypatch.setattr(bulk, "load", broken)
    with pytest.raises(BulkError, match="a worker could not start: MemoryError: no room for the model"):
        bulk._start_worker(job.bundle, job.generation_options())
        bulk._decode_shard(job, 0, 0, ["abc"])


@pytest.mark.parametrize("size", [0, -5])
def test_a_shard_size_below_one_is_refused(small_bundle, tmp_path, capsys, size):
    (tmp_path / "in.txt").write_text("abc\n")
    argv = ["bulk", str(tmp_path / "in.txt"), str(tmp_path / "out.jsonl"), str(small_bundle), "--quiet"]
    assert main([*argv, "--shard-size", str(size)]) == 2
    assert f"shard_size: must be an int ≥ 1, got {size}" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def run_bulk(small_bundle, tmp_path, name, content: bytes, **job):
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "out.jsonl"
    run(BulkJob(str(tmp_path / name), str(out), str(small_bundle), **job), workers=1, progress=False)
    return [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]


def test_one_row_per_newline_whatever_other_separators_a_line_holds(small_bundle, tmp_path):
    lines = ["ab\u2028cd", "ef\u2029g", "h\x0bi", "j\x0ck", "l\x1em", "n\x85o", "crlf"]
    rows = run_bulk(small_bundle, tmp_path, "in.txt", ("\n".join(lines[:-1]) + "\ncrlf\r\n").encode())
    assert [r["source"] for r in rows] == lines
    jsonl = "".join(json.dumps({"source": text}, ensure_ascii=False) + "\n" for text in lines)
    assert [r["source"] for r in run_bulk(small_bundle, tmp_path, "in.jsonl", jsonl.encode())] == lines


def test_bad_rows_become_error_rows_and_the_job_goes_on(small_bundle, tmp_path):
    """A lone surrogate, a blank line, malformed JSON, a line nested 100,000 deep, and a line over MAX_LINE_BYTES each
    become an error row in place; the rows around them are decoded."""
    from s2s_runtime.serving.bulk_files import MAX_LINE_BYTES

    content = "\n".join(
        [
            '{"source": "abc"}',
            '{"source": "\\ud800"}',
            "",
            "{not json",
            "[" * 100_000 + "]" * 100_000,
            json.dumps({"source": "x" * (MAX_LINE_BYTES + 10)}),
            '{"source": "de"}',
        ]
    )
    rows = run_bulk(small_bundle, tmp_path, "in.jsonl", content.encode(), shard_size=2)
    assert [r["index"] for r in rows] == list(range(7))
    assert rows[0]["error"] is None and rows[6]["error"] is None and rows[6]["text"]
    assert "lone surrogate" in rows[1]["error"] and rows[1]["source"] is None
    assert "blank line" in rows[2]["error"]
    assert "in.jsonl:4" in rows[3]["error"] and "in.jsonl:5" in rows[4]["error"]
    assert f"more than {MAX_LINE_BYTES}" in rows[5]["error"] and rows[5]["source"] is None


def test_a_binary_text_file_names_the_file_and_line(small_bundle, tmp_path):
    rows = run_bulk(small_bundle, tmp_path, "in.txt", b"abc\n\xff\xfe\x00bin\nde\n")
    assert rows[1]["error"].startswith(f"{tmp_path / 'in.txt'}:2: not UTF-8") and rows[0]["text"] and rows[2]["text"]


def test_file_problems_are_one_line_and_exit_2(small_bundle, tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"source": "abc"}\n')
    (tmp_path / "a-file").write_text("")
    cases = [
        (str(tmp_path / "in.jsonl"), "the output would overwrite the input"),
        (str(tmp_path / "a-file" / "out.jsonl"), "a-file"),
    ]
    for output, message in cases:
        assert main(["bulk", str(tmp_path / "in.jsonl"), output, str(small_bundle), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "in.jsonl").read_text() == '{"source": "abc"}\n'


def test_parquet_output_of_texts_and_token_lists_is_refused_before_decoding(small_bundle, tmp_path, capsys):
    (tmp_path / "in.jsonl").write_text('{"source": "abc"}\n{"source": ["a", "b"]}\n')
    assert main(["bulk", str(tmp_path / "in.jsonl"), str(tmp_path / "out.parquet"), str(small_bundle), "--quiet"]) == 2
    assert "texts and token lists in one column cannot be written to Parquet" in capsys.readouterr().err


def test_bulk_ends_with_a_summary_and_rows_count_unknown_symbols(small_bundle, tmp_path, capsys):
    (tmp_path / "in.txt").write_text("abc\nab?c\n" + "x" * 5000 + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["bulk", str(tmp_path / "in.txt"), str(out), str(small_bundle), "--workers", "1", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "s2s bulk: 3 rows read, 3 written to" in err and "(1 failed)" in err
    rows = read_output(out)
    assert [r["unknown_source_tokens"] for r in rows] == [0, 1, 0]
