"""s2s bench end to end on a tiny model (numbers are not asserted, only that every part is measured and written)."""

import json

import pytest

pytest.importorskip("matplotlib")  # the bench extra: every bench command writes its plots
pytest.importorskip("tqdm")

from s2s_bench.latency import decoder_flops_per_token, encoder_flops_per_source_token
from s2s_runtime.cli import main


def test_bench_measures_every_contender_and_writes_reports(small_bundle, tmp_path, capsys):
    (tmp_path / "inputs.txt").write_text("abc\nhello\nxyz\nbad\n")
    out = tmp_path / "results"
    assert (
        main(
            [
                "bench",
                str(small_bundle),
                "--checkpoint",
                str(small_bundle.parent / "checkpoint"),
                "--inputs",
                str(tmp_path / "inputs.txt"),
                "--batch-sizes",
                "1",
                "4",
                "--repeats",
                "2",
                "--min-sequences",
                "4",
                "--beam-size",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads((out / "bench.json").read_text())
    seen = {(m["contender"], m["strategy"], m["batch_size"]) for m in result["measurements"]}
    for contender in ("PyTorch eager", "hand-written onnxruntime loop", "s2s-runtime fp32", "s2s-runtime int8"):
        assert (contender, "greedy", 1) in seen and (contender, "greedy", 4) in seen
    assert ("s2s-runtime int8", "beam", 4) in seen and ("hand-written onnxruntime loop", "beam", 4) in seen
    assert ("PyTorch eager", "beam", 4) not in seen
    assert all(m["tokens"] > 0 and m["p50_ms"] <= m["p99_ms"] for m in result["measurements"])
    assert result["machine"]["matmul_gflops"] > 0
    compared = {
        (r["runtime"], r["versus"]) for r in result["ratios"] if (r["strategy"], r["batch_size"]) == ("greedy", 1)
    }
    assert compared == {
        (runtime, baseline)
        for runtime in ("s2s-runtime fp32", "s2s-runtime int8")
        for baseline in ("PyTorch eager", "hand-written onnxruntime loop")
    } | {("s2s-runtime int8", "s2s-runtime fp32")}
    alone = result["graphs_alone"]
    assert alone["batch_size"] == 4 and alone["encoder_gflops"] > 0 and alone["step_gflops"] > 0
    assert (out / "bench.png").stat().st_size > 0 and "| s2s-runtime fp32 |" in (out / "bench.md").read_text()
    assert "per-token speed-up" in capsys.readouterr().out


def test_decoder_flops_count():
    config = dict(
        hidden_size=4,
        num_layers=1,
        cell="gru",
        bidirectional=False,
        conditioning="init",
        input_feeding=False,
        feed_previous=True,
        attention="none",
        target_vocab_size=10,
    )
    # embedding part folded (free), recurrent 3·4×4, output 4×10; 2 FLOPs per multiply-add
    assert decoder_flops_per_token(config, source_length=5) == 2 * (3 * 4 * 4) + 2 * (4 * 10)
    with_attention = dict(config, attention="general")
    assert decoder_flops_per_token(with_attention, 5) == pytest.approx(
        decoder_flops_per_token(config, 5) + 2 * 5 * (4 + 4) + 2 * (4 + 4) * 4
    )


def test_encoder_flops_count():
    config = dict(hidden_size=4, num_layers=1, cell="lstm", bidirectional=False, attention="none")
    assert encoder_flops_per_source_token(config) == 2 * (4 * 4 * 4)  # layer 0: recurrent only (input folded)
    two_bi = dict(config, num_layers=2, bidirectional=True, attention="general")
    # per direction: 2 recurrent + 1 input projection (from 8 = 2 directions × 4); keys 8 → 4
    assert encoder_flops_per_source_token(two_bi) == 2 * (2 * (2 * 16 * 4) + 2 * 16 * 8) + 2 * 8 * 4


def test_ranking_bench_compares_both_beam_paths(capsys):
    from s2s_bench.ranking import main as ranking_main

    assert ranking_main(["--vocab", "64", "--batch-sizes", "3", "--repeats", "1"]) == 0
    assert "batch 3: full log-probs" in (out := capsys.readouterr().out) and "outputs identical" in out


def test_soak_drives_mixed_traffic_and_records_memory(small_bundle, tmp_path):
    """`s2s bench-serve --soak`: a real server process, mixed traffic (bad requests included), every answer
    checked, throughput, latency and RSS per interval in JSON and PNG."""
    for module in ("starlette", "uvicorn", "aiohttp", "httpx"):  # a server and its load generator
        pytest.importorskip(module)
    out = tmp_path / "soak"
    assert (
        main(
            [
                "bench-serve",
                str(small_bundle),
                "--soak",
                "2",
                "--soak-interval",
                "1",
                "--clients",
                "4",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads((out / "bench-soak.json").read_text())
    assert len(result["samples"]) >= 2 and result["requests"] > 0 and result["lost_or_mismatched"] == 0
    assert all(s["rss_mb"] > 0 and s["p50_ms"] <= s["p99_ms"] for s in result["samples"])
    assert (out / "bench-soak.png").stat().st_size > 0


def test_training_bench_times_each_thread_count(tmp_path, capsys):
    assert (
        main(
            [
                "bench-train",
                "--presets",
                "reverse",
                "--threads",
                "1",
                "2",
                "--steps",
                "1",
                "--repeats",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    (result,) = json.loads((tmp_path / "bench-train.json").read_text())
    assert result["preset"] == "reverse" and result["parameters"] > 0
    assert [row["threads"] for row in result["rows"]] == [1, 2]
    assert result["rows"][0]["speedup_vs_1_thread"] == 1.0 and all(row["ms_per_step"] > 0 for row in result["rows"])
    assert "| reverse |" in (tmp_path / "bench-train.md").read_text()
