"""Write a trained Seq2Seq as two ONNX graphs — the encoder and the decoder step — straight from its weights.

Why not torch.onnx.export: a traced encoder cannot carry per-row lengths (pack_padded_sequence does not survive
export), so padding would leak into the final states of short rows and into the whole backward direction. Here the
encoder runs each layer either with the ONNX GRU/LSTM ops and `sequence_lens`, or (GRU, optimized) as a Scan over a
primitive cell that reads its final state at each row's own length and reverses each row within its length for the
backward direction, and the decoder step is written with primitive ops (MatMul + Add + activations), which onnxruntime
runs fast at batch 1 and which dynamic int8 quantization covers. Both graphs are checked against PyTorch by
s2s_export.parity.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import onnx
import torch

from s2s_runtime import roles
from s2s_runtime.schema import TensorSpec

from .config import ENCODER_OPS, Seq2SeqConfig
from .graph_builder import GraphBuilder
from .model import MASK_VALUE, Seq2Seq

# PyTorch packs gates as GRU (r, z, n) and LSTM (i, f, g, o); the ONNX ops want GRU (z, r, h) and LSTM (i, o, f, c).
ONNX_GATE_ORDER = {"gru": [1, 0, 2], "lstm": [0, 3, 1, 2]}


@dataclass
class ExportedGraph:
    model: onnx.ModelProto
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


def graph_name(role: str) -> str:
    return role.replace(".", "_")


# the context of attention before the step: computed inside the step graph, an input of its first layer
ATTENTION_CONTEXT = "attention_context"


def encoded_io(cfg: Seq2SeqConfig) -> list[TensorSpec]:
    """The encoder's outputs = the decoder step's inputs besides previous_ids, in a fixed order."""
    layers, hidden, enc_out = cfg.num_layers, cfg.hidden_size, cfg.encoder_output_size
    specs = [(roles.STATE_H, (layers, "batch", hidden))]
    if cfg.cell == "lstm":
        specs.append((roles.STATE_C, (layers, "batch", hidden)))
    if cfg.input_feeding:
        specs.append((roles.STATE_FEED, ("batch", hidden)))
    if cfg.concat_context:
        specs.append((roles.CONTEXT, ("batch", enc_out)))
    if cfg.attention != "none":
        key_size = enc_out if cfg.attention == "dot" else hidden
        specs += [
            (roles.MEMORY, ("batch", "source_length", enc_out)),
            (roles.ATTENTION_KEYS, ("batch", "source_length", key_size)),
            (roles.MEMORY_BIAS, ("batch", "source_length")),
        ]
    return [TensorSpec(role, graph_name(role), "float32", shape) for role, shape in specs]


def _weights(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: tensor.detach().cpu().numpy().astype(np.float32) for name, tensor in module.state_dict().items()}


def _reorder_gates(matrix: np.ndarray, cell: str) -> np.ndarray:
    """Reorder the gate blocks along axis 0 from PyTorch's order to ONNX's."""
    order = ONNX_GATE_ORDER[cell]
    blocks = np.split(matrix, len(order))
    return np.concatenate([blocks[i] for i in order])


@dataclass(frozen=True)
class CellWeights:
    """One layer and direction of a PyTorch GRU/LSTM, laid out for _primitive_cell: an LSTM's gates reordered to
    (i, f, o, g) so one Sigmoid covers three of them; the recurrent bias joined to the input bias wherever it is
    simply added (all of it for an LSTM; a GRU's r and z parts), `recurrent_bias` the rest (a GRU's b_hn, which the
    reset gate multiplies)."""

    input_weight: np.ndarray  # (G·H, in)
    input_bias: np.ndarray  # (G·H,) b_ih plus the joinable part of b_hh
    recurrent_weight: np.ndarray  # (G·H, H)
    recurrent_bias: np.ndarray | None  # (H,) a GRU's b_hn; None for an LSTM

    @classmethod
    def of(cls, w: dict[str, np.ndarray], cfg: Seq2SeqConfig, rnn: str, suffix: str, hidden: int) -> CellWeights:
        """`rnn` and `suffix` name the PyTorch parameters:
        "encoder.rnn", "_l0_reverse" → encoder.rnn.weight_ih_l0_reverse; `hidden`: the cell's units."""
        w_ih, w_hh = w[f"{rnn}.weight_ih{suffix}"], w[f"{rnn}.weight_hh{suffix}"]
        b_ih, b_hh = w[f"{rnn}.bias_ih{suffix}"], w[f"{rnn}.bias_hh{suffix}"]
        if cfg.cell == "lstm":
            order = np.concatenate([np.arange(i * hidden, (i + 1) * hidden) for i in (0, 1, 3, 2)])
            return cls(w_ih[order], (b_ih + b_hh)[order], w_hh[order], None)
        kept = np.zeros_like(b_hh)
        kept[2 * hidden :] = b_hh[2 * hidden :]
        return cls(w_ih, b_ih + b_hh - kept, w_hh, kept[2 * hidden :])


