"""OpenNMT-py RNN models (`.pt` checkpoints of OpenNMT-py 3.x), loaded without OpenNMT and without unpickling code.

A checkpoint holds `model` and `generator` state dicts, `vocab` (token lists) and `opt` (the training options, an
argparse.Namespace: the only class `torch.load(weights_only=True)` is allowed to rebuild here). What maps:

- encoder `rnn` LSTM/GRU, any number of layers → `encoder.rnn` unchanged (OpenNMT uses nn.LSTM/GRU);
- decoder with input feeding (StackedLSTM/StackedGRU cells, `decoder.rnn.layers.{k}`) or without (nn.LSTM/GRU),
  started from the encoder's final states (`bridge="copy"`, enc_layers = dec_layers), input [embedding; feed];
- `global_attention` `dot`, `general` or `none`: OpenNMT projects the query (linear_in · h), this family the memory
  (W_key · m), so `key = linear_inᵀ`; `linear_out` ([c; h], tanh, no bias) is the combine layer;
- `mlp` attention: Bahdanau's score (`attention="additive"`: key = linear_context, query = linear_query, score =
  v) with a combine of bias and no tanh (`attention_combine="affine"`);
- encoder `brnn`: H/2 units per direction (`bidirectional`, `encoder_hidden_size` H/2), the directions' final
  states concatenated per layer [forward; backward] as the decoder's start, as OpenNMT does;
- `-bridge` with one layer: ReLU(Linear) of each direction's final state (`bridge="linear_relu"`, for brnn a
  block-diagonal weight: one Linear shared by both directions);
- the generator (Linear + LogSoftmax) → `decoder.output`.

Refused, naming the option: `-bridge` with more than one layer (OpenNMT views (layers, batch, H) states as rows of
layers × H, so each row mixes batch entries: its output depends on the batch), copy and coverage attention, context
gates, sparsemax, source features, Transformer and other encoders/decoders, enc_layers ≠ dec_layers, shared
decoder embeddings.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from s2s_runtime.vocab import Vocab, VocabError

from ..config import Seq2SeqConfig
from .base import Conversion, ConversionError, build_checkpoint, load_weights_only

CELLS = {"LSTM": "lstm", "GRU": "gru"}
ATTENTION = {"dot": "dot", "general": "general", "mlp": "additive", "none": "none"}
TRANSLATE_DEFAULTS = "beam_size 5, length_penalty avg, max_length 250 tokens, no ratio limit"


def load(source: Path) -> dict:
    """The checkpoint's dict, rebuilt by torch's weights-only unpickler (tensors, lists, dicts, and Namespace)."""
    checkpoint = load_weights_only(source, "an OpenNMT-py checkpoint", (argparse.Namespace,))
    missing = [key for key in ("model", "generator", "vocab", "opt") if key not in checkpoint]
    if not isinstance(checkpoint, dict) or missing:
        raise ConversionError(
            f"{source}: missing {missing[0] if missing else 'everything'!r}: not an OpenNMT-py "
            "checkpoint (keys model, generator, vocab, opt)"
        )
    return checkpoint


def check_options(source: Path, opt: Any) -> None:
    """Refuse every option this family cannot compute exactly, naming it."""

    def get(name: str, default: Any = None) -> Any:
        return getattr(opt, name, default)

    refusals = [
        (get("encoder_type") not in ("rnn", "brnn"), f"encoder_type {get('encoder_type')!r}", "only RNN encoders"),
        (get("decoder_type") != "rnn", f"decoder_type {get('decoder_type')!r}", "only RNN decoders"),
        (get("rnn_type") not in CELLS, f"rnn_type {get('rnn_type')!r}", "only LSTM and GRU"),
        (
            get("enc_layers") != get("dec_layers"),
            f"enc_layers {get('enc_layers')} != dec_layers {get('dec_layers')}",
            "the decoder starts from every encoder layer's final state",
        ),
        (
            get("enc_hid_size", get("hidden_size")) != get("dec_hid_size", get("hidden_size")),
            "enc_hid_size != dec_hid_size",
            "the decoder starts from the encoder's states",
        ),
        (
            get("global_attention") not in ATTENTION,
            f"global_attention {get('global_attention')!r}",
            "only dot, general and mlp",
        ),
        (
            get("global_attention_function", "softmax") != "softmax",
            f"global_attention_function {get('global_attention_function')!r}",
            "attention weights are a softmax",
        ),
        (
            bool(get("bridge", False)) and get("enc_layers", 1) > 1,
            "bridge with more than one layer",
            "OpenNMT views the (layers, batch, H) states as rows of layers × H, so each row mixes batch entries",
        ),
        (bool(get("copy_attn", False)), "copy_attn", "no copy mechanism"),
        (bool(get("coverage_attn", False)), "coverage_attn", "no coverage attention"),
        (get("context_gate") is not None, f"context_gate {get('context_gate')!r}", "no context gates"),
        (
            bool(get("share_decoder_embeddings", False)),
            "share_decoder_embeddings",
            "the generator would be the embedding, which needs word_vec_size == hidden_size",
        ),
        (bool(get("position_encoding", False)), "position_encoding", "RNN embeddings only"),
        (
            get("generator_function", "softmax") != "softmax",
            f"generator_function {get('generator_function')!r}",
            "outputs are a log-softmax",
        ),
        (
            bool(get("input_feed", 1)) and get("global_attention") == "none",
            "input_feed without attention",
            "input feeding feeds the attentional vector",
        ),
        (bool(get("src_feats")), "src_feats", "no source features"),
    ]
    for refused, option, why in refusals:
        if refused:
            raise ConversionError(f"{source}: {option} cannot be converted exactly: {why}")


def convert_opennmt(source: Path, tokens: Path | None = None) -> Conversion:
    """An OpenNMT-py RNN checkpoint → a checkpoint of this family.

    Examples:
        >>> convert_opennmt(Path("model_step_1000.pt")).report["decoding"]["opennmt_defaults"]  # doctest: +SKIP
        'beam_size 5, length_penalty avg, max_length 250 tokens, no ratio limit'
    """
    if tokens is not None:
        raise ConversionError(f"{tokens}: opennmt takes no tokens file (the checkpoint holds its vocabularies)")
    checkpoint = load(source)
    opt = checkpoint["opt"]
    check_options(source, opt)
    model_state, generator = checkpoint["model"], checkpoint["generator"]
    vocab = checkpoint["vocab"]
    try:
        source_vocab = Vocab(list(vocab["src"]), {"pad": "<blank>", "unk": "<unk>"}, "space", origin=f"{source} src")
        target_vocab = Vocab(
            list(vocab["tgt"]),
            {"pad": "<blank>", "unk": "<unk>", "bos": vocab.get("decoder_start_token", "<s>"), "eos": "</s>"},
            "space",
            origin=f"{source} tgt",
        )
    except (VocabError, KeyError, TypeError) as error:
        raise ConversionError(f"{source}: vocab: {error}") from None
    layers, hidden = opt.enc_layers, getattr(opt, "enc_hid_size", opt.hidden_size)
    bidirectional = opt.encoder_type == "brnn" or bool(getattr(opt, "brnn", False))
    if bidirectional and hidden % 2:
        raise ConversionError(f"{source}: brnn with an odd hidden_size {hidden}: OpenNMT gives each direction H/2")
    cfg = Seq2SeqConfig(
        source_vocab_size=len(source_vocab.tokens),
        target_vocab_size=len(target_vocab.tokens),
        cell=CELLS[opt.rnn_type],
        num_layers=layers,
        source_embedding_size=opt.src_word_vec_size,
        target_embedding_size=opt.tgt_word_vec_size,
        hidden_size=hidden,
        bidirectional=bidirectional,
        encoder_hidden_size=hidden // 2 if bidirectional else 0,
        bridge="linear_relu" if getattr(opt, "bridge", False) else "copy",
        conditioning="init",
        attention=ATTENTION[opt.global_attention],
        attention_combine="affine" if opt.global_attention == "mlp" else "tanh",
        input_feeding=bool(opt.input_feed) and opt.global_attention != "none",
    )
    read: set[str] = set()

    def take(name: str) -> torch.Tensor:
        if name not in model_state:
            raise ConversionError(f"{source}: missing tensor {name!r} for {opt.rnn_type} × {layers}")
        read.add(name)
        return model_state[name]

    state = {
        "encoder.embedding.weight": take("encoder.embeddings.make_embedding.emb_luts.0.weight"),
        "decoder.embedding.weight": take("decoder.embeddings.make_embedding.emb_luts.0.weight"),
        "decoder.output.weight": generator["weight"],
        "decoder.output.bias": generator["bias"],
    }
    cells = (
        "decoder.rnn.layers.{k}.{kind}" if cfg.input_feeding else "decoder.rnn.{kind}_l{k}"
    )  # StackedLSTM or nn.LSTM
    for k in range(layers):
        for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            for suffix in ("", "_reverse") if bidirectional else ("",):
                state[f"encoder.rnn.{kind}_l{k}{suffix}"] = take(f"encoder.rnn.{kind}_l{k}{suffix}")
            state[f"decoder.rnn.{kind}_l{k}"] = take(cells.format(k=k, kind=kind))
    if opt.global_attention != "none":
        state["decoder.attention.combine.weight"] = take("decoder.attn.linear_out.weight")  # (H, 2H): [c; h]
    if opt.global_attention == "general":
        state["decoder.attention.key.weight"] = take("decoder.attn.linear_in.weight").T  # query side → memory side
    if opt.global_attention == "mlp":
        state["decoder.attention.key.weight"] = take("decoder.attn.linear_context.weight")
        state["decoder.attention.query.weight"] = take("decoder.attn.linear_query.weight")
        state["decoder.attention.query.bias"] = take("decoder.attn.linear_query.bias")
        state["decoder.attention.score.weight"] = take("decoder.attn.v.weight")
        state["decoder.attention.combine.bias"] = take("decoder.attn.linear_out.bias")
    if cfg.bridge == "linear_relu":  # one Linear per state kind, shared by both directions of a brnn
        for index, kind in enumerate(("hidden", "cell") if cfg.cell == "lstm" else ("hidden",)):
            weight, bias = take(f"encoder.bridge.{index}.weight"), take(f"encoder.bridge.{index}.bias")
            directions = 2 if bidirectional else 1
            state[f"bridge.{kind}.weight"] = torch.block_diag(*[weight] * directions)  # (H, D·Hₑ)
            state[f"bridge.{kind}.bias"] = bias.repeat(directions)  # (H,)
    unused = sorted(set(model_state) - read)
    if unused:
        raise ConversionError(f"{source}: tensor {unused[0]!r} has no counterpart in this family")
    converted = build_checkpoint(source, cfg, state, source_vocab, target_vocab)
    report = {
        "format": "opennmt",
        "source": str(source),
        "tool": "OpenNMT-py (RNN)",
        "architecture": f"{'bidirectional ' if bidirectional else ''}{opt.rnn_type} {hidden} × {layers}, "
        f"attention {opt.global_attention}, input feeding {'on' if cfg.input_feeding else 'off'}",
        "decoding": {
            "opennmt_defaults": TRANSLATE_DEFAULTS,
            "this_bundle": "greedy unless asked; at most 250 tokens (OpenNMT's max_length); pass strategy='beam', "
            "beam_size=5 and length_penalty=1 for OpenNMT's default search (its 'avg' is score / length)",
            "source": "space-separated tokens, as OpenNMT-py reads them (tokenize first with the same tokenizer)",
        },
        "differences": [
            "OpenNMT-py's -ratio limits a hypothesis by the longest source of its padded batch; this runtime's "
            "max_length_ratio counts each input's own length",
        ],
    }
    return Conversion(
        converted,
        report,
        export_options={"target_length_ratio": 0.0, "target_length_offset": 250},
    )
