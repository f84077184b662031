"""Keras 3 `.keras` files of the two classic character seq2seq shapes, read with h5py (Keras is not imported).

A `.keras` file is a zip of `config.json` (the layer graph) and `model.weights.h5`. Two shapes convert:

- **teacher-forced** (Keras's `lstm_seq2seq` example): encoder input → LSTM/GRU(return_state) whose states start a
  decoder LSTM/GRU(return_sequences) over the previous target token → Dense(softmax). Inputs are one-hot vectors
  (an identity embedding here) or an Embedding layer. → `bridge="copy"`, `conditioning="init"`.
- **RepeatVector** (the seed's model): Embedding(mask_zero=True) → LSTM/GRU → RepeatVector(n) → LSTM/GRU(
  return_sequences) → [TimeDistributed(]Dense(softmax)[)]. The decoder never sees the previous token, only the
  context at every step. → `feed_previous=False`, `conditioning="concat"`, `bridge="zeros"`, length n.

Tensors: Keras kernels are (input, gates × units), PyTorch's (gates × units, input), so they are transposed. LSTM
gates i, f, c, o are PyTorch's order; its one bias becomes `bias_ih` (`bias_hh` zero). GRU (`reset_after=True`, the
Keras 3 default, which is PyTorch's formula) gates z, r, h are reordered to r, z, n, with its two bias rows as
`bias_ih` and `bias_hh`. One-hot inputs are an identity embedding with a zero row for `<unk>`.

The token lists are not in the file (the Keras example builds them from its data): a tokens file gives them, in
index order — `{"source": [...], "target": [...], "specials": {"source": {...}, "target": {...}},
"max_target_length": n}`. Defaults follow the example: source pad " " (or index 0 with mask_zero), target bos
"\\t", eos "\\n", pad " " (RepeatVector: eos and pad the token at index 0, which the model emits after the end).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from s2s_runtime.vocab import Vocab, VocabError

from ..config import Seq2SeqConfig
from .base import Conversion, ConversionError, build_checkpoint

RECURRENT = {"LSTM": "lstm", "GRU": "gru"}
UNK = "<unk>"  # added to the source tokens with a zero embedding: Keras has no unknown-symbol id


def convert_keras(source: Path, tokens_file: Path | None = None) -> Conversion:
    """A `.keras` file (+ its tokens file) → a checkpoint of this family.

    Examples:
        >>> convert_keras(Path("s2s.keras"), Path("tokens.json")).report["shape"]  # doctest: +SKIP
        'teacher-forced'
    """
    if tokens_file is None:
        raise ConversionError(
            f"{source}: keras needs --tokens FILE: the source and target tokens in index order (not stored in .keras)"
        )
    config, weights = _read(source)
    layers = _layers(source, config)
    tokens = _read_tokens(tokens_file)
    repeat = [layer for layer in layers if layer["class_name"] == "RepeatVector"]
    shape = "repeat-vector" if repeat else "teacher-forced"
    encoder_rnn, decoder_rnn, dense = _find_parts(source, layers)
    for layer in (encoder_rnn, decoder_rnn):
        _check_recurrent(source, layer)
    _check_dense(source, dense)
    cell = RECURRENT[encoder_rnn["class_name"]]
    if RECURRENT[decoder_rnn["class_name"]] != cell:
        raise ConversionError(f"{source}: encoder {encoder_rnn['class_name']} and decoder {decoder_rnn['class_name']}")
    hidden = encoder_rnn["config"]["units"]
    if decoder_rnn["config"]["units"] != hidden:
        raise ConversionError(
            f"{source}: layer {decoder_rnn['name']!r} has {decoder_rnn['config']['units']} units, "
            f"the encoder {hidden}: the decoder starts from or reads the encoder's state"
        )
    source_embedding = _embedding_before(source, layers, encoder_rnn, weights)
    target_embedding = None if repeat else _embedding_before(source, layers, decoder_rnn, weights)
    if not repeat and decoder_rnn.get("inbound_nodes") and _initial_state(decoder_rnn) != [encoder_rnn["name"]]:
        raise ConversionError(
            f"{source}: layer {decoder_rnn['name']!r} does not start from the states of "
            f"{encoder_rnn['name']!r} (initial_state from {_initial_state(decoder_rnn)})"
        )

    specials = _specials(tokens, repeat=bool(repeat))
    source_tokens = list(tokens["source"]) + ([UNK] if UNK not in tokens["source"] else [])
    source_specials = {**specials["source"], "unk": UNK}
    try:
        source_vocab = Vocab(source_tokens, source_specials, "char", origin=f"{tokens_file} source")
        target_vocab = Vocab(list(tokens["target"]), specials["target"], "char", origin=f"{tokens_file} target")
    except VocabError as error:
        raise ConversionError(str(error)) from None
    source_table = _embedding_table(source, source_embedding, len(tokens["source"]), len(source_tokens), "source")
    options: dict[str, Any] = dict(
        source_vocab_size=len(source_tokens),
        target_vocab_size=len(target_vocab.tokens),
        cell=cell,
        num_layers=1,
        source_embedding_size=source_table.shape[1],
        hidden_size=hidden,
    )
    if repeat:
        n = repeat[0]["config"]["n"]
        options.update(target_embedding_size=1, bridge="zeros", conditioning="concat", feed_previous=False)
        max_target_length = n
    else:
        target_table = _embedding_table(
            source, target_embedding, len(tokens["target"]), len(tokens["target"]), "target"
        )
        options.update(target_embedding_size=target_table.shape[1], bridge="copy", conditioning="init")
        max_target_length = tokens.get("max_target_length")
    cfg = Seq2SeqConfig(**options)
    state = {"encoder.embedding.weight": source_table}
    if not repeat:
        state["decoder.embedding.weight"] = target_table
    state.update(_recurrent(weights, encoder_rnn, cell, hidden, "encoder.rnn", "_l0"))
    state.update(_recurrent(weights, decoder_rnn, cell, hidden, "decoder.rnn", "_l0"))
    kernel, bias = weights[dense["name"]]  # (H, vocab), (vocab,)
    state["decoder.output.weight"], state["decoder.output.bias"] = kernel.T, bias
    checkpoint = build_checkpoint(
        source,
        cfg,
        state,
        source_vocab,
        target_vocab,
        " (do the tokens file's lists match the model's input and output sizes?)",
    )
    report = {
        "format": "keras",
        "source": str(source),
        "shape": shape,
        "architecture": f"{cell.upper()} {hidden}, "
        + ("RepeatVector: the context at every step, no previous token" if repeat else "states passed to the decoder"),
        "decoding": {
            "strategy": "greedy (argmax of the softmax at each step)",
            "start": "none (the decoder reads the context only)" if repeat else repr(specials["target"]["bos"]),
            "end": repr(specials["target"]["eos"]),
            "max_target_length": max_target_length,
        },
        "differences": []
        if source_embedding is not None and source_embedding["config"].get("mask_zero")
        else [
            "the encoder reads padding (one-hot inputs, or an Embedding without mask_zero): the Keras example pads "
            "every source with ' ' to its longest training source, so pass sources padded the same way to reproduce "
            "its outputs exactly"
        ],
    }
    export = (
        {} if max_target_length is None else {"target_length_ratio": 0.0, "target_length_offset": max_target_length}
    )
    return Conversion(checkpoint, report, export_options=export)


def _read(source: Path) -> tuple[dict, Any]:
    """config.json and the weights file of a .keras zip (the weights as {layer name: [arrays in order]})."""
    import h5py

    try:
        with zipfile.ZipFile(source) as archive:
            config = json.loads(archive.read("config.json"))
            with archive.open("model.weights.h5") as raw, h5py.File(raw, "r") as h5:
                weights: dict[str, list[np.ndarray]] = {}
                for name in h5["layers"]:
                    group = h5["layers"][name]
                    for sub in ("vars", "cell/vars", "layer/vars"):
                        if sub in group and len(group[sub]):
                            weights[name] = [np.array(group[sub][str(i)]) for i in range(len(group[sub]))]
    except (zipfile.BadZipFile, KeyError, OSError, json.JSONDecodeError) as error:
        raise ConversionError(f"{source}: not a Keras 3 .keras file ({error})") from None
    return config, weights


def _layers(source: Path, config: dict) -> list[dict]:
    if config.get("class_name") not in ("Functional", "Sequential"):
        raise ConversionError(f"{source}: model class {config.get('class_name')!r}: only Functional and Sequential")
    layers = []
    for layer in config["config"]["layers"]:
        name = layer.get("name") or layer["config"]["name"]
        if layer["class_name"] == "TimeDistributed":
            inner = layer["config"]["layer"]
            layer = {**inner, "name": name, "inbound_nodes": layer.get("inbound_nodes", [])}
        layers.append({**layer, "name": name})
    # Keras 3 writes the padding mask of an Embedding(mask_zero=True) as its own op, `input != 0`: that is the
    # masking this family does by source length, so it is dropped; any other op is refused below.
    layers = [layer for layer in layers if not _is_padding_mask(layer)]
    known = {"InputLayer", "Embedding", "LSTM", "GRU", "RepeatVector", "Dense"}
    for layer in layers:
        if layer["class_name"] not in known:
            raise ConversionError(
                f"{source}: layer {layer['name']!r} is a {layer['class_name']}, which this "
                f"converter does not map (it takes {', '.join(sorted(known))}, TimeDistributed)"
            )
    return layers


def _is_padding_mask(layer: dict) -> bool:
    if layer["class_name"] != "NotEqual":
        return False
    args = [arg for node in layer.get("inbound_nodes", []) for arg in node.get("args", [])]
    return len(args) == 2 and args[1] == 0


def _find_parts(source: Path, layers: list[dict]) -> tuple[dict, dict, dict]:
    recurrent = [layer for layer in layers if layer["class_name"] in RECURRENT]
    dense = [layer for layer in layers if layer["class_name"] == "Dense"]
    if len(recurrent) != 2 or len(dense) != 1:
        raise ConversionError(
            f"{source}: {len(recurrent)} recurrent and {len(dense)} Dense layers: this converts one "
            "recurrent layer per side and one output Dense (stacked layers are not supported yet)"
        )
    encoder = [layer for layer in recurrent if not layer["config"]["return_sequences"]]
    decoder = [layer for layer in recurrent if layer["config"]["return_sequences"]]
    if len(encoder) != 1 or len(decoder) != 1:
        raise ConversionError(
            f"{source}: expected one encoder (return_sequences=False) and one decoder "
            "(return_sequences=True) recurrent layer"
        )
    return encoder[0], decoder[0], dense[0]


def _check_recurrent(source: Path, layer: dict) -> None:
    config, name = layer["config"], layer["name"]
    required = {
        "activation": "tanh",
        "recurrent_activation": "sigmoid",
        "use_bias": True,
        "go_backwards": False,
        "stateful": False,
    }
    if layer["class_name"] == "GRU":
        required["reset_after"] = True
    for option, value in required.items():
        if config.get(option, value) != value:
            raise ConversionError(
                f"{source}: layer {name!r} has {option}={config[option]!r}; this family computes {option}={value!r}"
            )


def _check_dense(source: Path, layer: dict) -> None:
    if layer["config"].get("activation") != "softmax" or not layer["config"].get("use_bias", True):
        raise ConversionError(
            f"{source}: output layer {layer['name']!r} must be Dense(softmax) with a bias, has "
            f"activation={layer['config'].get('activation')!r}"
        )


def _embedding_before(source: Path, layers: list[dict], rnn: dict, weights: dict) -> dict | None:
    """The Embedding layer feeding `rnn`, or None when `rnn` reads one-hot vectors from an input."""
    names = _inbound(rnn)
    if not names:  # Sequential: the layer before it
        index = layers.index(rnn)
        names = [layers[index - 1]["name"]] if index else []
    feeding = [
        layer for layer in layers if layer["name"] in names and layer["class_name"] in ("Embedding", "InputLayer")
    ]
    if not feeding:
        return None
    if feeding[0]["class_name"] == "InputLayer":
        return None
    embedding = feeding[0]
    if not embedding["config"].get("mask_zero", False) and any(
        layer["class_name"] == "RepeatVector" for layer in layers
    ):
        raise ConversionError(
            f"{source}: layer {embedding['name']!r} has mask_zero=False: its encoder reads the "
            "padding, which this family masks; set mask_zero=True"
        )
    embedding["weights"] = weights[embedding["name"]][0]
    return embedding


def _inbound(layer: dict, part: str = "args") -> list[str]:
    """Names of the layers whose outputs `layer` reads (Functional models), from its inbound nodes: its inputs
    (`part` "args"), or its keyword inputs such as initial_state ("kwargs")."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            history = (
                value.get("config", {}).get("keras_history") if value.get("class_name") == "__keras_tensor__" else None
            )
            if history:
                found.append(history[0])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    for node in layer.get("inbound_nodes", []):
        walk(node.get(part, []))
    return found