def gate_groups(cfg: Seq2SeqConfig, hidden: int) -> list[slice]:
    """The gate rows whose input projections _primitive_cell takes as separate tensors, one per activation: a GRU's
    (r, z) and n, an LSTM's (i, f, o) and g, for a cell of `hidden` units. Two table lookups (or matmuls) instead of
    one and a Split."""
    sigmoid_gates = 2 if cfg.cell == "gru" else 3
    return [slice(0, sigmoid_gates * hidden), slice(sigmoid_gates * hidden, (sigmoid_gates + 1) * hidden)]


def build_encoder(model: Seq2Seq, *, plain: bool = False, encoder_op: str = "auto") -> ExportedGraph:
    """Encoder graph: (source_ids, source_lengths) → initial decoder states and per-sequence statics.

    `encoder_op` (see ENCODER_OPS) picks how the recurrence runs in the optimized graph:
    - "scan": per layer and direction, the input projections of all positions at once (layer 0: a Gather from the
      source embedding folded into W_ih, so no input matmul at all), then a Scan over time whose body is the same
      primitive cell as the decoder step — MatMuls that int8 quantization covers (onnxruntime's only int8 LSTM
      scales its activations per batch, the Scan's MatMuls quantize batch-independently), and for GRUs the faster
      form from batch 8 up.
    - "rnn": the ONNX GRU/LSTM op with sequence_lens, layer 0 over a one-hot input whose weights are the folded
      embedding table (when the source vocabulary is no larger than the embedding; else over the embedding), so its
      input matmul stays small: one fused kernel per position, the faster form at batch 1.
    - "auto" (default): "scan" for GRUs, "rnn" with the embedding input for LSTMs (onnxruntime's fp32 LSTM kernel
      beats the Scan there at every batch size). int8 exports pass "scan".
    `plain` ignores it: the ONNX GRU/LSTM op over the embedding, the straightforward graph kept for comparison.
    """
    if encoder_op not in ENCODER_OPS:
        raise ValueError(f"encoder_op: {encoder_op!r} is not one of {', '.join(ENCODER_OPS)}")
    cfg = model.cfg
    w = _weights(model)
    g = GraphBuilder("encoder")
    source_ids = g.input(graph_name(roles.SOURCE_IDS), "int64", ["batch", "source_length"])
    lengths = g.input(graph_name(roles.SOURCE_LENGTHS), "int64", ["batch"])
    batch = g.op("Gather", g.op("Shape", source_ids), g.ints([0]), axis=0)  # (1,)
    scan = not plain and (encoder_op == "scan" or (encoder_op == "auto" and cfg.cell == "gru"))
    fold = not plain and encoder_op == "rnn" and cfg.source_vocab_size <= cfg.source_embedding_size
    layers = _scan_layers if scan else functools.partial(_rnn_op_layers, one_hot=fold)
    x, finals = layers(g, cfg, w, source_ids, lengths, batch)  # (S, B, enc_out), per layer (1, B, enc_out)

    @functools.cache
    def memory() -> str:
        batch_major = g.op("Transpose", x, perm=[1, 0, 2])  # (B, S, enc_out)
        if not scan:
            return batch_major
        # The Scans ran on past each row's length: zero those positions, as PyTorch's packed outputs are.
        padded = g.op("Unsqueeze", _padded(g, source_ids, lengths), g.ints([2]))  # (B, S, 1)
        return g.op("Where", padded, g.const(np.array(0.0, np.float32)), batch_major)

    def bridge(which: str) -> str:
        final = g.op("Concat", *finals[which], axis=0)  # (L, B, enc_out)
        if cfg.bridge == "copy":
            return final
        if cfg.bridge == "zeros":
            return _zeros(g, cfg.num_layers, batch, cfg.hidden_size)
        name = "hidden" if which == "h" else "cell"
        projected = g.op("MatMul", final, g.const(w[f"bridge.{name}.weight"].T, "bridge_w"))  # (L, B, H)
        projected = g.op("Add", projected, g.const(w[f"bridge.{name}.bias"], "bridge_b"))
        return g.op("Relu", projected) if cfg.bridge == "linear_relu" else projected

    values = {
        roles.STATE_H: lambda: bridge("h"),
        roles.STATE_C: lambda: bridge("c"),
        roles.STATE_FEED: lambda: _zeros(g, batch, cfg.hidden_size),
        roles.CONTEXT: lambda: g.op("Squeeze", finals["h"][-1], g.ints([0])),
        roles.MEMORY: memory,
        roles.ATTENTION_KEYS: lambda: (
            memory()
            if cfg.attention == "dot"
            else g.op("MatMul", memory(), g.const(w["decoder.attention.key.weight"].T, "key_w"))
        ),
        roles.MEMORY_BIAS: lambda: _memory_bias(g, source_ids, lengths),
    }
    outputs = encoded_io(cfg)
    for io in outputs:
        g.output(values[io.role](), io.name, io.dtype, list(io.shape))
    inputs = [
        TensorSpec(roles.SOURCE_IDS, source_ids, "int64", ("batch", "source_length")),
        TensorSpec(roles.SOURCE_LENGTHS, lengths, "int64", ("batch",)),
    ]
    return ExportedGraph(g.model(), inputs, outputs)


