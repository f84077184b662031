import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

import s2s_export.bundle_export as bundle_export
from s2s_export.checkpoint import save_checkpoint
from s2s_export.onnx_graphs import build_decoder_step, build_encoder
from s2s_export.parity import TOLERANCE, ParityError, ParityReport, check_parity, compare, session
from s2s_runtime import roles
from s2s_runtime.bundle import sha256_of
from tests.conftest import (
    EXTRA_OPTIONS,
    GRID,
    SMALL,
    SOURCE_VOCAB,
    grid_id,
    random_checkpoint,
    random_sources,
    write_bundle,
)

SOURCE_IDS = [SOURCE_VOCAB.encode(s) for s in random_sources(24, seed=5)]


@pytest.mark.parametrize("options", GRID + EXTRA_OPTIONS, ids=grid_id)
def test_parity_over_architecture_grid(options):
    checkpoint = random_checkpoint(7, **options)
    report = check_parity(checkpoint, build_encoder(checkpoint.model), build_decoder_step(checkpoint.model), SOURCE_IDS)
    summary = report.to_dict()
    assert summary["passed"] and summary["greedy_ids_identical"] and summary["max_abs_diff"] <= 1e-4
    assert {1, 3, 17} <= set(summary["batch_sizes"])
    assert max(summary["source_lengths"]) > max(len(s) for s in SOURCE_IDS)  # longer than any validation source


LSTM_GRID = [o for o in GRID + EXTRA_OPTIONS if o.get("cell") == "lstm"]


@pytest.mark.parametrize("options", LSTM_GRID, ids=grid_id)
def test_lstm_encoders_as_scans_match_pytorch(options):
    """The Scan form int8 bundles quantize: the same parity as the LSTM op, padding invariance included."""
    checkpoint = random_checkpoint(7, **options)
    encoder = build_encoder(checkpoint.model, encoder_op="scan")
    assert "LSTM" not in {node.op_type for node in encoder.model.graph.node}
    summary = check_parity(checkpoint, encoder, build_decoder_step(checkpoint.model), SOURCE_IDS).to_dict()
    assert summary["passed"] and summary["greedy_ids_identical"] and summary["max_abs_diff"] <= 1e-4


@pytest.mark.parametrize("options", GRID + EXTRA_OPTIONS, ids=grid_id)
def test_rnn_op_encoders_match_pytorch(options):
    """encoder_op="rnn": the ONNX GRU/LSTM op, layer 0 over one-hot ids with the folded embedding table as its
    input weights where the source vocabulary is no larger than the embedding — the same parity, padded batches of
    mixed lengths included."""
    checkpoint = random_checkpoint(7, **{**options, "source_embedding_size": len(SOURCE_VOCAB)})
    encoder = build_encoder(checkpoint.model, encoder_op="rnn")
    ops = {node.op_type for node in encoder.model.graph.node}
    assert "Scan" not in ops and "OneHot" in ops and checkpoint.model.cfg.cell.upper() in ops
    summary = check_parity(checkpoint, encoder, build_decoder_step(checkpoint.model), SOURCE_IDS).to_dict()
    assert summary["passed"] and summary["greedy_ids_identical"] and summary["max_abs_diff"] <= 1e-4


def test_rnn_op_encoders_read_the_embedding_when_the_vocabulary_is_larger():
    checkpoint = random_checkpoint(7, cell="gru", num_layers=2, bidirectional=True, bridge="linear", **SMALL)
    assert checkpoint.model.cfg.source_vocab_size > SMALL["source_embedding_size"]
    encoder = build_encoder(checkpoint.model, encoder_op="rnn")
    assert "OneHot" not in {node.op_type for node in encoder.model.graph.node}
    summary = check_parity(checkpoint, encoder, build_decoder_step(checkpoint.model), SOURCE_IDS).to_dict()
    assert summary["passed"] and summary["greedy_ids_identical"]


def test_an_unknown_or_unquantizable_encoder_op_is_refused():
    with pytest.raises(ValueError, match="encoder_op: 'gru' is not one of auto, scan, rnn"):
        bundle_export.ExportOptions(encoder_op="gru")
    with pytest.raises(ValueError, match="encoder_op: 'rnn' with int8: onnxruntime's GRU/LSTM ops have no"):
        bundle_export.ExportOptions(encoder_op="rnn", precision="int8")
    with pytest.raises(ValueError, match="encoder_op: 'x'"):
        build_encoder(random_checkpoint(7, cell="gru", hidden_size=16).model, encoder_op="x")


