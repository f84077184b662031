"""Training: teacher forcing, Adam, gradient clipping, length-bucketed batches, early stopping on dev exact match,
seed-deterministic and resumable.

Output directory:
  checkpoint/       the best model so far (by dev exact match) — the input of `s2s export`
  epochs/NNN/       with keep_epochs=K: the weights after each of the last K epochs (checkpoint directories), which
                    `s2s average` averages into one model
  train_state.pt    last epoch's weights, optimizer state and progress, for --resume (tensors only, loaded with
                    weights_only=True)
  metrics.json      per-epoch history and the final dev (and test) metrics
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from s2s_runtime.schema import DEFAULT_TARGET_LENGTH_OFFSET, DEFAULT_TARGET_LENGTH_RATIO
from s2s_runtime.vocab import Vocab

from .checkpoint import Checkpoint, check_vocabularies, load_checkpoint, save_checkpoint, start_id
from .config import ConfigError, Seq2SeqConfig, TrainConfig
from .data import Example, Pair, bucketed_batches, encode_pairs
from .metrics import Metrics, group_references, score_predictions
from .model import Seq2Seq

log = logging.getLogger(__name__)
STATE_FILE = "train_state.pt"
EPOCHS_DIR = "epochs"


@dataclass
class TrainResult:
    checkpoint_dir: Path
    dev: Metrics
    epochs_run: int
    seconds: float
    history: list[dict]


@dataclass
class Batch:
    source_ids: torch.Tensor  # (batch, src_len)
    lengths: torch.Tensor  # (batch,)
    target_in: torch.Tensor  # (batch, tgt_len + 1): start token, then the target
    target_out: torch.Tensor  # (batch, tgt_len + 1): the target, then eos; pad elsewhere
    examples: list[Example]


def collate(examples: Sequence[Example], *, source_pad: int, target_pad: int, start_id: int, eos_id: int) -> Batch:
    batch = len(examples)
    src_len = max(len(e.source_ids) for e in examples)
    tgt_len = max(len(e.target_ids) for e in examples) + 1
    source = torch.full((batch, src_len), source_pad, dtype=torch.long)
    target_in = torch.full((batch, tgt_len), target_pad, dtype=torch.long)
    target_out = torch.full((batch, tgt_len), target_pad, dtype=torch.long)
    for row, e in enumerate(examples):
        source[row, : len(e.source_ids)] = torch.tensor(e.source_ids)
        target_in[row, : len(e.target_ids) + 1] = torch.tensor([start_id] + e.target_ids)
        target_out[row, : len(e.target_ids) + 1] = torch.tensor(e.target_ids + [eos_id])
    lengths = torch.tensor([len(e.source_ids) for e in examples], dtype=torch.long)
    return Batch(source, lengths, target_in, target_out, list(examples))


def build_vocabularies(pairs: Sequence[Pair], model_options: dict, train: TrainConfig) -> tuple[Vocab, Vocab]:
    source_roles = ["pad", "unk"] + (["eos"] if model_options.get("source_eos") else [])
    source = Vocab.build(
        (p.source for p in pairs),
        train.source_tokenizer,
        source_roles,
        min_frequency=train.min_frequency,
        origin="source vocabulary",
    )
    target = Vocab.build(
        (p.target for p in pairs),
        train.target_tokenizer,
        ["pad", "unk", "bos", "eos"],
        min_frequency=train.min_frequency,
        origin="target vocabulary",
    )
    return source, target


def max_target_length(source_length: int) -> int:
    """Decoding limit used in evaluation: the rule s2s export writes into bundles."""
    return math.ceil(DEFAULT_TARGET_LENGTH_RATIO * source_length + DEFAULT_TARGET_LENGTH_OFFSET)


@torch.no_grad()
def predict(
    checkpoint: Checkpoint, sources: Sequence[str], *, batch_size: int = 256, device: str = "cpu"
) -> dict[str, list[str]]:
    """Greedy predictions (target tokens) of a checkpoint in PyTorch, keyed by source."""
    model, cfg = checkpoint.model.eval(), checkpoint.config
    eos = [checkpoint.source_vocab.id_of("eos")] if cfg.source_eos else []
    examples = [Example(checkpoint.source_vocab.encode(s) + eos, [], Pair(s, "")) for s in sources if s]
    tgt = checkpoint.target_vocab
    predictions: dict[str, list[str]] = {s: [] for s in sources}
    for chunk in bucketed_batches(examples, batch_size, None):
        batch = collate(chunk, source_pad=checkpoint.source_vocab.id_of("pad"), target_pad=0, start_id=0, eos_id=0)
        ids = model.greedy(
            batch.source_ids.to(device),
            batch.lengths,
            start_id=start_id(cfg, tgt),
            eos_id=tgt.id_of("eos"),
            max_length=max_target_length(batch.source_ids.shape[1]),
        )
        for example, row in zip(chunk, ids, strict=True):
            predictions[example.pair.source] = tgt.decode_tokens(row)
    return predictions


def evaluate(checkpoint: Checkpoint, pairs: Sequence[Pair], *, device: str = "cpu") -> Metrics:
    """Metrics of greedy PyTorch decoding over pairs (several pairs with one source are alternative references)."""
    references = group_references(pairs, checkpoint.target_vocab.split)
    return score_predictions(predict(checkpoint, list(references), device=device), references)


def train(
    train_pairs: Sequence[Pair],
    dev_pairs: Sequence[Pair],
    out_dir: str | Path,
    *,
    model_options: dict | None = None,
    train_config: TrainConfig = TrainConfig(),
    resume: bool = False,
) -> TrainResult:
    """Train a Seq2Seq on parallel pairs and keep the best checkpoint by dev exact match.

    `model_options` are Seq2SeqConfig fields other than the vocabulary sizes, which come from the data. torch runs
    on `training_threads` threads for the call (restored after).

    Examples:
        >>> from s2s_export.data import task_pairs
        >>> train_pairs, dev_pairs = task_pairs("reverse", "train"), task_pairs("reverse", "dev")  # doctest: +SKIP
        >>> result = train(train_pairs, dev_pairs, "runs/reverse")  # doctest: +SKIP
        >>> result.dev.exact_match  # doctest: +SKIP
        1.0
    """
    out_dir = Path(out_dir)
    tc = train_config
    model_options = dict(model_options or {})
    if tc.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {tc.device!r} requested but torch has no usable CUDA device here")
    if not train_pairs:
        raise ValueError("train: no training examples")
    if not dev_pairs:
        raise ValueError("train: no dev examples (early stopping needs them)")
    threads = torch.get_num_threads()
    try:
        return _train(train_pairs, dev_pairs, out_dir, model_options, tc, resume)
    finally:
        torch.set_num_threads(threads)


MANY_THREADS_FROM = 1_000_000  # parameters


def training_threads(config: TrainConfig, model: nn.Module) -> int:
    """config.threads, or when 0: one thread below MANY_THREADS_FROM parameters, else one per core (at most 8).

    torch's default, one thread per core, is no faster for small recurrent models — their matrices are too small to
    split — and its spinning threads made epochs several times slower on a loaded machine; larger models gain
    (bench/results/train-threads: 1.07x from a second thread for the reverse preset, 1.71x for g2p-en)."""
    if config.threads:
        return config.threads
    if sum(p.numel() for p in model.parameters()) < MANY_THREADS_FROM:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(cores, 8)


def _train(
    train_pairs: Sequence[Pair],
    dev_pairs: Sequence[Pair],
    out_dir: Path,
    model_options: dict,
    tc: TrainConfig,
    resume: bool,
) -> TrainResult:
    source_vocab, target_vocab = build_vocabularies(train_pairs, model_options, tc)
    cfg = Seq2SeqConfig.from_dict(
        {**model_options, "source_vocab_size": len(source_vocab), "target_vocab_size": len(target_vocab)},
        origin="model options",
    )
    check_vocabularies(cfg, source_vocab, target_vocab)
    torch.manual_seed(tc.seed)
    model = Seq2Seq(cfg).to(tc.device)
    torch.set_num_threads(training_threads(tc, model))
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.learning_rate)
    examples = encode_pairs(train_pairs, source_vocab, target_vocab, source_eos=cfg.source_eos)
    dev_sample = random.Random(tc.seed).sample(list(dev_pairs), min(len(dev_pairs), tc.max_dev_examples))
    checkpoint = Checkpoint(model, source_vocab, target_vocab)
    progress = {"epoch": 0, "best": -1.0, "bad_epochs": 0, "history": [], "seconds": 0.0}
    state_path = out_dir / STATE_FILE
    if resume and state_path.exists():
        progress = _restore(state_path, model, optimizer)
        log.info("resuming from %s after epoch %d", state_path, progress["epoch"])
    # The model returns log-probabilities; cross-entropy's own log-softmax leaves them unchanged, and it knows
    # label smoothing (NLLLoss does not).
    loss_fn = nn.CrossEntropyLoss(ignore_index=target_vocab.id_of("pad"), label_smoothing=tc.label_smoothing)
    collate_args = dict(
        source_pad=source_vocab.id_of("pad"),
        target_pad=target_vocab.id_of("pad"),
        start_id=start_id(cfg, target_vocab),
        eos_id=target_vocab.id_of("eos"),
    )
    best_dir = out_dir / "checkpoint"
    while (
        progress["epoch"] < tc.epochs
        and progress["bad_epochs"] < tc.patience
        and progress["best"] < tc.target_exact_match
    ):
        epoch, epoch_started = progress["epoch"] + 1, time.perf_counter()
        torch.manual_seed(tc.seed * 1000 + epoch)  # dropout noise: deterministic per epoch, so resuming is too
        batches = bucketed_batches(examples, tc.batch_size, random.Random(tc.seed * 1000 + epoch))
        model.train()
        total_loss = 0.0
        bar = tqdm(batches, desc=f"epoch {epoch}", disable=not tc.progress, leave=False)
        for chunk in bar:
            batch = collate(chunk, **collate_args)
            log_probs = model(
                batch.source_ids.to(tc.device), batch.lengths, batch.target_in.to(tc.device)
            )  # (batch, tgt_len, vocab)
            loss = loss_fn(log_probs.flatten(0, 1), batch.target_out.to(tc.device).flatten())
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), tc.clip_norm)
            optimizer.step()
            total_loss += loss.item()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        dev = evaluate(checkpoint, dev_sample, device=tc.device)
        record = {"epoch": epoch, "loss": total_loss / len(batches), **dev.to_dict()}
        progress["history"].append(record)
        improved = dev.exact_match > progress["best"]
        if improved:
            progress["best"], progress["bad_epochs"] = dev.exact_match, 0
            save_checkpoint(checkpoint, best_dir)
        else:
            progress["bad_epochs"] += 1
            for group in optimizer.param_groups:  # the optimizer state (saved for resume) carries the decayed rate
                group["lr"] *= tc.lr_decay
        progress["epoch"] = epoch
        _keep_epoch(checkpoint, out_dir / EPOCHS_DIR, epoch, tc.keep_epochs)
        progress["seconds"] = progress.get("seconds", 0.0) + time.perf_counter() - epoch_started
        _save_state(state_path, model, optimizer, progress)
        message = (
            f"epoch {epoch}: loss {record['loss']:.4f}  dev exact {dev.exact_match:.2%}  "
            f"token acc {dev.token_accuracy:.2%}  error rate {dev.error_rate:.2%}" + ("  *" if improved else "")
        )
        (tqdm.write if tc.progress else log.info)(message)
    best = load_checkpoint(best_dir, device=tc.device)
    dev = evaluate(best, dev_pairs, device=tc.device)
    seconds = progress.get("seconds", 0.0)  # training time of every epoch, over all runs of a resumed training
    result = TrainResult(best_dir, dev, progress["epoch"], seconds, progress["history"])
    (out_dir / "metrics.json").write_text(
        json.dumps(
            {
                "dev": dev.to_dict(),
                "epochs": progress["epoch"],
                "seconds": seconds,
                "model": cfg.to_dict(),
                "train": dataclasses.asdict(tc),
                "threads": torch.get_num_threads(),
                "history": progress["history"],
            },
            indent=1,
        )
        + "\n"
    )
    return result


def _keep_epoch(checkpoint: Checkpoint, directory: Path, epoch: int, keep: int) -> None:
    """Save this epoch's weights as directory/NNN and drop the ones older than the last `keep`."""
    if keep == 0:
        return
    save_checkpoint(checkpoint, directory / f"{epoch:03d}")
    for old in sorted(directory.iterdir())[:-keep]:
        shutil.rmtree(old)


def _save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "progress": json.dumps(progress)}, tmp
    )
    tmp.replace(path)  # never leave a half-written state behind


def _restore(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain types only: no unpickling
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return json.loads(state["progress"])