def _padded(g: GraphBuilder, source_ids: str, lengths: str) -> str:
    """(B, S) bool: True at the positions past each row's length."""
    src_len = g.op("Squeeze", g.op("Gather", g.op("Shape", source_ids), g.ints([1]), axis=0), g.ints([0]))
    positions = g.op("Range", g.const(np.array(0, np.int64)), src_len, g.const(np.array(1, np.int64)))  # (S,)
    return g.op("Not", g.op("Less", g.op("Unsqueeze", positions, g.ints([0])), g.op("Unsqueeze", lengths, g.ints([1]))))


def _memory_bias(g: GraphBuilder, source_ids: str, lengths: str) -> str:
    """(B, S): 0 where position < length, MASK_VALUE at padding."""
    # Where rather than Cast + Mul: its constants follow a float16 conversion of the graph.
    return g.op(
        "Where",
        _padded(g, source_ids, lengths),
        g.const(np.array(MASK_VALUE, np.float32)),
        g.const(np.array(0.0, np.float32)),
    )


def _zeros(g: GraphBuilder, *dims: str | int) -> str:
    """A float zeros tensor of the given dims (names of (1,) int64 shape values, or ints)."""
    shape = g.op("Concat", *[d if isinstance(d, str) else g.ints([d]) for d in dims], axis=0)
    return g.op("ConstantOfShape", shape, value=onnx.helper.make_tensor("zero", onnx.TensorProto.FLOAT, [1], [0]))


def _directions(cfg: Seq2SeqConfig) -> list[str]:
    """PyTorch's parameter-name suffix of each direction of the encoder."""
    return [""] + (["_reverse"] if cfg.bidirectional else [])