def encode_both(checkpoint, sources):
    """PyTorch and onnxruntime encoder outputs plus one decoder step, for a padded batch."""
    lengths = np.array([len(s) for s in sources])
    ids = np.zeros((len(sources), lengths.max()), dtype=np.int64)
    for row, source in enumerate(sources):
        ids[row, : len(source)] = source
    encoder, decoder = build_encoder(checkpoint.model), build_decoder_step(checkpoint.model)
    with torch.no_grad():
        expected = {
            k: v.numpy() for k, v in checkpoint.model.encode(torch.from_numpy(ids), torch.from_numpy(lengths)).items()
        }
    got = dict(
        zip(
            [o.role for o in encoder.outputs],
            session(encoder).run(None, {"source_ids": ids, "source_lengths": lengths}),
            strict=True,
        )
    )
    controls = {roles.PREVIOUS_IDS: np.full(len(sources), 2), roles.TOP_K: np.array([3])}
    feeds = {io.name: controls[io.role] if io.role in controls else got[io.role] for io in decoder.inputs}
    step = dict(zip([o.role for o in decoder.outputs], session(decoder).run(None, feeds), strict=True))
    return expected, got, step


def row_view(values, row, length):
    """One row of every encoder/step tensor, cut to the row's own source length."""
    out = {}
    for role, value in values.items():
        if role in (roles.STATE_H, roles.STATE_C):
            out[role] = value[:, row]
        elif role in (roles.MEMORY, roles.ATTENTION_KEYS, roles.MEMORY_BIAS, roles.ATTENTION):
            out[role] = value[row, :length]
        else:
            out[role] = value[row]
    return out


# the options the converters brought: each is checked for padding invariance too
CONVERSION_OPTIONS = [
    o
    for o in EXTRA_OPTIONS
    if {"encoder_hidden_size", "attention_placement", "attention_combine"} & set(o) or o.get("bridge") == "linear_relu"
]


@pytest.mark.parametrize(
    "options",
    [
        dict(cell="lstm", bidirectional=True, bridge="linear", attention="additive", num_layers=2, hidden_size=16),
        dict(cell="gru", bidirectional=True, bridge="linear", conditioning="both", hidden_size=16),
        dict(cell="gru", attention="dot", input_feeding=True, hidden_size=16),
        *CONVERSION_OPTIONS,
    ],
    ids=["bilstm-additive", "bigru-both", "gru-dot-feed", *map(grid_id, CONVERSION_OPTIONS)],
)
def test_padding_never_leaks_into_states(options):
    checkpoint = random_checkpoint(11, **options)
    short = SOURCE_VOCAB.encode("abc")
    alone = encode_both(checkpoint, [short])
    mixed = encode_both(
        checkpoint,
        [SOURCE_VOCAB.encode("jihgfedcbajihgfedcba"), short, SOURCE_VOCAB.encode("abcdefghijabcdefghijabcdefghij")],
    )
    for alone_values, mixed_values in zip(alone, mixed, strict=True):  # PyTorch encoder, ONNX encoder, ONNX step
        a, m = row_view(alone_values, 0, len(short)), row_view(mixed_values, 1, len(short))
        for role in a:
            np.testing.assert_allclose(m[role], a[role], atol=1e-6, err_msg=role)
    model = checkpoint.model
    kwargs = dict(start_id=2, eos_id=3, max_length=15)
    batch = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 3, 4], short + [0] * 9])
    assert (
        model.greedy(batch, torch.tensor([12, 3]), **kwargs)[1]
        == model.greedy(torch.tensor([short]), torch.tensor([3]), **kwargs)[0]
    )


def test_bundle_manifest_lists_roles_checksums_versions_and_parity(tmp_path):
    bundle = write_bundle(random_checkpoint(2, attention="general", cell="lstm", hidden_size=16), tmp_path)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["format_version"] == 3 and manifest["opset"] == 17
    assert set(manifest["files"]) == {
        "encoder.onnx",
        "decoder_step.onnx",
        "greedy.onnx",
        "weights.bin",
        "source_vocab.json",
        "target_vocab.json",
    }
    assert all(sha256_of(bundle / name) == digest for name, digest in manifest["files"].items())
    step = manifest["graphs"]["decoder_step"]
    assert step["inputs"]["state.c"] == {"name": "state_c", "dtype": "float32", "shape": [1, "batch", 16]}
    assert step["outputs"]["log_probs"]["shape"] == ["batch", 16]
    assert manifest["parity"]["passed"] and manifest["producer"]["torch"] == torch.__version__
    assert manifest["source"]["special_ids"] == {"pad": 0, "unk": 1, "eos": 2}
    assert manifest["parameters"] == sum(
        p.numel() for p in random_checkpoint(2, attention="general", cell="lstm", hidden_size=16).model.parameters()
    )
    with pytest.raises(FileExistsError, match="already exists"):
        write_bundle(random_checkpoint(2), tmp_path)


