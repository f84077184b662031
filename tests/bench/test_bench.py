"""s2s bench end to end on a tiny model (numbers are not asserted, only that every part is measured and written)."""

import json
import sys

import pytest

pytest.importorskip("matplotlib")  # the bench extra: every bench command writes its plots
pytest.importorskip("tqdm")

from s2s_bench.cli import openvino_available
from s2s_bench.latency import decoder_flops_per_token, encoder_flops_per_source_token, floor_per_token
from s2s_runtime.cli import main


def test_bench_measures_every_contender_and_writes_reports(small_bundle, tmp_path, capsys, monkeypatch):
    import gc

    import s2s_bench.latency

    frozen_while_measuring = []
    real_measure = s2s_bench.latency.measure

    def measure(*args, **kwargs):  # the long-lived heap is out of the collector's reach while contenders run
        frozen_while_measuring.append(gc.get_freeze_count() > 0)
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(s2s_bench.latency, "measure", measure)
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
    assert frozen_while_measuring and all(frozen_while_measuring) and gc.get_freeze_count() == 0
    result = json.loads((out / "bench.json").read_text())
    seen = {(m["contender"], m["strategy"], m["batch_size"]) for m in result["measurements"]}
    baselines = ("PyTorch eager", "hand-written onnxruntime loop") + (
        ("hand-written OpenVINO loop",) if openvino_available() else ()
    )
    variants = (
        "s2s-runtime fp32, step loop",
        "s2s-runtime fp32",
        "s2s-runtime fp32, --encoder-op rnn",
        "s2s-runtime int8",
    )
    for contender in (*baselines, *variants):
        assert (contender, "greedy", 1) in seen and (contender, "greedy", 4) in seen
    assert ("s2s-runtime int8", "beam", 4) in seen and ("hand-written onnxruntime loop", "beam", 4) in seen
    assert ("PyTorch eager", "beam", 4) not in seen
    assert all(m["tokens"] > 0 and m["p50_ms"] <= m["p99_ms"] for m in result["measurements"])
    assert result["machine"]["matmul_gflops"] > 0
    compared = {
        (r["runtime"], r["versus"]) for r in result["ratios"] if (r["strategy"], r["batch_size"]) == ("greedy", 1)
    }
    assert compared == {(runtime, baseline) for runtime in variants for baseline in baselines} | {
        (later, earlier) for position, later in enumerate(variants) for earlier in variants[:position]
    }
    alone = result["graphs_alone"]
    assert alone["batch_size"] == 4 and alone["encoder_gflops"] > 0 and alone["step_gflops"] > 0
    assert (out / "bench.png").stat().st_size > 0 and "| s2s-runtime fp32 |" in (out / "bench.md").read_text()
    assert "per-token speed-up" in capsys.readouterr().out
    assert {m["mix"] for m in result["measurements"]} == {"mixed", "equal"} == {r["mix"] for r in result["ratios"]}
    assert result["mixes"]["equal"]["inputs"] == 3  # abc, xyz, bad: the most common length
    floor = result["machine"]["floor"]
    assert floor["empty_run_us"] > 0 and floor["step_weight_bytes"] > 0 and floor["bandwidth_gb_per_s"] > 0
    assert floor["encoder_weight_bytes_per_position"] > 0  # the Scan's weights, read from weights.bin's main scope
    assert set(floor["by_mix"]) == {"mixed", "equal"}
    assert all(f["us_per_token"] > floor["empty_run_us"] for f in floor["by_mix"].values())
    for m in result["measurements"]:  # each batch-1 row against the floor measured next to it, for its mix
        if m["batch_size"] == 1:
            assert m["floor_us_per_token"] > 0
            assert m["vs_floor"] == pytest.approx(m["us_per_token"] / m["floor_us_per_token"])
            assert 0 < m["physical_floor_us_per_token"] < m["floor_us_per_token"]
            assert m["vs_physical_floor"] == pytest.approx(m["us_per_token"] / m["physical_floor_us_per_token"])
        else:
            assert "vs_floor" not in m
    for key, graph in (("batch1_breakdown", True), ("batch1_breakdown_step_loop", False)):
        for mix, breakdown in result[key].items():  # the sessions' time and the rest add up
            parts = breakdown["us_per_token"]
            assert parts["python"] > 0 and breakdown["sequences"] == result["mixes"][mix]["inputs"]
            if graph:  # one call of the greedy graph per input, nothing step by step
                assert parts["greedy_graph"] > 0 and parts["encoder"] == parts["step"] == 0
            else:
                assert parts["encoder"] > 0 and parts["step"] > 0 and parts["greedy_graph"] == 0
            sessions = parts["encoder"] + parts["step"] + parts["greedy_graph"]
            assert sessions + parts["python"] == pytest.approx(parts["total"])
    report = (out / "bench.md").read_text()
    assert "Where s2s-runtime fp32's time goes at batch 1 (mixed inputs" in report
    assert "Where s2s-runtime fp32 (step loop)'s time goes at batch 1 (mixed inputs" in report
    costs = result["encoder_costs"]
    assert set(costs) == {"optimized", "--encoder-op rnn", "plain"} and all(
        set(c) == {"1", "4"} for c in costs.values()
    )
    assert all(c["4"]["per_position_us"] > 0 for c in costs.values())