def _rnn_op_layers(
    g: GraphBuilder,
    cfg: Seq2SeqConfig,
    w: dict[str, np.ndarray],
    source_ids: str,
    lengths: str,
    batch: str,
    *,
    one_hot: bool = False,
) -> tuple[str, dict[str, list[str]]]:
    """The encoder's layers as ONNX GRU/LSTM ops; returns the top layer's outputs (S, B, enc_out), zeros past each
    row's length, and per state kind the final states of every layer (1, B, enc_out). `one_hot`: layer 0 reads
    one-hot source ids, its input weights the embedding folded into W_ih (plus b_ih): the op's input matmul then
    selects each position's row of that table, as the Scan's Gather does."""
    time_major = g.op("Transpose", source_ids, perm=[1, 0])  # (S, B)
    if one_hot:
        x = g.op(
            "OneHot",
            time_major,
            g.const(np.array(cfg.source_vocab_size, np.int64), "vocab"),
            g.const(np.array([0.0, 1.0], np.float32), "off_on"),
            axis=-1,
        )  # (S, B, V)
    else:
        x = g.op("Gather", g.const(w["encoder.embedding.weight"], "source_embedding"), time_major)  # (S, B, E)
    sequence_lens = g.op("Cast", lengths, to=onnx.TensorProto.INT32)  # (B,)
    finals: dict[str, list[str]] = {"h": [], "c": []}
    for layer in range(cfg.num_layers):
        weights: dict[str, list[np.ndarray]] = {"W": [], "R": [], "B": []}  # per direction, in ONNX gate order
        for suffix in _directions(cfg):
            name = f"l{layer}{suffix}"
            w_ih, b_ih = w[f"encoder.rnn.weight_ih_{name}"], w[f"encoder.rnn.bias_ih_{name}"]  # (G·H, in), (G·H,)
            if layer == 0 and one_hot:  # one-hot in: the input "weights" are the folded table, its bias included
                w_ih, b_ih = (w["encoder.embedding.weight"] @ w_ih.T + b_ih).T, np.zeros_like(b_ih)  # (G·H, V)
            weights["W"].append(_reorder_gates(w_ih, cfg.cell))
            weights["R"].append(_reorder_gates(w[f"encoder.rnn.weight_hh_{name}"], cfg.cell))
            b_hh = w[f"encoder.rnn.bias_hh_{name}"]
            weights["B"].append(np.concatenate([_reorder_gates(b_ih, cfg.cell), _reorder_gates(b_hh, cfg.cell)]))

        attrs = {"hidden_size": cfg.encoder_units, "direction": "bidirectional" if cfg.bidirectional else "forward"}
        if cfg.cell == "gru":
            attrs["linear_before_reset"] = 1  # PyTorch applies the reset gate after the recurrent matmul
        # W, R (dirs, G·H, in | H) and B (dirs, 2·G·H), the directions stacked
        stacked = [g.const(np.stack(weights[kind]).astype(np.float32), kind) for kind in "WRB"]
        rnn_inputs = [x, *stacked, sequence_lens]
        outs = g.op_multi(cfg.cell.upper(), 3 if cfg.cell == "lstm" else 2, *rnn_inputs, **attrs)
        y = g.op("Transpose", outs[0], perm=[0, 2, 1, 3])  # (S, dirs, B, H) → (S, B, dirs, H)
        x = g.op("Reshape", y, g.ints([0, 0, -1]))  # (S, B, enc_out)
        for which, final in zip("hc", outs[1:], strict=False):  # a GRU has only h
            per_row = g.op("Reshape", g.op("Transpose", final, perm=[1, 0, 2]), g.ints([0, -1]))  # (B, enc_out)
            finals[which].append(g.op("Unsqueeze", per_row, g.ints([0])))  # (1, B, enc_out)
    return x, finals


