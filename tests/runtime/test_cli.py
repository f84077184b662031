import io
import json

import onnx
import pytest

from s2s_runtime.cli import main


def test_generate_arguments_and_timing(reverse_model, capsys):
    assert main(["generate", str(reverse_model["bundle"]), "hello", "abc", "--timing", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["olleh", "cba"]
    assert "µs/token" in err and "2 sequences" in err


def test_generate_reads_stdin_and_prints_json(reverse_model, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("world\n\nab?\n"))
    assert main(["generate", str(reverse_model["bundle"]), "--json", "--device", "cpu"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["input"] for r in records] == ["world", "", "ab?"]
    assert records[0]["text"] == "dlrow" and records[0]["tokens"] == list("dlrow") and records[0]["score"] < 0
    assert records[1]["text"] == "" and records[2]["unknown_source_tokens"] == 1


def test_info(small_bundle, capsys):
    assert main(["info", str(small_bundle), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["config"]["attention"] == "general" and info["opset"] == 17 and info["parameters"] > 0
    assert set(info["files"]) == {
        "encoder.onnx",
        "decoder_step.onnx",
        "greedy.onnx",
        "weights.bin",
        "source_vocab.json",
        "target_vocab.json",
    }
    assert "CPUExecutionProvider" in info["available_providers"] and info["parity"]["passed"]
    assert info["graphs"] == ["decoder_step", "encoder", "greedy"] and info["lexicon"] is None
    assert info["target_views"] == {}
    assert main(["info", str(small_bundle)]) == 0
    assert "parameters:" in capsys.readouterr().out


def test_errors_are_reported_not_raised(tmp_path, small_bundle, capsys):
    assert main(["generate", str(tmp_path), "abc"]) == 2
    assert "s2s generate:" in capsys.readouterr().err
    assert main(["generate", str(small_bundle), "abc", "--max-length", "0", "--device", "cpu"]) == 2
    assert "max_length: must be ≥ 1" in capsys.readouterr().err


def test_train_then_export_then_generate(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--task",
                "sort",
                "--size",
                "300",
                "--out",
                str(tmp_path / "run"),
                "--epochs",
                "2",
                "--hidden-size",
                "16",
                "--attention",
                "dot",
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 2 and 0 <= summary["dev"]["exact_match"] <= 1
    assert main(["export", summary["checkpoint"], "--out", str(tmp_path / "bundle"), "--task", "sort"]) == 0
    assert "parity max" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "bundle"), "cab", "--device", "cpu"]) == 0
    with pytest.raises(SystemExit, match="already exists"):
        main(["export", summary["checkpoint"], "--out", str(tmp_path / "bundle")])
    table = tmp_path / "lexicon.tsv"
    lexicon = ["export", summary["checkpoint"], "--out", str(tmp_path / "lex"), "--lexicon", str(table)]
    table.write_text("cab\tNOPE\n")
    with pytest.raises(SystemExit, match=r"lexicon\.tsv\.gz:1: token 'NOPE' is not in the target vocabulary"):
        main(lexicon)
    table.write_text("cab\tc b a\n")
    assert main([*lexicon, "--overwrite"]) == 0
    assert "lexicon: 1 known inputs" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "lex"), "cab", "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["origin"] == "lexicon"
    rnn = tmp_path / "rnn-bundle"
    assert main(["export", summary["checkpoint"], "--out", str(rnn), "--task", "sort", "--encoder-op", "rnn"]) == 0
    assert "GRU" in {node.op_type for node in onnx.load(str(rnn / "encoder.onnx")).graph.node}
    with pytest.raises(SystemExit, match="encoder_op: 'rnn' with int8"):
        main(
            ["export", summary["checkpoint"], "--out", str(tmp_path / "q"), "--encoder-op", "rnn", "--quantize", "int8"]
        )
    with pytest.raises(SystemExit, match="give --preset, --task, or both --train and --dev"):
        main(["train", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="bridge: 'zeros' discards"):
        main(["train", "--task", "sort", "--out", str(tmp_path / "y"), "--bridge", "zeros"])


def test_generate_decoding_flags(reverse_model, capsys):
    bundle = str(reverse_model["bundle"])
    assert (
        main(
            [
                "generate",
                bundle,
                "hello",
                "--strategy",
                "beam",
                "--beam-size",
                "4",
                "--num-hypotheses",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [line[:2] for line in lines] == [["0", "0"], ["0", "1"], ["0", "2"]] and lines[0][3] == "olleh"
    assert (
        main(
            [
                "generate",
                bundle,
                "abc",
                "--strategy",
                "sample",
                "--seed",
                "3",
                "--top-k",
                "2",
                "--json",
                "--target-prefix",
                "c",
                "--suppress-tokens",
                "q",
                "--no-repeat-ngram-size",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert record["tokens"][0] == "c" and "q" not in record["tokens"] and len(record["hypotheses"]) == 1
    assert main(["generate", bundle, "stream", "--stream", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == "maerts\n"
    assert main(["generate", bundle, "abc", "--stream", "--strategy", "beam", "--device", "cpu"]) == 2
    assert "not streamable" in capsys.readouterr().err


def test_score_command(reverse_model, capsys, monkeypatch, tmp_path):
    bundle = str(reverse_model["bundle"])
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\tolleh\nabc\tabc\n"))
    assert main(["score", bundle, "--device", "cpu"]) == 0
    good, bad = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert float(good[0]) > float(bad[0]) and good[1:] == ["hello", "olleh"]
    (tmp_path / "pairs.tsv").write_text("abc\tcba\n")
    assert main(["score", bundle, "--file", str(tmp_path / "pairs.tsv"), "--json", "--device", "cpu"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["tokens"] == ["c", "b", "a"] and len(record["log_probs"]) == 4
    (tmp_path / "bad.tsv").write_text("abc cba\n")
    assert main(["score", bundle, "--file", str(tmp_path / "bad.tsv"), "--device", "cpu"]) == 2
    assert "bad.tsv:1: no tab" in capsys.readouterr().err


def test_serve_passes_its_flags_to_the_server(small_bundle, monkeypatch):
    pytest.importorskip("starlette")  # the serve extra
    import s2s_runtime.serving.http

    seen = {}
    monkeypatch.setattr(
        s2s_runtime.serving.http, "serve", lambda model, **kwargs: seen.update(model=model, **kwargs) or 0
    )
    assert (
        main(
            [
                "serve",
                str(small_bundle),
                "--device",
                "cpu",
                "--port",
                "8123",
                "--max-batch-size",
                "8",
                "--batch-workers",
                "2",
                "--cuda-graph",
                "--max-inputs",
                "5",
            ]
        )
        == 0
    )
    assert seen["port"] == 8123 and seen["host"] == "127.0.0.1"
    assert (seen["batcher_config"].max_batch_size, seen["batcher_config"].workers) == (8, 2)
    assert seen["config"].max_inputs == 5 and seen["model"].device == "cpu"


def test_options_may_come_anywhere_among_the_inputs(capsys):
    """`s2s generate g2p-en --strategy beam hello` used to fail with "unrecognized arguments: hello"."""
    assert main(["generate", "g2p-en", "--strategy", "beam", "hello", "--device", "cpu", "world"]) == 0
    beam = capsys.readouterr().out.splitlines()
    assert main(["generate", "g2p-en", "hello", "world", "--strategy", "beam", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines() == beam and len(beam) == 2
    with pytest.raises(SystemExit):
        main(["generate", "g2p-en", "hello", "--no-such-flag"])


def test_a_beam_size_alone_means_beam_search(capsys):
    """As in CTranslate2 and Hugging Face (it used to be "beam_size: only used with strategy='beam'")."""
    assert main(["generate", "g2p-en", "hello", "--beam-size", "4", "--json", "--device", "cpu"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main(["generate", "g2p-en", "hello", "--strategy", "beam", "--beam-size", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == alone
    assert main(["generate", "g2p-en", "hello", "--strategy", "greedy", "--beam-size", "4"]) == 2
    assert "beam_size: only used with strategy='beam'" in capsys.readouterr().err


def test_unknown_characters_are_reported_and_strict_refuses_them(capsys):
    """`1234` used to become `M AA K IY` silently (only --json showed the unknown count)."""
    assert main(["generate", "g2p-en", "h3llo", "hello", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    assert "inputs[0] 'h3llo': not in the source vocabulary: '3'" in captured.err and "hello'" not in captured.err
    assert main(["generate", "g2p-en", "h3llo", "--strict", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "not in the source vocabulary: '3'" in captured.err


def test_a_closed_stdout_ends_quietly_with_the_pipe_status():
    import subprocess
    import sys

    words = "\n".join(["hello"] * 20000) + "\n"
    command = [sys.executable, "-m", "s2s_runtime.cli", "generate", "g2p-en", "--device", "cpu"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(words.encode())
    process.stdin.close()
    assert process.stdout.readline().strip() == b"HH AH0 L OW1"
    process.stdout.close()  # as `| head -1` does
    assert process.wait(timeout=120) == 141
    assert b"Traceback" not in process.stderr.read()


def test_info_prints_the_parity_gate_beside_its_tolerance(capsys):
    """`max_abs_diff 0.000109` next to `tolerance 0.0001` and `passed: True` read as a failed gate; the gate is the
    scaled difference."""
    assert main(["info", "g2p-en", "--json"]) == 0
    parity = json.loads(capsys.readouterr().out)["parity"]
    assert parity["passed"] and parity["max_scaled_diff"] <= parity["tolerance"]
    assert main(["info", "g2p-en"]) == 0
    assert "max_scaled_diff" in capsys.readouterr().out


def test_every_option_flag_has_help_a_default_and_its_choices():
    """Generation flags had no help text and no choices (--return-attention, --replace-unknowns none at all)."""
    from s2s_runtime.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices  # argparse has no public accessor
    for name in ("generate", "serve", "bulk", "score"):
        for action in commands[name]._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (name, action.option_strings)
    generate = {a.dest: a for a in commands["generate"]._actions}
    assert set(generate["strategy"].choices) >= {"greedy", "beam", "sample", "alternatives"}
    assert generate["length_normalization"].choices == ["power", "gnmt"]
    assert "source token it attended to most" in generate["replace_unknowns"].help
    assert "(default: 0.0)" in generate["length_penalty"].help