def test_every_baseline_decodes_what_the_runtime_decodes(reverse_model):
    """A baseline that decodes differently is not a baseline: PyTorch eager, the hand-written loops and the batch-1
    export give the runtime's greedy outputs, input by input and in batches, and all but eager its beam outputs."""
    from s2s_bench.baselines import HandWrittenLoop, RuntimeContender, TorchEager
    from s2s_export.bundle_export import ExportOptions, export_bundle
    from s2s_export.checkpoint import load_checkpoint
    from s2s_export.data import task_pairs

    sources = [p.source for p in task_pairs("reverse", "dev")][:32]
    checkpoint = load_checkpoint(reverse_model["checkpoint"])
    plain = export_bundle(
        checkpoint,
        reverse_model["root"] / "plain-for-bench",
        validation_sources=sources,
        options=ExportOptions(plain=True, overwrite=True),
    )
    rnn_encoder = export_bundle(
        checkpoint,
        reverse_model["root"] / "rnn-encoder-for-bench",
        validation_sources=sources,
        options=ExportOptions(encoder_op="rnn", overwrite=True),
    )
    runtime = RuntimeContender("s2s-runtime fp32", reverse_model["bundle"], 1, 2)
    expected = runtime.decode(sources, "greedy")
    assert all(finished for _, finished in expected)
    contenders = [TorchEager(checkpoint, 1), HandWrittenLoop(plain, 1, 2)]
    contenders.append(RuntimeContender("s2s-runtime fp32, --encoder-op rnn", rnn_encoder, 1, 2))
    if openvino_available():
        contenders.append(HandWrittenLoop(plain, 1, 2, engine="OpenVINO"))
    for contender in contenders:
        assert [contender.decode([s], "greedy")[0] for s in sources] == expected, contender.name
        assert [o for i in range(0, 32, 8) for o in contender.decode(sources[i : i + 8], "greedy")] == expected
    beam = [ids for ids, _ in runtime.decode(sources, "beam")]
    for contender in contenders[1:]:
        assert [ids for ids, _ in contender.decode(sources, "beam")] == beam, contender.name