def _initial_state(layer: dict) -> list[str]:
    """The layers whose outputs are `layer`'s initial state, each named once."""
    return sorted(set(_inbound(layer, "kwargs")))


def _embedding_table(source: Path, embedding: dict | None, tokens: int, rows: int, side: str) -> np.ndarray:
    """The (rows, size) embedding: the Embedding layer's table, or an identity for one-hot inputs; rows past the
    listed tokens (the added <unk>) are zero."""
    table = np.eye(tokens, dtype=np.float32) if embedding is None else embedding["weights"]
    if table.shape[0] != tokens:
        raise ConversionError(
            f"{source}: the {side} input has {table.shape[0]} symbols, the tokens file lists {tokens}"
        )
    return np.concatenate([table, np.zeros((rows - tokens, table.shape[1]), np.float32)])


def _recurrent(weights: dict, layer: dict, cell: str, hidden: int, prefix: str, suffix: str) -> dict[str, np.ndarray]:
    kernel, recurrent, bias = weights[layer["name"]]  # (in, G·H), (H, G·H), (G·H,) or GRU (2, G·H)
    if cell == "lstm":  # Keras i, f, c, o = PyTorch i, f, g, o; one bias
        return {
            f"{prefix}.weight_ih{suffix}": kernel.T,
            f"{prefix}.weight_hh{suffix}": recurrent.T,
            f"{prefix}.bias_ih{suffix}": bias,
            f"{prefix}.bias_hh{suffix}": np.zeros_like(bias),
        }

    def rzn(matrix: np.ndarray) -> np.ndarray:  # Keras z, r, h → PyTorch r, z, n along the last axis
        z, r, n = matrix[..., :hidden], matrix[..., hidden : 2 * hidden], matrix[..., 2 * hidden :]
        return np.concatenate([r, z, n], axis=-1)

    return {
        f"{prefix}.weight_ih{suffix}": rzn(kernel).T,
        f"{prefix}.weight_hh{suffix}": rzn(recurrent).T,
        f"{prefix}.bias_ih{suffix}": rzn(bias[0]),
        f"{prefix}.bias_hh{suffix}": rzn(bias[1]),
    }


def _read_tokens(path: Path) -> dict:
    try:
        tokens = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConversionError(f"{path}: not a readable tokens file ({error})") from None
    for side in ("source", "target"):
        if not isinstance(tokens.get(side), list):
            raise ConversionError(f"{path}: {side!r} must be the list of {side} tokens in index order")
    return tokens


def _specials(tokens: dict, *, repeat: bool) -> dict[str, dict[str, str]]:
    """Roles: the tokens file's, else the Keras example's conventions (see the module docstring)."""
    given = tokens.get("specials", {})
    if repeat:
        first = tokens["target"][0]
        defaults = {"source": {"pad": tokens["source"][0]}, "target": {"pad": first, "eos": first}}
    else:
        defaults = {"source": {"pad": " "}, "target": {"pad": " ", "bos": "\t", "eos": "\n"}}
    return {side: {**defaults[side], **given.get(side, {})} for side in ("source", "target")}