def test_the_greedy_graph_shares_the_weights_and_is_checked_at_export(tmp_path, monkeypatch):
    """Each weight is stored once (weights.bin), whatever graph uses it; the export checks the greedy graph against
    the step loop and records it; --no-greedy writes self-contained graphs as before."""
    checkpoint = random_checkpoint(3, cell="lstm", attention="general", num_layers=2, hidden_size=32)
    bundle = write_bundle(checkpoint, tmp_path / "with")
    shared = (bundle / "weights.bin").stat().st_size
    referenced = {}
    for name in ("encoder.onnx", "decoder_step.onnx", "greedy.onnx"):  # structure only: the weights live apart
        graph = onnx.load(str(bundle / name), load_external_data=False).graph
        referenced[name] = sum(
            int({e.key: e.value for e in t.external_data}["length"]) for t in graph.initializer if t.external_data
        )
        assert (bundle / name).stat().st_size < 0.1 * shared
    # the greedy graph names the encoder's and the step's tensors again, the file holds them once
    assert referenced["greedy.onnx"] == referenced["encoder.onnx"] + referenced["decoder_step.onnx"]
    assert referenced["greedy.onnx"] <= shared < referenced["greedy.onnx"] * 1.05
    greedy = onnx.load(str(bundle / "greedy.onnx"), load_external_data=False)
    assert [n.op_type for n in greedy.graph.node].count("Loop") == 1
    parity = json.loads((bundle / "manifest.json").read_text())["parity"]["greedy_graph"]
    assert parity["passed"] and parity["ids_identical"] and parity["max_score_diff"] <= 1e-6
    save_checkpoint(checkpoint, tmp_path / "checkpoint")
    plain = bundle_export.export_bundle(
        tmp_path / "checkpoint", tmp_path / "without", options=bundle_export.ExportOptions(greedy=False)
    )
    manifest = json.loads((plain / "manifest.json").read_text())
    assert "greedy" not in manifest["graphs"] and "greedy_graph" not in manifest["parity"]
    assert set(manifest["files"]) == {"encoder.onnx", "decoder_step.onnx", "source_vocab.json", "target_vocab.json"}
    size = {b: sum(p.stat().st_size for p in b.iterdir()) for b in (bundle, plain)}
    assert size[bundle] < size[plain] * 1.1  # one more graph, no second copy of the weights
    # A greedy graph that starts its rows from another token decodes differently: the export refuses it.
    real = bundle_export.build_greedy
    monkeypatch.setattr(bundle_export, "build_greedy", lambda *a, start_id, **k: real(*a, start_id=start_id + 5, **k))
    with pytest.raises(ParityError, match="greedy graph does not decode as the encoder and step graphs do"):
        bundle_export.export_bundle(tmp_path / "checkpoint", tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()


def test_a_wrong_graph_fails_the_report(monkeypatch):
    """The report can say no: a step graph with a wrong bias fails it (passed and greedy_ids_identical False, each
    disagreement named), where the same graphs untouched pass."""
    checkpoint = random_checkpoint(4, hidden_size=16)
    encoder, decoder = build_encoder(checkpoint.model), build_decoder_step(checkpoint.model)
    assert check_parity(checkpoint, encoder, decoder, SOURCE_IDS).to_dict()["passed"]
    bias = next(i for i in decoder.model.graph.initializer if i.name.startswith("output_b"))
    values = numpy_helper.to_array(bias).copy()
    values[3] += 5.0  # eos becomes likely: the greedy ids differ too
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    report = check_parity(checkpoint, encoder, decoder, SOURCE_IDS)
    summary = report.to_dict()
    assert not summary["passed"] and not summary["greedy_ids_identical"]
    assert any("log_probs" in failure for failure in report.failures)


def test_the_gate_allows_float32_rounding_and_nothing_more():
    """Judged against float64: graphs as far from it as float32 PyTorch's own rounding (here 3e-4, three times the
    base tolerance, which comparing one float32 result with the other would fail) pass; an error beyond a small
    multiple of that rounding fails."""
    rng = np.random.default_rng(0)
    exact = rng.normal(size=(4, 16))  # (B, vocab), float64
    float32 = exact + rng.choice([-3e-4, 3e-4], size=exact.shape)
    rounded_otherwise = exact - (float32 - exact)  # as far from float64 as float32 PyTorch, the other way
    report = ParityReport(TOLERANCE)
    compare(report, "decoder_step", "log_probs", exact, float32, rounded_otherwise, shape="s", batch=4, source_length=3)
    assert report.failures == [] and report.torch_float32_max_scaled_diff > TOLERANCE
    wrong = exact + 0.05 * (np.arange(16) == 3)  # one logit off: a wrong bias
    compare(report, "decoder_step", "log_probs", exact, float32, wrong, shape="s", batch=4, source_length=3)
    assert len(report.failures) == 1 and "differs from float64 PyTorch" in report.failures[0]


def test_a_wrong_gate_order_fails(cell="gru"):
    """Graphs built from weights whose first two gates are swapped (r and z of a GRU) fail against the real model."""
    checkpoint = random_checkpoint(6, hidden_size=16, cell=cell)
    swapped = random_checkpoint(6, hidden_size=16, cell=cell)
    with torch.no_grad():
        weight = swapped.model.decoder.rnn.weight_hh_l0  # (3H, H): r, z, n
        weight.copy_(torch.cat([weight[16:32], weight[:16], weight[32:]]))
    report = check_parity(checkpoint, build_encoder(swapped.model), build_decoder_step(swapped.model), SOURCE_IDS)
    assert not report.to_dict()["passed"]
    assert any("differs from float64 PyTorch" in failure for failure in report.failures)


def test_a_tolerance_given_by_the_user_is_recorded(tmp_path):
    bundle = bundle_export.export_bundle(
        save_checkpoint(random_checkpoint(2, hidden_size=16), tmp_path / "checkpoint"),
        tmp_path / "bundle",
        options=bundle_export.ExportOptions(parity_tolerance=1e-3, target_length_ratio=0, target_length_offset=20),
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["parity"]["tolerance"] == 1e-3 and manifest["parity"]["tolerance_set_by_user"]
    assert manifest["parity"]["reference"] == "float64 PyTorch"
    assert manifest["limits"]["max_target_length"] == {"ratio": 0, "offset": 20}


def test_failed_parity_names_the_graph_and_leaves_no_bundle(tmp_path, monkeypatch):
    checkpoint = random_checkpoint(4, hidden_size=16)
    real_build = bundle_export.build_decoder_step

    def tampered(model, **kwargs):
        graph = real_build(model, **kwargs)
        weight = next(i for i in graph.model.graph.initializer if i.name.startswith("output_b"))
        weight.CopyFrom(
            numpy_helper.from_array(
                numpy_helper.to_array(weight) + np.linspace(0, 0.01, weight.dims[0], dtype=np.float32), weight.name
            )
        )
        return graph

    monkeypatch.setattr(bundle_export, "build_decoder_step", tampered)
    with pytest.raises(
        ParityError,
        match=r"decoder_step: output 'log_probs' differs from float64 PyTorch .* > 0.0001: "
        r".*\(inputs: source_ids \[1, ",
    ):
        write_bundle(checkpoint, tmp_path)
    assert not (tmp_path / "bundle").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]  # no staging directory left behind either


def test_graphs_are_valid_onnx_with_dynamic_batch_and_length(tmp_path):
    bundle = write_bundle(random_checkpoint(5, attention="additive", hidden_size=16), tmp_path)
    encoder = onnx.load(str(bundle / "encoder.onnx"))
    onnx.checker.check_model(encoder, full_check=True)
    dims = [d.dim_param for d in encoder.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "source_length"]
    encoder_ops = {n.op_type for n in encoder.graph.node} | {n.op_type for n in scan_body(bundle).node}
    assert not {"GRU", "LSTM"} & encoder_ops
    decoder = onnx.load(str(bundle / "decoder_step.onnx"))
    decoder_ops = {n.op_type for n in decoder.graph.node}
    assert not {"GRU", "LSTM", "Gemm"} & decoder_ops  # primitive ops only
    # one TopK gives the ranked candidates and, with top_k = 1, the greedy choice: no ArgMax/ReduceMax beside it
    assert "TopK" in decoder_ops and not {"ArgMax", "ReduceMax"} & decoder_ops


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_plain_and_optimized_graphs_generate_identically(tmp_path, cell):
    import s2s_runtime
    from s2s_export.bundle_export import ExportOptions

    checkpoint = random_checkpoint(
        8,
        cell=cell,
        attention="general",
        input_feeding=True,
        num_layers=2,
        hidden_size=16,
        bidirectional=True,
        bridge="linear",
    )
    optimized = write_bundle(checkpoint, tmp_path / "optimized")
    plain = export_bundle_with(checkpoint, tmp_path / "plain", ExportOptions(plain=True, validation_size=16))
    ops = {
        (name, graph): {n.op_type for n in onnx.load(str(b / f"{graph}.onnx")).graph.node}
        for name, b in (("optimized", optimized), ("plain", plain))
        for graph in ("encoder", "decoder_step")
    }
    rnn_op = cell.upper()
    assert rnn_op in ops["plain", "decoder_step"] and "Gemm" in ops["plain", "decoder_step"]
    assert not {"LSTM", "GRU", "Gemm"} & ops["optimized", "decoder_step"]
    assert rnn_op in ops["plain", "encoder"]
    assert ("Scan" if cell == "gru" else "LSTM") in ops["optimized", "encoder"]  # the faster kernel per cell type
    assert json.loads((plain / "manifest.json").read_text())["graph_variant"] == "plain"
    sources = random_sources(15, seed=2)
    for options in (dict(strategy="beam", beam_size=3), dict()):  # greedy: chosen in the graph vs in numpy
        results = [s2s_runtime.load(b, device="cpu").generate(sources, **options) for b in (optimized, plain)]
        assert [r.ids for r in results[0]] == [r.ids for r in results[1]]
        assert [r.score for r in results[0]] == pytest.approx([r.score for r in results[1]], abs=1e-4)


def test_rnn_op_encoder_bundles_generate_what_scan_bundles_do(tmp_path):
    import s2s_runtime
    from s2s_export.bundle_export import ExportOptions

    checkpoint = random_checkpoint(
        8, cell="gru", attention="general", num_layers=2, bidirectional=True, bridge="linear", hidden_size=16
    )
    scan = export_bundle_with(checkpoint, tmp_path / "scan", ExportOptions(validation_size=16))
    rnn = export_bundle_with(checkpoint, tmp_path / "rnn", ExportOptions(encoder_op="rnn", validation_size=16))
    ops = {
        name: {n.op_type for n in onnx.load(str(b / "encoder.onnx")).graph.node}
        for name, b in (("scan", scan), ("rnn", rnn))
    }
    assert "Scan" in ops["scan"] and {"GRU", "OneHot"} <= ops["rnn"] and "Scan" not in ops["rnn"]
    sources = random_sources(15, seed=2)
    for options in (dict(strategy="beam", beam_size=3), dict()):
        results = [s2s_runtime.load(b, device="cpu").generate(sources, **options) for b in (scan, rnn)]
        assert [r.ids for r in results[0]] == [r.ids for r in results[1]]
        assert [r.score for r in results[0]] == pytest.approx([r.score for r in results[1]], abs=1e-4)


def export_bundle_with(checkpoint, directory, options):
    from s2s_export.checkpoint import save_checkpoint

    save_checkpoint(checkpoint, directory / "checkpoint")
    return bundle_export.export_bundle(
        directory / "checkpoint", directory / "bundle", validation_sources=random_sources(16), options=options
    )


def scan_body(bundle) -> onnx.GraphProto:
    encoder = onnx.load(str(bundle / "encoder.onnx"))
    return next(n for n in encoder.graph.node if n.op_type == "Scan").attribute[0].g


def test_int8_and_fp16_exports_report_their_quality(tmp_path):
    import s2s_runtime
    from s2s_export.bundle_export import ExportOptions

    checkpoint = random_checkpoint(8, attention="general", hidden_size=32)
    int8 = export_bundle_with(checkpoint, tmp_path / "int8", ExportOptions(precision="int8", validation_size=16))
    manifest = json.loads((int8 / "manifest.json").read_text())
    assert manifest["precision"] == "int8" and manifest["quality"]["measured"]
    assert 0.0 <= manifest["quality"]["exact_match_vs_fp32"] <= 1.0 and manifest["parity"]["passed"]
    assert "MatMulIntegerToFloat" in {n.op_type for n in onnx.load(str(int8 / "decoder_step.onnx")).graph.node}
    assert "MatMulIntegerToFloat" in {n.op_type for n in scan_body(int8).node}  # the encoder's recurrence too
    assert s2s_runtime.load(int8, device="cpu").generate("abc")[0].ids is not None
    fp16 = export_bundle_with(checkpoint, tmp_path / "fp16", ExportOptions(precision="float16", validation_size=16))
    manifest = json.loads((fp16 / "manifest.json").read_text())
    assert manifest["precision"] == "float16" and manifest["quality"]["measured"] is False
    decoder = onnx.load(str(fp16 / "decoder_step.onnx"))
    onnx.checker.check_model(decoder, full_check=True)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in decoder.graph.initializer)
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in scan_body(fp16).initializer)
    with pytest.raises(s2s_runtime.DeviceError, match=r"float16 .* runs on CUDA only"):
        s2s_runtime.load(fp16, device="cpu")


