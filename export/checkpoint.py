"""Checkpoint directories: config.json + model.safetensors + source_vocab.json + target_vocab.json. Never unpickled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from s2s_runtime.vocab import Vocab, VocabError

from .config import Seq2SeqConfig
from .model import Seq2Seq

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
SOURCE_VOCAB_FILE = "source_vocab.json"
TARGET_VOCAB_FILE = "target_vocab.json"
# With a tied projection the output weight *is* the target embedding; it is stored once, under the embedding's name.
TIED_KEY = "decoder.output.weight"


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete or inconsistent; the message names the file and key at fault."""


@dataclass
class Checkpoint:
    model: Seq2Seq
    source_vocab: Vocab
    target_vocab: Vocab

    @property
    def config(self) -> Seq2SeqConfig:
        return self.model.cfg


def check_vocabularies(cfg: Seq2SeqConfig, source_vocab: Vocab, target_vocab: Vocab) -> None:
    """Each side must have the roles the architecture needs and the size the config says."""
    source_vocab.require(["pad", "unk"], "source batches are padded and unseen symbols map to unk")
    if cfg.source_eos:
        source_vocab.require(["eos"], "source_eos=True appends it to every source")
    target_vocab.require(["pad", "eos"], "targets are padded in batches and decoding stops at eos")
    if cfg.feed_previous:
        target_vocab.require(["bos"], "feed_previous=True starts decoding from it")
    for key, vocab in (("source_vocab_size", source_vocab), ("target_vocab_size", target_vocab)):
        if getattr(cfg, key) != len(vocab):
            raise VocabError(f"{vocab.origin}: has {len(vocab)} tokens but the config's {key} is {getattr(cfg, key)}")


def start_id(cfg: Seq2SeqConfig, target_vocab: Vocab) -> int:
    """The previous-token id fed at the first step (ignored by the model when feed_previous=False)."""
    return target_vocab.id_of("bos") if cfg.feed_previous else target_vocab.special_ids.get("bos", 0)


def save_checkpoint(checkpoint: Checkpoint, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint.config.save(directory / CONFIG_FILE)
    state = {k: v.detach().cpu().contiguous() for k, v in checkpoint.model.state_dict().items()}
    if checkpoint.config.tie_target_embedding:
        del state[TIED_KEY]
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    checkpoint.source_vocab.save(directory / SOURCE_VOCAB_FILE)
    checkpoint.target_vocab.save(directory / TARGET_VOCAB_FILE)
    return directory


def expected_tensors(cfg: Seq2SeqConfig) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes a checkpoint for this config holds (listed per option in
    docs/reference/checkpoint-format.md)."""
    names = {k: tuple(v.shape) for k, v in Seq2Seq(cfg).state_dict().items()}
    if cfg.tie_target_embedding:
        del names[TIED_KEY]
    return names


def load_checkpoint(directory: str | Path, *, device: str = "cpu") -> Checkpoint:
    """Load a checkpoint directory, checking every tensor's name and shape against the config.

    Examples:
        >>> ckpt = load_checkpoint("runs/reverse/checkpoint")  # doctest: +SKIP
        >>> ckpt.model.greedy(...)  # doctest: +SKIP
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: not a checkpoint directory")
    cfg = Seq2SeqConfig.load(directory / CONFIG_FILE)
    source_vocab = Vocab.load(directory / SOURCE_VOCAB_FILE)
    target_vocab = Vocab.load(directory / TARGET_VOCAB_FILE)
    check_vocabularies(cfg, source_vocab, target_vocab)
    weights_path = directory / WEIGHTS_FILE
    try:
        state = load_file(str(weights_path), device=device)
    except FileNotFoundError:
        raise CheckpointError(f"{weights_path}: file not found") from None
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({error})") from None
    expected = expected_tensors(cfg)
    for name, shape in expected.items():
        if name not in state:
            raise CheckpointError(f"{weights_path}: missing tensor {name!r} (shape {shape}) required by {CONFIG_FILE}")
        if tuple(state[name].shape) != shape:
            raise CheckpointError(
                f"{weights_path}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                f"but {CONFIG_FILE} implies {shape}"
            )
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise CheckpointError(f"{weights_path}: unexpected tensor {unexpected[0]!r} for this {CONFIG_FILE}")
    model = Seq2Seq(cfg).to(device)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=not cfg.tie_target_embedding)
    return Checkpoint(model.eval(), source_vocab, target_vocab)