def test_bench_refuses_to_start_when_it_cannot_write_the_plot(small_bundle, tmp_path, monkeypatch):
    (tmp_path / "inputs.txt").write_text("abc\nhello\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    arguments = [
        "bench",
        str(small_bundle),
        "--inputs",
        str(tmp_path / "inputs.txt"),
        "--batch-sizes",
        "1",
        "--repeats",
        "1",
        "--min-sequences",
        "2",
        "--strategies",
        "greedy",
        "--out",
        str(tmp_path / "out"),
    ]
    with pytest.raises(SystemExit, match=r"the PNG needs matplotlib .*--no-plot writes none"):
        main(arguments)
    assert not (tmp_path / "out").exists()  # refused before measuring anything
    assert main([*arguments, "--no-plot"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bench.json", "bench.md"]


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


def test_floor_per_token_counts_the_encoder_per_source_position_and_a_call_per_sequence():
    machine = {
        "empty_run_us": 2.0,
        "bandwidth_gb_per_s": 100.0,  # 1e5 bytes per µs
        "step_weight_bytes": 800_000,
        "encoder_weight_bytes_per_position": 600_000,
    }
    # per token: 2 µs call + 8 µs step weights; per sequence of 4 tokens: one more call and 8 × 6 µs of encoder
    floor = floor_per_token(machine, 8, 4)
    assert floor["us_per_token"] == pytest.approx(2 + 8 + (2 + 8 * 6) / 4)
    assert (floor["calls_us"], floor["step_weights_us"], floor["encoder_weights_us"]) == pytest.approx((2.5, 8, 12))
    assert floor["physical_us_per_token"] == pytest.approx(8 + 12)  # the products alone, no call
    assert floor_per_token(machine, 16, 4)["us_per_token"] > floor_per_token(machine, 8, 4)["us_per_token"]


def test_contenders_take_turns_repeat_by_repeat():
    """A slow spell of a shared machine must fall on every contender, not on one: measure runs one repeat of each
    in turn (the round's probe first), after one warm-up call each."""
    from s2s_bench.baselines import Contender
    from s2s_bench.latency import measure

    calls = []

    class Recorder(Contender):
        def __init__(self, name: str):
            super().__init__(name, ("greedy",))

        def decode(self, sources, strategy):
            calls.append(self.name)
            return [([7, 8], True)] * len(sources)  # 3 tokens each, eos included

    rows = measure(
        [Recorder("a"), Recorder("b")],
        ["x", "y", "z", "w"],
        "greedy",
        2,
        repeats=3,
        min_sequences=4,
        each_round=lambda: calls.append("probe"),
    )
    assert calls == ["a", "b"] + ["probe", "a", "a", "b", "b"] * 3
    assert [(r.contender, r.sequences, r.tokens) for r in rows] == [("a", 4, 12), ("b", 4, 12)]


def test_the_floor_counts_the_weights_of_int8_graphs():
    """The int8 exports' matmuls (MatMulIntegerToFloat) were not counted: the floor of an int8 bundle had no weights,
    and the physical floor (weights alone) was zero."""
    import onnx

    from s2s_bench.latency import _dense_weight_bytes
    from s2s_runtime.bundle import BUILTIN_DIR

    step = onnx.load(str(BUILTIN_DIR / "g2p-en" / "decoder_step.onnx"))  # int8
    assert _dense_weight_bytes(step.graph) > 100_000


def test_cutover_bench_times_both_routes_per_batch_size(small_bundle, tmp_path, capsys):
    out = tmp_path / "cutover"
    argv = [str(small_bundle), "--batch-sizes", "1", "4", "--inputs", "16", "--repeats", "2", "--out", str(out)]
    assert main(["bench-cutover", *argv]) == 0
    result = json.loads((out / "cutover.json").read_text())
    [rows] = result["bundles"].values()
    assert [r["batch_size"] for r in rows] == [1, 4] and result["inputs"] == 16
    assert all(r["step_loop_us_per_word"] > 0 and r["greedy_graph_us_per_word"] > 0 and r["speedup"] > 0 for r in rows)
    assert "| greedy graph |" in (out / "cutover.md").read_text() and "speed-up" in capsys.readouterr().out


def test_g2p_bench_scores_with_and_without_stress_and_leaves_out_missing_peers(small_bundle, tmp_path, monkeypatch):
    from s2s_bench import g2p_baselines

    references = {"read": [["R", "EH1", "D"], ["R", "IY1", "D"]], "a": [["AH0"]]}
    both = g2p_baselines.scores({"read": ["R", "IY0", "D"], "a": ["AH0"]}, references)
    assert both["words"] == 2 and both["stress_wer"] == 50.0 and both["wer"] == 0.0
    assert both["stress_per"] == pytest.approx(100 / 4) and both["per"] == 0.0

    def missing():
        raise ImportError("not installed here")

    monkeypatch.setattr(g2p_baselines, "g2p_en_predictor", missing)
    monkeypatch.setattr(g2p_baselines, "phonetisaurus_predictor", lambda *a: missing())
    out = tmp_path / "g2p"
    assert main(["bench-g2p", str(small_bundle), "--limit", "20", "--out", str(out)]) == 0
    result = json.loads((out / "g2p.json").read_text())
    [(name, system)] = result["systems"].items()
    assert name.startswith(str(small_bundle)) and system["words"] == 20 == result["words"]
    assert 0 <= system["wer"] <= system["stress_wer"] <= 100  # removing stress can only make more words right
    assert "| stress-free WER % |" in (out / "g2p.md").read_text()