def _scan_layers(
    g: GraphBuilder, cfg: Seq2SeqConfig, w: dict[str, np.ndarray], source_ids: str, lengths: str, batch: str
) -> tuple[str, dict[str, list[str]]]:
    """The encoder's layers as Scans over primitive cells; returns what _rnn_op_layers does, except that the
    outputs past each row's length are not zeroed (later layers never read them: see below).

    Padding: the forward Scan runs on past each row's length, which only changes positions after it; the final
    states are read at position length - 1. The reverse direction runs on each row reversed within its length
    (ReverseSequence), so its padding also comes last."""
    hidden = cfg.encoder_units
    ids = g.op("Transpose", source_ids, perm=[1, 0])  # (S, B)
    initial = _zeros(g, batch, hidden)  # (B, H)
    last_position = g.op(
        "Expand",
        g.op("Unsqueeze", g.op("Sub", lengths, g.const(np.array(1, np.int64))), g.ints([0, 2])),
        g.op("Concat", g.ints([1]), batch, g.ints([hidden]), axis=0),
    )  # (1, B, H)
    kinds = "hc" if cfg.cell == "lstm" else "h"
    finals: dict[str, list[str]] = {kind: [] for kind in kinds}
    x = ids
    for layer in range(cfg.num_layers):
        outputs, layer_finals, directions = [], {kind: [] for kind in kinds}, []
        for suffix in _directions(cfg):
            cell = CellWeights.of(w, cfg, "encoder.rnn", f"_l{layer}{suffix}", hidden)
            reverse = suffix == "_reverse"
            projected = []  # per gate group (S, B, rows): the input projections of every position
            for rows in gate_groups(cfg, hidden):
                weight, bias = cell.input_weight[rows], cell.input_bias[rows]
                if layer == 0:
                    table = w["encoder.embedding.weight"] @ weight.T + bias  # (V, rows)
                    part = g.op("Gather", g.const(table.astype(np.float32), "embedding_projection"), x)
                else:
                    part = g.op("Add", g.op("MatMul", x, g.const(weight.T, "W_ih")), g.const(bias, "b_ih"))
                if reverse:
                    part = g.op("ReverseSequence", part, lengths, batch_axis=1, time_axis=0)
                projected.append(part)
            directions.append((projected, cell))
        # Both directions step through positions in lockstep (the reverse one on reversed rows): one Scan runs
        # both cells, so the per-iteration cost of a Scan is paid once per position, not twice.
        for suffix, per_position in zip(_directions(cfg), _scan_cells(g, cfg, directions, initial), strict=True):
            for kind in kinds:
                final = g.op("GatherElements", per_position[kind], last_position, axis=0)  # (1, B, H)
                layer_finals[kind].append(g.op("Squeeze", final, g.ints([0])))
            output = per_position["h"]  # (S, B, H)
            if suffix == "_reverse":
                output = g.op("ReverseSequence", output, lengths, batch_axis=1, time_axis=0)
            outputs.append(output)
        x = outputs[0] if len(outputs) == 1 else g.op("Concat", *outputs, axis=2)  # (S, B, enc_out)
        for kind in kinds:
            parts = layer_finals[kind]
            per_row = parts[0] if len(parts) == 1 else g.op("Concat", *parts, axis=1)  # (B, enc_out)
            finals[kind].append(g.op("Unsqueeze", per_row, g.ints([0])))  # (1, B, enc_out)
    return x, finals


def _scan_cells(
    g: GraphBuilder, cfg: Seq2SeqConfig, directions: list[tuple[list[str], CellWeights]], initial: str
) -> list[dict[str, str]]:
    """Run one primitive GRU/LSTM cell per direction over time, in one Scan: each direction's input projections
    (S, B, rows) per gate group → its states at every position, {"h": (S, B, H)} and for an LSTM "c" too."""
    hidden = cfg.encoder_units
    kinds = "hc" if cfg.cell == "lstm" else "h"
    body = g.subgraph("cell")
    states = [
        {kind: body.input(f"{body.prefix}{kind}{d}", "float32", ["batch", hidden]) for kind in kinds}
        for d in range(len(directions))
    ]
    carried = []
    for d, (_, cell) in enumerate(directions):
        gi = [
            body.input(f"{body.prefix}gi{d}_{i}", "float32", ["batch", rows.stop - rows.start])
            for i, rows in enumerate(gate_groups(cfg, hidden))
        ]
        new_h, new_c = _primitive_cell(body, cfg, gi, states[d]["h"], states[d].get("c"), cell, hidden)  # (B, H) each
        carried += [new_h] + ([new_c] if new_c is not None else [])
    for state in carried:  # the carried states: the nodes' own outputs, no copy
        body.expose(state, "float32", ["batch", hidden])
    for index, state in enumerate(carried):  # once more, as per-position outputs
        body.output(state, f"{body.prefix}all_{index}", "float32", ["batch", hidden])
    scanned = [part for projected, _ in directions for part in projected]
    outputs = g.op_multi(
        "Scan", 2 * len(carried), *[initial] * len(carried), *scanned, body=body.graph(), num_scan_inputs=len(scanned)
    )
    per_position = iter(outputs[len(carried) :])
    return [{kind: next(per_position) for kind in kinds} for _ in directions]