@pytest.mark.parametrize(
    "options",
    [
        dict(attention="general", hidden_size=32, bidirectional=True, bridge="linear"),
        dict(cell="lstm", num_layers=2, bidirectional=True, bridge="linear", attention="general", hidden_size=32),
        dict(cell="lstm", conditioning="both", bridge="linear", hidden_size=32),
    ],
    ids=["gru-attention", "lstm-2-layers-attention", "lstm-concat"],
)
def test_int8_is_batch_independent_and_quantizes_every_weight_matmul(tmp_path, options):
    """An input decoded alone and inside batches of other inputs gives the same output in int8, as in fp32:
    activations are quantized with scales fixed at export, never per batch."""
    import s2s_runtime
    from s2s_export.bundle_export import ExportOptions
    from s2s_export.quantize import weight_matmuls

    checkpoint = random_checkpoint(8, **options)
    int8 = export_bundle_with(checkpoint, tmp_path / "int8", ExportOptions(precision="int8", validation_size=32))
    for name in ("encoder.onnx", "decoder_step.onnx"):
        graph = onnx.load(str(int8 / name)).graph
        assert not weight_matmuls(graph), name  # none left in float32
        assert not {"DynamicQuantizeLinear", "DynamicQuantizeLSTM", "LSTM"} & {n.op_type for n in graph.node}
    model = s2s_runtime.load(int8, device="cpu")
    sources = random_sources(60, seed=12, low=1, high=20)
    alone = [model.generate(s, max_length=10)[0] for s in sources]
    for batch_size in (7, 60):
        together = model.generate(sources, max_length=10, max_batch_size=batch_size)
        assert [r.ids for r in together] == [r.ids for r in alone]
        assert [r.score for r in together] == [r.score for r in alone]  # exactly: not one bit depends on the batch


