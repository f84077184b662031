"""Seq2SeqConfig: the one validated description of a model's architecture (config.json of a checkpoint)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from s2s_runtime.files import read_json
from s2s_runtime.vocab import TOKENIZERS


class ConfigError(ValueError):
    """An invalid model configuration; the message names the key at fault (and the file when loaded from one)."""


CHOICES = {
    "cell": ("gru", "lstm"),
    "bridge": ("copy", "linear", "linear_relu", "zeros"),
    "conditioning": ("init", "concat", "both"),
    "attention": ("none", "dot", "general", "additive"),
    "attention_placement": ("after", "before"),
    "attention_combine": ("tanh", "affine"),
}


# How an export's optimized encoder runs its recurrence (s2s_export.onnx_graphs.build_encoder).
ENCODER_OPS = ("auto", "scan", "rnn")


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Architecture of a recurrent encoder–decoder.

    `conditioning` says where the context vector c (the encoder's final top-layer state, both directions concatenated)
    goes: `init` — through the `bridge` into the decoder's initial states; `concat` — appended to the decoder input at
    every step (the decoder then starts from zeros, so `bridge` must be `zeros`); `both`.
    With `feed_previous=False` the decoder never sees the previous token: the seed's Keras example
    (Embedding → LSTM → RepeatVector → LSTM → TimeDistributed(Dense softmax)) is
    `Seq2SeqConfig(cell="lstm", conditioning="concat", bridge="zeros", feed_previous=False, ...)`.
    Attention is Luong-style (scored with the decoder's top-layer output after the step; `additive` uses Bahdanau's
    score function), over the encoder outputs with source padding masked.

    Examples:
        >>> cfg = Seq2SeqConfig(source_vocab_size=30, target_vocab_size=40, attention="general")
        >>> cfg.encoder_output_size
        128
    """

    source_vocab_size: int
    target_vocab_size: int
    cell: str = "gru"
    num_layers: int = 1
    source_embedding_size: int = 64
    target_embedding_size: int = 64
    hidden_size: int = 128
    dropout: float = 0.0
    bidirectional: bool = False
    bridge: str = "copy"
    conditioning: str = "init"
    feed_previous: bool = True
    attention: str = "none"
    input_feeding: bool = False
    tie_target_embedding: bool = False
    source_eos: bool = False
    encoder_hidden_size: int = 0  # units per encoder direction; 0: hidden_size (OpenNMT's brnn: hidden_size / 2)
    # "after" (Luong): score with the step's output, combine [context; output]. "before" (Bahdanau, the PyTorch
    # tutorial): score with the previous top state, append the context to the step's input, project the output.
    attention_placement: str = "after"
    # the combine layer of attention after the step: tanh(W [context; output]) or W [context; output] + b (OpenNMT's
    # mlp attention)
    attention_combine: str = "tanh"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = {"int": int, "float": (int, float), "bool": bool, "str": str}[field.type]
            if not isinstance(value, expected) or (field.type != "bool" and isinstance(value, bool)):
                raise ConfigError(f"{field.name}: expected {field.type}, got {value!r}")
        for key, allowed in CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}: {getattr(self, key)!r} is not one of {allowed}")
        for key in (
            "source_vocab_size",
            "target_vocab_size",
            "num_layers",
            "source_embedding_size",
            "target_embedding_size",
            "hidden_size",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be ≥ 1, got {getattr(self, key)}")
        if self.encoder_hidden_size < 0:
            raise ConfigError(f"encoder_hidden_size: must be ≥ 0 (0: hidden_size), got {self.encoder_hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        uses_bridge = self.conditioning in ("init", "both")
        if uses_bridge and self.bridge == "zeros":
            raise ConfigError(
                f"bridge: 'zeros' discards the context vector, but conditioning={self.conditioning!r} "
                "initializes the decoder from it; use 'copy' or 'linear'"
            )
        if not uses_bridge and self.bridge != "zeros":
            raise ConfigError(
                "bridge: conditioning='concat' starts the decoder from zeros, so bridge must be 'zeros' "
                "(use conditioning='both' to also initialize from the context)"
            )
        if self.bridge == "copy" and self.encoder_output_size != self.hidden_size:
            raise ConfigError(
                f"bridge: 'copy' needs encoder states of the decoder's size, but a bidirectional "
                f"encoder gives {self.encoder_output_size} != hidden_size {self.hidden_size}; use 'linear'"
            )
        if self.attention == "dot" and self.encoder_output_size != self.hidden_size:
            raise ConfigError(
                f"attention: 'dot' needs encoder outputs of size hidden_size ({self.hidden_size}), "
                f"got {self.encoder_output_size}; use 'general' or 'additive'"
            )
        if self.attention_placement == "before" and (self.attention == "none" or self.input_feeding):
            raise ConfigError(
                "attention_placement: 'before' needs attention and no input_feeding (the context already enters the "
                "next step's input)"
            )
        if self.attention_combine != "tanh" and (self.attention == "none" or self.attends_before_step):
            raise ConfigError("attention_combine: only attention after the step has a combine layer")
        if self.input_feeding and self.attention == "none":
            raise ConfigError("input_feeding: needs attention (it feeds the attentional vector to the next step)")
        if self.decoder_input_size == 0:
            raise ConfigError(
                "feed_previous: with feed_previous=False the decoder needs another input: "
                "conditioning 'concat'/'both' or input_feeding"
            )
        if self.tie_target_embedding and self.target_embedding_size != self.hidden_size:
            raise ConfigError(
                f"tie_target_embedding: needs target_embedding_size ({self.target_embedding_size}) "
                f"== hidden_size ({self.hidden_size})"
            )

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def encoder_units(self) -> int:
        """Units per encoder direction and layer."""
        return self.encoder_hidden_size or self.hidden_size

    @property
    def encoder_output_size(self) -> int:
        """Size of each encoder output (memory) vector and of the context vector c."""
        return self.encoder_units * self.num_directions

    @property
    def concat_context(self) -> bool:
        return self.conditioning in ("concat", "both")

    @property
    def attends_before_step(self) -> bool:
        return self.attention != "none" and self.attention_placement == "before"

    @property
    def decodes_step_by_step(self) -> bool:
        """Whether each step needs the previous step's result beyond its states (no all-steps teacher forcing)."""
        return self.input_feeding or self.attends_before_step

    @property
    def decoder_input_size(self) -> int:
        """The first decoder layer's input size: the embedding, the context, the attention context and the input
        feed, each where the architecture has it, concatenated in that order."""
        return (
            (self.target_embedding_size if self.feed_previous else 0)
            + (self.encoder_output_size if self.concat_context else 0)
            + (self.encoder_output_size if self.attends_before_step else 0)
            + (self.hidden_size if self.input_feeding else 0)
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: object, *, origin: str = "config") -> Seq2SeqConfig:
        """Build from a dict, rejecting unknown and missing keys with the key (and `origin`) named."""
        if not isinstance(data, dict):
            raise ConfigError(f"{origin}: expected a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{origin}: unknown key {unknown[0]!r}")
        try:
            return cls(**data)
        except TypeError as error:  # a required key is missing
            raise ConfigError(f"{origin}: {error}") from None
        except ConfigError as error:
            raise ConfigError(f"{origin}: {error}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Seq2SeqConfig:
        path = Path(path)
        return cls.from_dict(read_json(path, ConfigError), origin=str(path))


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the model's architecture is a Seq2SeqConfig).

    Examples:
        >>> TrainConfig(epochs=5, batch_size=32).learning_rate
        0.001
    """

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    clip_norm: float = 1.0
    patience: int = 5  # stop after this many epochs without a better dev exact match
    lr_decay: float = 0.5  # multiply the learning rate by this after an epoch without improvement
    target_exact_match: float = 1.01  # stop as soon as dev exact match reaches this (> 1: never)
    seed: int = 0
    device: str = "cpu"
    min_frequency: int = 1  # vocabulary: drop symbols seen fewer times in training data
    source_tokenizer: str = "char"
    target_tokenizer: str = "char"
    max_dev_examples: int = 2000  # dev sources decoded per epoch for early stopping
    threads: int = 0  # torch intra-op threads; 0: chosen by model size (s2s_export.train.training_threads)
    label_smoothing: float = 0.0  # share of each target's probability spread over the vocabulary in the loss
    keep_epochs: int = 0  # keep the weights of the last this many epochs in OUT/epochs, for `s2s average`
    progress: bool = True

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "patience", "min_frequency", "max_dev_examples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be ≥ 1, got {getattr(self, key)}")
        if self.threads < 0:
            raise ConfigError(f"threads: must be ≥ 0 (0: chosen by model size), got {self.threads}")
        if self.learning_rate <= 0 or self.clip_norm <= 0:
            raise ConfigError("learning_rate and clip_norm must be > 0")
        if self.keep_epochs < 0:
            raise ConfigError(f"keep_epochs: must be ≥ 0, got {self.keep_epochs}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if not 0 < self.lr_decay <= 1:
            raise ConfigError(f"lr_decay: must be in (0, 1], got {self.lr_decay}")
        for key in ("source_tokenizer", "target_tokenizer"):
            if getattr(self, key) not in TOKENIZERS:
                raise ConfigError(f"{key}: {getattr(self, key)!r} is not one of {TOKENIZERS}")