def build_decoder_step(model: Seq2Seq, *, plain: bool = False) -> ExportedGraph:
    """Decoder-step graph: (previous_ids, states, statics) → (log_probs, new states[, attention]).

    Optimized (default): the cells are written with MatMul + Add + activations (fast at batch 1, and covered by
    dynamic int8 quantization), and the target embedding is folded into the first layer's input projection — a Gather
    from a precomputed (vocab, gates × hidden) table instead of a Gather and a MatMul per step. Plain: the ONNX
    GRU/LSTM op for the cells and Gemm for the output projection, the straightforward graph kept for comparison.
    """
    cfg = model.cfg
    w = _weights(model)
    g = GraphBuilder("decoder_step")
    hidden = cfg.hidden_size
    previous_ids = g.input(graph_name(roles.PREVIOUS_IDS), "int64", ["batch"])
    top_k = None if plain else g.input(graph_name(roles.TOP_K), "int64", [1])
    encoded = encoded_io(cfg)
    value = {io.role: g.input(io.name, io.dtype, list(io.shape)) for io in encoded}

    attention_weights = None
    if cfg.attends_before_step:  # scored with the previous top-layer state, before the cells run
        top = g.op("Gather", value[roles.STATE_H], g.const(np.array(cfg.num_layers - 1, np.int64), "top"), axis=0)
        value[ATTENTION_CONTEXT], attention_weights = _attend(g, cfg, w, top, value)  # (B, enc_out), (B, S)

    parts = []  # the first layer's input, in the order of decoder.rnn.weight_ih_l0's columns
    if cfg.feed_previous:
        parts.append(("embedding", cfg.target_embedding_size))
    if cfg.concat_context:
        parts.append((roles.CONTEXT, cfg.encoder_output_size))
    if cfg.attends_before_step:
        parts.append((ATTENTION_CONTEXT, cfg.encoder_output_size))
    if cfg.input_feeding:
        parts.append((roles.STATE_FEED, hidden))

    def first_layer_input() -> str:
        vectors = [
            g.op("Gather", g.const(w["decoder.embedding.weight"], "target_embedding"), previous_ids)
            if name == "embedding"
            else value[name]
            for name, _ in parts
        ]
        return vectors[0] if len(vectors) == 1 else g.op("Concat", *vectors, axis=1)  # (B, dec_in)

    def folded_input_projection(cell: CellWeights, rows: slice) -> str:
        """x @ W_ih^T + bias for layer 0 and the gate rows `rows`, with the embedding block precomputed per token."""
        weight, bias = cell.input_weight[rows], cell.input_bias[rows]  # (rows, dec_in), (rows,)
        projected, offset = [], 0
        for name, size in parts:
            block = weight[:, offset : offset + size]
            if name == "embedding":
                table = w["decoder.embedding.weight"] @ block.T + bias  # (V, G·H)
                projected.append(
                    g.op("Gather", g.const(table.astype(np.float32), "embedding_projection"), previous_ids)
                )
            else:
                projected.append(g.op("MatMul", value[name], g.const(block.T.copy(), "W_ih")))
            offset += size
        total = projected[0]
        for term in projected[1:]:
            total = g.op("Add", total, term)
        return total if cfg.feed_previous else g.op("Add", total, g.const(bias, "b_ih"))  # (B, rows)

    new_h, new_c = [], []
    x = None if not plain and cfg.feed_previous else first_layer_input()
    for layer in range(cfg.num_layers):
        index = g.const(np.array(layer, np.int64), "layer")
        h = g.op("Gather", value[roles.STATE_H], index, axis=0)  # (B, H)
        c = g.op("Gather", value[roles.STATE_C], index, axis=0) if cfg.cell == "lstm" else None  # (B, H)
        if plain:
            x, h, c = _rnn_op_step(g, cfg, w, layer, x, h, c)
        else:
            cell = CellWeights.of(w, cfg, "decoder.rnn", f"_l{layer}", hidden)
            if layer == 0 and cfg.feed_previous:
                gi = [folded_input_projection(cell, rows) for rows in gate_groups(cfg, hidden)]  # (B, rows) each
            else:
                gi = [
                    g.op(
                        "Add",
                        g.op("MatMul", x, g.const(cell.input_weight[rows].T, "W_ih")),
                        g.const(cell.input_bias[rows], "b_ih"),
                    )
                    for rows in gate_groups(cfg, hidden)
                ]
            x, c = _primitive_cell(g, cfg, gi, h, c, cell, hidden)
        if c is not None:
            new_c.append(g.op("Unsqueeze", c, g.ints([0])))
        new_h.append(g.op("Unsqueeze", x, g.ints([0])))  # (1, B, H)

    outputs: list[TensorSpec] = []
    if cfg.attention != "none" and not cfg.attends_before_step:
        x, attention_weights = _attention(g, cfg, w, x, value)
    if plain:
        logits = g.op(
            "Gemm",
            x,
            g.const(w["decoder.output.weight"], "output_w"),
            g.const(w["decoder.output.bias"], "output_b"),
            transB=1,
        )
    else:
        logits = g.op(
            "Add",
            g.op("MatMul", x, g.const(w["decoder.output.weight"].T, "output_w")),
            g.const(w["decoder.output.bias"], "output_b"),
        )  # (B, V)
    results = {
        roles.LOG_PROBS: g.op("LogSoftmax", logits, axis=1),
        roles.STATE_H: g.op("Concat", *new_h, axis=0) if len(new_h) > 1 else new_h[0],
    }
    if new_c:
        results[roles.STATE_C] = g.op("Concat", *new_c, axis=0) if len(new_c) > 1 else new_c[0]
    if cfg.input_feeding:
        results[roles.STATE_FEED] = x
    if attention_weights is not None:
        results[roles.ATTENTION] = attention_weights
    if not plain:  # selection in the graph: each row's top_k best (log-prob, id), best first; with top_k = 1 the
        # greedy choice (ArgMax + ReduceMax nodes as well would cost ≈ 1 µs a step at batch 1). TopK lists equal
        # values lower index first: argmax's choice, and the tie order beam search keeps.
        results[roles.TOP_LOG_PROBS], results[roles.TOP_IDS] = g.op_multi(
            "TopK", 2, results[roles.LOG_PROBS], top_k, axis=1, largest=1, sorted=1
        )
    shapes = {io.role: io.shape for io in encoded}
    shapes[roles.LOG_PROBS] = ("batch", cfg.target_vocab_size)
    shapes[roles.ATTENTION] = ("batch", "source_length")
    shapes[roles.TOP_LOG_PROBS] = shapes[roles.TOP_IDS] = ("batch", "top_k")
    for role, name in results.items():
        io = TensorSpec(
            role,
            "new_" + graph_name(role) if roles.is_state(role) else graph_name(role),
            "int64" if role == roles.TOP_IDS else "float32",
            shapes[role],
        )
        g.output(name, io.name, io.dtype, list(io.shape))
        outputs.append(io)
    inputs = [TensorSpec(roles.PREVIOUS_IDS, previous_ids, "int64", ("batch",))] + encoded
    if top_k is not None:
        inputs.append(TensorSpec(roles.TOP_K, top_k, "int64", (1,)))
    return ExportedGraph(g.model(), inputs, outputs)


