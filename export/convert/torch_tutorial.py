"""The PyTorch seq2seq tutorial's models ("NLP From Scratch: Translation with a Sequence to Sequence Network and
Attention"): a directory with `encoder.pt` and `decoder.pt` (their state dicts, as `torch.save(module.state_dict())`
writes them) and `tokens.json` (the Lang objects' `index2word`, in index order: `{"source": [...], "target": [...],
"max_target_length": MAX_LENGTH}`).

- EncoderRNN: embedding → GRU, reading the sentence's word ids and EOS (`source_eos`); its last state starts the
  decoder (`bridge="copy"`).
- AttnDecoderRNN: Bahdanau attention scored with the *previous* hidden state, its context appended to the GRU's
  input, the GRU output projected directly → `attention="additive"`, `attention_placement="before"`. The tensors map
  onto the additive names: key = Ua, query = Wa with bias Wa.b + Ua.b, score = Va (Va's bias is dropped: softmax
  ignores a shift).
- DecoderRNN: relu(embedding) → GRU → out, so the embedding is relu(E).

Both decoders start from SOS (id 0) and run MAX_LENGTH steps, cut at EOS: the bundle's length rule is that fixed
MAX_LENGTH. The tutorial has no unknown word (a new word is a KeyError there): `<unk>` is added with a zero
embedding. Its batches are padded with SOS (id 0), which is the pad role here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from s2s_runtime.vocab import Vocab, VocabError

from ..config import Seq2SeqConfig
from .base import Conversion, ConversionError, build_checkpoint, load_weights_only

UNK = "<unk>"
ENCODER_KEYS = {"embedding.weight", "gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0", "gru.bias_hh_l0"}
ATTENTION_KEYS = {f"attention.{m}.{p}" for m in ("Wa", "Ua", "Va") for p in ("weight", "bias")}
DECODER_KEYS = ENCODER_KEYS | {"out.weight", "out.bias"}


def _state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConversionError(f"{path}: no such file (the directory needs encoder.pt and decoder.pt)")
    state = load_weights_only(path, "a state dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: not a state dict (a mapping of names to tensors)")
    return state


def convert_torch_tutorial(source: Path, tokens: Path | None = None) -> Conversion:
    """The tutorial's EncoderRNN + AttnDecoderRNN (or DecoderRNN) → a checkpoint of this family.

    Examples:
        >>> convert_torch_tutorial(Path("runs/tutorial")).report["decoder"]  # doctest: +SKIP
        'AttnDecoderRNN'
    """
    directory = source if source.is_dir() else source.parent
    encoder, decoder = _state(directory / "encoder.pt"), _state(directory / "decoder.pt")
    tokens_file = tokens or directory / "tokens.json"
    try:
        lists = json.loads(tokens_file.read_text())
        source_tokens, target_tokens = list(lists["source"]), list(lists["target"])
        max_length = int(lists["max_target_length"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ConversionError(
            f"{tokens_file}: needs source, target (index2word in index order) and "
            f"max_target_length (the tutorial's MAX_LENGTH): {error}"
        ) from None
    for name, state, expected in (("encoder.pt", encoder, ENCODER_KEYS), ("decoder.pt", decoder, DECODER_KEYS)):
        missing = sorted(expected - set(state))
        if missing:
            raise ConversionError(f"{directory / name}: missing {missing[0]!r}: not the tutorial's {name[:-3]}")
    attention = set(decoder) >= ATTENTION_KEYS
    unexpected = sorted(set(decoder) - DECODER_KEYS - (ATTENTION_KEYS if attention else set()))
    if unexpected:
        raise ConversionError(
            f"{directory / 'decoder.pt'}: unexpected {unexpected[0]!r}: not AttnDecoderRNN or DecoderRNN"
        )
    hidden = encoder["gru.weight_hh_l0"].shape[1]
    try:
        source_vocab = Vocab(
            [*source_tokens, UNK], {"pad": "SOS", "unk": UNK, "eos": "EOS"}, "space", origin=f"{tokens_file} source"
        )
        target_vocab = Vocab(
            target_tokens, {"pad": "SOS", "bos": "SOS", "eos": "EOS"}, "space", origin=f"{tokens_file} target"
        )
    except VocabError as error:
        raise ConversionError(str(error)) from None
    cfg = Seq2SeqConfig(
        source_vocab_size=len(source_vocab.tokens),
        target_vocab_size=len(target_vocab.tokens),
        cell="gru",
        source_embedding_size=encoder["embedding.weight"].shape[1],
        target_embedding_size=decoder["embedding.weight"].shape[1],
        hidden_size=hidden,
        bridge="copy",
        conditioning="init",
        attention="additive" if attention else "none",
        attention_placement="before" if attention else "after",
        source_eos=True,
    )
    embedding = encoder["embedding.weight"]
    state = {
        "encoder.embedding.weight": torch.cat([embedding, embedding.new_zeros(1, embedding.shape[1])]),  # + <unk>
        "decoder.embedding.weight": decoder["embedding.weight"] if attention else decoder["embedding.weight"].relu(),
        "decoder.output.weight": decoder["out.weight"],
        "decoder.output.bias": decoder["out.bias"],
    }
    for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        state[f"encoder.rnn.{kind}_l0"] = encoder[f"gru.{kind}_l0"]
        state[f"decoder.rnn.{kind}_l0"] = decoder[f"gru.{kind}_l0"]
    if attention:
        state["decoder.attention.key.weight"] = decoder["attention.Ua.weight"]
        state["decoder.attention.query.weight"] = decoder["attention.Wa.weight"]
        state["decoder.attention.query.bias"] = decoder["attention.Wa.bias"] + decoder["attention.Ua.bias"]
        state["decoder.attention.score.weight"] = decoder["attention.Va.weight"]
    converted = build_checkpoint(
        directory, cfg, state, source_vocab, target_vocab, " (do the token lists match the embeddings?)"
    )
    report = {
        "format": "torch-tutorial",
        "source": str(directory),
        "decoder": "AttnDecoderRNN" if attention else "DecoderRNN",
        "architecture": f"GRU {hidden}, " + ("Bahdanau attention before the step" if attention else "no attention"),
        "decoding": {"strategy": "greedy", "start": "SOS", "end": "EOS", "max_target_length": max_length},
        "differences": [
            "the tutorial normalizes sentences (unicodeToAscii, lower case, punctuation split off) before looking "
            "words up; pass sentences normalized the same way",
            "the tutorial has no unknown word (a KeyError); here unknown words map to <unk>, a zero embedding",
        ],
    }
    return Conversion(
        converted,
        report,
        export_options={"target_length_ratio": 0.0, "target_length_offset": max_length},
    )