def test_upgrade_adds_the_greedy_graph_to_an_older_bundle_without_its_checkpoint(tmp_path):
    """A revision-2 bundle (no greedy graph, graphs holding their own weights) rewritten by `s2s upgrade`: the same
    graphs, the greedy graph checked against them, the weights once; it decodes as before, now in one call."""
    import shutil

    import s2s_runtime
    from s2s_export.upgrade import upgrade_bundle
    from s2s_runtime.cli import main
    from tests.conftest import as_revision_2

    bundle = write_bundle(random_checkpoint(6, cell="lstm", attention="additive", hidden_size=16), tmp_path)
    old = as_revision_2(shutil.copytree(bundle, tmp_path / "old"))
    assert main(["upgrade", str(old), "--out", str(tmp_path / "new")]) == 0
    new = s2s_runtime.load(tmp_path / "new", device="cpu")
    manifest = json.loads((tmp_path / "new" / "manifest.json").read_text())
    assert manifest["format_version"] == 3 and manifest["parity"]["greedy_graph"]["passed"]
    assert new.engine.fused is not None and (tmp_path / "new" / "weights.bin").is_file()
    sources = random_sources(20, seed=2)
    assert new.generate(sources) == s2s_runtime.load(old, device="cpu").generate(sources)
    with pytest.raises(ValueError, match="already has a greedy graph"):
        upgrade_bundle(tmp_path / "new", tmp_path / "newer")
    with pytest.raises(FileExistsError, match="already exists"):
        upgrade_bundle(old, tmp_path / "new")
    assert not (tmp_path / "newer").exists()