def _primitive_cell(
    g: GraphBuilder, cfg: Seq2SeqConfig, gi: list[str], h: str, c: str | None, cell: CellWeights, hidden: int
) -> tuple[str, str | None]:
    """One GRU/LSTM cell of `hidden` units from its input projections, one (B, rows) tensor per gate group (see
    gate_groups) — input bias and the joinable recurrent bias included, see CellWeights — and the previous h (and c);
    returns (h', c')."""
    weight = cell.recurrent_weight  # (G·H, H)
    # One recurrent matmul per gate group, each added to its input part and activated (onnxruntime fuses MatMul + Add
    # + Sigmoid/Tanh into one FusedGemm), rather than one matmul and a Split per operand: fewer nodes and no copies
    # (GRU: 6–13 % per step and per encoder position, fp32 and int8, batch 1 to 256).
    sigmoid_rows, other_rows = gate_groups(cfg, hidden)
    sigmoid_gates = g.op("Sigmoid", g.op("Add", g.op("MatMul", h, g.const(weight[sigmoid_rows].T, "W_h")), gi[0]))
    if cfg.cell == "lstm":  # gates (i, f, o) under one Sigmoid, g under a Tanh
        i, f, o = g.op_multi("Split", 3, sigmoid_gates, g.ints([hidden] * 3, "split"), axis=1)
        candidate = g.op("Tanh", g.op("Add", g.op("MatMul", h, g.const(weight[other_rows].T, "W_hg")), gi[1]))
        c = g.op("Add", g.op("Mul", f, c), g.op("Mul", i, candidate))
        return g.op("Mul", o, g.op("Tanh", c)), c
    # GRU (r, z, n): r = σ(i_r + h_r), z = σ(i_z + h_z), n = tanh(i_n + r ⊙ (W_hn h + b_hn)), h' = n + z ⊙ (h − n)
    i_n = gi[1]
    r, z = g.op_multi("Split", 2, sigmoid_gates, g.ints([hidden] * 2, "split"), axis=1)
    h_n = g.op("Add", g.op("MatMul", h, g.const(weight[other_rows].T, "W_hn")), g.const(cell.recurrent_bias, "b_hn"))
    n = g.op("Tanh", g.op("Add", i_n, g.op("Mul", r, h_n)))
    return g.op("Add", n, g.op("Mul", z, g.op("Sub", h, n))), None


