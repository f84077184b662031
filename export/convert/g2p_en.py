"""g2p_en (github.com/Kyubyong/g2p, the `g2p_en` package): its GRU encoder–decoder, `checkpoint20.npz`.

g2p_en 2.x runs its model in numpy: graphemes + "</s>" through an embedding and a GRU (PyTorch's gate layout
r, z, n, both biases); the last hidden state starts a GRU decoder fed the previous phoneme's embedding from "<s>";
logits = fc_w · h + fc_b; greedy, at most 20 phonemes. That is this family's default architecture with
`source_eos`, so every tensor maps one to one. The vocabularies are not in the file: they are g2p_en's code
constants, reproduced below.

What g2p_en does around the model, which the converted model does not: it looks words up in CMUdict first (and
homographs by part of speech), and only predicts the others; it lower-cases, strips accents and anything outside
a–z and '.,?!- before the model sees a word.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from s2s_runtime.vocab import Vocab

from ..checkpoint import expected_tensors
from ..config import Seq2SeqConfig
from ..data import cmudict_pairs
from .base import Conversion, ConversionError, build_checkpoint

GRAPHEMES = ["<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz"]
# fmt: off
PHONEMES = [
    "<pad>", "<unk>", "<s>", "</s>",
    "AA0", "AA1", "AA2", "AE0", "AE1", "AE2", "AH0", "AH1", "AH2", "AO0", "AO1", "AO2", "AW0", "AW1", "AW2", "AY0",
    "AY1", "AY2", "B", "CH", "D", "DH", "EH0", "EH1", "EH2", "ER0", "ER1", "ER2", "EY0", "EY1", "EY2", "F", "G", "HH",
    "IH0", "IH1", "IH2", "IY0", "IY1", "IY2", "JH", "K", "L", "M", "N", "NG", "OW0", "OW1", "OW2", "OY0", "OY1", "OY2",
    "P", "R", "S", "SH", "T", "TH", "UH0", "UH1", "UH2", "UW", "UW0", "UW1", "UW2", "V", "W", "Y", "Z", "ZH",
]
# fmt: on
MAX_PHONEMES = 20  # g2p_en's decoding loop: range(20)

# g2p_en's array → this family's tensor
TENSORS = {
    "enc_emb": "encoder.embedding.weight",
    "enc_w_ih": "encoder.rnn.weight_ih_l0",
    "enc_w_hh": "encoder.rnn.weight_hh_l0",
    "enc_b_ih": "encoder.rnn.bias_ih_l0",
    "enc_b_hh": "encoder.rnn.bias_hh_l0",
    "dec_emb": "decoder.embedding.weight",
    "dec_w_ih": "decoder.rnn.weight_ih_l0",
    "dec_w_hh": "decoder.rnn.weight_hh_l0",
    "dec_b_ih": "decoder.rnn.bias_ih_l0",
    "dec_b_hh": "decoder.rnn.bias_hh_l0",
    "fc_w": "decoder.output.weight",
    "fc_b": "decoder.output.bias",
}


def read_arrays(source: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file, never unpickling (object arrays are refused)."""
    try:
        with np.load(source, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise ConversionError(f"{source}: not a readable .npz file of arrays ({error})") from None
    missing = sorted(set(TENSORS) - set(arrays))
    if missing:
        raise ConversionError(f"{source}: missing array {missing[0]!r}: not a g2p_en checkpoint")
    unexpected = sorted(set(arrays) - set(TENSORS))
    if unexpected:
        raise ConversionError(f"{source}: unexpected array {unexpected[0]!r}: not the g2p_en model this converts")
    return arrays


def convert_g2p_en(source: Path, tokens: Path | None = None) -> Conversion:
    """g2p_en's checkpoint20.npz → a checkpoint of this family (GRU, source_eos, bridge copy).

    Examples:
        >>> convert_g2p_en(Path("g2p_en/checkpoint20.npz")).export_options  # doctest: +SKIP
        {'target_length_ratio': 0.0, 'target_length_offset': 20}
    """
    if tokens is not None:
        raise ConversionError(f"{tokens}: g2p-en takes no tokens file (its vocabularies are g2p_en's own)")
    arrays = read_arrays(source)
    embedding, hidden = arrays["enc_emb"].shape[1], arrays["enc_w_hh"].shape[1]
    cfg = Seq2SeqConfig(
        source_vocab_size=len(GRAPHEMES),
        target_vocab_size=len(PHONEMES),
        cell="gru",
        num_layers=1,
        source_embedding_size=embedding,
        target_embedding_size=arrays["dec_emb"].shape[1],
        hidden_size=hidden,
        bridge="copy",
        conditioning="init",
        feed_previous=True,
        attention="none",
        source_eos=True,
    )
    source_vocab = Vocab(GRAPHEMES, {"pad": "<pad>", "unk": "<unk>", "eos": "</s>"}, "char", origin="g2p_en graphemes")
    target_vocab = Vocab(
        PHONEMES, {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"}, "space", origin="g2p_en phonemes"
    )
    expected = expected_tensors(cfg)
    state = {}
    for name, tensor in TENSORS.items():
        value = arrays[name]
        if value.dtype != np.float32 or value.shape != expected[tensor]:
            raise ConversionError(
                f"{source}: array {name!r} is {value.dtype} {value.shape}, a g2p_en GRU of embedding {embedding} and "
                f"hidden {hidden} with {len(GRAPHEMES)} graphemes and {len(PHONEMES)} phonemes has float32 "
                f"{expected[tensor]}"
            )
        state[tensor] = value
    converted = build_checkpoint(source, cfg, state, source_vocab, target_vocab)
    report = {
        "format": "g2p-en",
        "source": str(source),
        "tool": "g2p_en 2.x (numpy GRU encoder-decoder)",
        "architecture": f"GRU {hidden}, embeddings {embedding}, source_eos, no attention",
        "decoding": {
            "strategy": "greedy",
            "max_target_length": f"{MAX_PHONEMES} phonemes, whatever the word's length",
            "start": "<s>",
            "end": "</s>",
        },
        "differences": [
            "g2p_en looks words up in CMUdict (and homographs by part of speech) before predicting; the converted "
            "model predicts every word",
            "g2p_en lower-cases, strips accents and characters outside a-z and '.,?!- first; the converted model "
            "maps characters outside a-z to <unk>",
        ],
    }
    return Conversion(
        converted,
        report,
        export_options={"target_length_ratio": 0.0, "target_length_offset": MAX_PHONEMES},
        validation_sources=[pair.source for pair in cmudict_pairs("dev")],  # the words g2p_en was made for
    )