def _rnn_op_step(
    g: GraphBuilder, cfg: Seq2SeqConfig, w: dict[str, np.ndarray], layer: int, x: str, h: str, c: str | None
) -> tuple[str, str, str | None]:
    """One step of one layer with the ONNX GRU/LSTM op (sequence length 1); returns (output, h', c')."""

    def weight(name: str) -> np.ndarray:
        return _reorder_gates(w[f"decoder.rnn.{name}_l{layer}"], cfg.cell)

    biases = np.concatenate([weight("bias_ih"), weight("bias_hh")])[None]  # (1, 2·G·H)
    attrs = {"hidden_size": cfg.hidden_size}
    if cfg.cell == "gru":
        attrs["linear_before_reset"] = 1
    inputs = [
        g.op("Unsqueeze", x, g.ints([0])),
        g.const(weight("weight_ih")[None], "W"),
        g.const(weight("weight_hh")[None], "R"),
        g.const(biases, "B"),
        "",
        g.op("Unsqueeze", h, g.ints([0])),
    ]  # X (1, B, in), initial_h (1, B, H)
    if c is not None:
        inputs.append(g.op("Unsqueeze", c, g.ints([0])))
    outs = g.op_multi(cfg.cell.upper(), 3 if c is not None else 2, *inputs, **attrs)
    new_h = g.op("Squeeze", outs[1], g.ints([0]))  # (B, H)
    return new_h, new_h, None if c is None else g.op("Squeeze", outs[2], g.ints([0]))


def _attention(
    g: GraphBuilder, cfg: Seq2SeqConfig, w: dict[str, np.ndarray], query: str, value: dict[str, str]
) -> tuple[str, str]:
    """Luong attention over precomputed keys; returns the attentional vector (B, H) and the weights (B, S)."""
    context, weights = _attend(g, cfg, w, query, value)  # (B, enc_out), (B, S)
    combined = g.op("Concat", context, query, axis=1)  # (B, enc_out + H)
    projected = g.op("MatMul", combined, g.const(w["decoder.attention.combine.weight"].T, "combine_w"))  # (B, H)
    if cfg.attention_combine == "affine":
        return g.op("Add", projected, g.const(w["decoder.attention.combine.bias"], "combine_b")), weights
    return g.op("Tanh", projected), weights


def _attend(
    g: GraphBuilder, cfg: Seq2SeqConfig, w: dict[str, np.ndarray], query: str, value: dict[str, str]
) -> tuple[str, str]:
    """Scores of `query` (B, H) against the precomputed keys; returns the context (B, enc_out), weights (B, S)."""
    keys = value[roles.ATTENTION_KEYS]  # (B, S, K)
    if cfg.attention == "additive":
        projected = g.op(
            "Add",
            g.op("MatMul", query, g.const(w["decoder.attention.query.weight"].T, "query_w")),
            g.const(w["decoder.attention.query.bias"], "query_b"),
        )  # (B, H)
        energy = g.op("Tanh", g.op("Add", keys, g.op("Unsqueeze", projected, g.ints([1]))))  # (B, S, H)
        scores = g.op("MatMul", energy, g.const(w["decoder.attention.score.weight"].T, "score_w"))  # (B, S, 1)
    else:
        scores = g.op("MatMul", keys, g.op("Unsqueeze", query, g.ints([2])))  # (B, S, 1)
    scores = g.op("Add", g.op("Squeeze", scores, g.ints([2])), value[roles.MEMORY_BIAS])  # (B, S)
    weights = g.op("Softmax", scores, axis=1)  # (B, S)
    context = g.op(
        "Squeeze", g.op("MatMul", g.op("Unsqueeze", weights, g.ints([1])), value[roles.MEMORY]), g.ints([1])
    )  # (B, enc_out)
    return context, weights
