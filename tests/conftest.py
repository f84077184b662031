"""Shared fixtures: tiny models built in code (random or briefly trained), saved as checkpoints and bundles."""

from __future__ import annotations

import itertools
import random
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import s2s_runtime
from s2s_export.bundle_export import ExportOptions, export_bundle
from s2s_export.checkpoint import Checkpoint, save_checkpoint
from s2s_export.config import Seq2SeqConfig
from s2s_export.data import task_pairs
from s2s_export.model import Seq2Seq
from s2s_runtime.vocab import Vocab

torch.set_num_threads(1)

LETTERS = list("abcdefghij")
SOURCE_VOCAB = Vocab(
    ["<pad>", "<unk>", "</s>"] + LETTERS,
    {"pad": "<pad>", "unk": "<unk>", "eos": "</s>"},
    "char",
    origin="source vocabulary",
)
TARGET_VOCAB = Vocab(
    ["<pad>", "<unk>", "<s>", "</s>"] + LETTERS + ["k", "l"],
    {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"},
    "char",
    origin="target vocabulary",
)
SMALL = dict(hidden_size=16, source_embedding_size=8, target_embedding_size=8)


def architecture(cell: str, layers: int, bidirectional: bool, attention: str, conditioning: str, **extra) -> dict:
    """A valid config dict for one grid cell (bridge chosen to fit), or None if the cell is invalid."""
    options = dict(
        SMALL, cell=cell, num_layers=layers, bidirectional=bidirectional, attention=attention, conditioning=conditioning
    )
    if conditioning == "concat":
        options["bridge"] = "zeros"
    elif bidirectional:
        options["bridge"] = "linear"
    options.update(extra)
    if bidirectional and attention == "dot":
        return None  # dot attention needs encoder outputs of the decoder's size
    return options


GRID = [
    a
    for a in (
        architecture(*cell)
        for cell in itertools.product(
            ("gru", "lstm"), (1, 2), (False, True), ("none", "dot", "general", "additive"), ("init", "concat")
        )
    )
    if a
]
EXTRA_OPTIONS = [
    dict(SMALL, attention="general", input_feeding=True),
    dict(SMALL, cell="lstm", bidirectional=True, bridge="linear", attention="additive", input_feeding=True),
    dict(SMALL, cell="lstm", conditioning="concat", bridge="zeros", feed_previous=False),  # the seed's Keras model
    dict(SMALL, tie_target_embedding=True, target_embedding_size=16, source_eos=True),
    dict(SMALL, bridge="linear", conditioning="both", attention="dot", num_layers=2),
    dict(SMALL, attention="general", input_feeding=True, feed_previous=False),
    # OpenNMT's brnn: half the decoder's units per encoder direction, the directions' final states copied
    dict(
        SMALL,
        cell="lstm",
        bidirectional=True,
        encoder_hidden_size=8,
        attention="general",
        input_feeding=True,
        num_layers=2,
    ),
    dict(SMALL, bidirectional=True, encoder_hidden_size=8, attention="dot"),
    # attention before the step (Bahdanau; the PyTorch tutorial's AttnDecoderRNN is the first)
    dict(SMALL, attention="additive", attention_placement="before", source_eos=True, target_embedding_size=16),
    dict(SMALL, cell="lstm", num_layers=2, attention="general", attention_placement="before"),
    # OpenNMT's mlp attention (combine with bias, no tanh) and its bridge (ReLU(Linear))
    dict(SMALL, attention="additive", attention_combine="affine", input_feeding=True, bridge="linear_relu"),
    dict(SMALL, cell="lstm", bidirectional=True, encoder_hidden_size=8, bridge="linear_relu", attention="dot"),
]


def grid_id(options: dict) -> str:
    keys = (
        "cell",
        "num_layers",
        "bidirectional",
        "attention",
        "conditioning",
        "input_feeding",
        "feed_previous",
        "tie_target_embedding",
        "source_eos",
        "encoder_hidden_size",
        "attention_placement",
        "attention_combine",
        "bridge",
    )
    return "-".join(f"{k}={options[k]}" for k in keys if k in options)


def random_checkpoint(seed: int = 0, **options) -> Checkpoint:
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(source_vocab_size=len(SOURCE_VOCAB), target_vocab_size=len(TARGET_VOCAB), **options)
    return Checkpoint(Seq2Seq(cfg).eval(), SOURCE_VOCAB, TARGET_VOCAB)


def random_sources(count: int, seed: int = 0, low: int = 1, high: int = 9) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(LETTERS) for _ in range(rng.randint(low, high))) for _ in range(count)]


def write_bundle(checkpoint: Checkpoint, directory: Path) -> Path:
    save_checkpoint(checkpoint, directory / "checkpoint")
    return export_bundle(
        directory / "checkpoint",
        directory / "bundle",
        validation_sources=random_sources(16),
        options=ExportOptions(validation_size=16),
    )


def as_revision_2(bundle: Path) -> Path:
    """Rewrite a bundle in place as a format-2 exporter wrote it: no greedy graph, each graph holding its own tensors
    (no weights.bin)."""
    import json

    import onnx

    from s2s_runtime.bundle import sha256_of

    manifest = json.loads((bundle / "manifest.json").read_text())
    for kind in ("encoder", "decoder_step"):
        path = bundle / manifest["graphs"][kind]["file"]
        onnx.save(onnx.load(str(path)), str(path))  # loaded with its external data, saved holding it
        manifest["files"][path.name] = sha256_of(path)
    for name in (manifest["graphs"].pop("greedy")["file"], "weights.bin"):
        (bundle / name).unlink()
        del manifest["files"][name]
    manifest["format_version"] = 2
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


REVERSE_CHECKPOINT = Path(__file__).parent / "fixtures" / "reverse"  # made by tests/fixtures/make_reverse.py


@pytest.fixture(scope="session")
def reverse_model(tmp_path_factory) -> dict:
    """A small model trained on the reverse task to 100% dev exact match (committed, with its golden outputs), and
    its bundle."""
    root = tmp_path_factory.mktemp("reverse")
    bundle = export_bundle(
        REVERSE_CHECKPOINT,
        root / "bundle",
        validation_sources=[p.source for p in task_pairs("reverse", "dev", size=3000)],
    )
    return {"checkpoint": REVERSE_CHECKPOINT, "bundle": bundle, "root": root}


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory) -> Path:
    """A random-weight GRU with attention (bundle directory), for runtime tests that need no trained model."""
    root = tmp_path_factory.mktemp("small")
    return write_bundle(
        random_checkpoint(3, **dict(SMALL, attention="general", bidirectional=True, bridge="linear")), root
    )


RUNNER_ARCHITECTURES = [
    dict(
        hidden_size=16,
        cell="lstm",
        attention="additive",
        input_feeding=True,
        bidirectional=True,
        bridge="linear",
        num_layers=2,
    ),
    dict(hidden_size=16, conditioning="both", attention="dot"),
]


@pytest.fixture(scope="module", params=RUNNER_ARCHITECTURES, ids=["lstm-additive-feed", "gru-dot-both"])
def model(request, tmp_path_factory):
    """Two random-weight models whose states and statics cover every role, for the decoder-runner tests."""
    checkpoint = random_checkpoint(13, **request.param)
    return s2s_runtime.load(write_bundle(checkpoint, tmp_path_factory.mktemp("runner")), device="cpu")


def array_runner(graph, states, statics, with_attention, top_k=1):
    """A StepRunner over `session.run` with numpy arrays."""
    from s2s_runtime.engine.runner import ArrayBuffers, StepRunner

    return StepRunner(graph, ArrayBuffers(graph, states, statics, with_attention, top_k), top_k)


def bound_runner(graph, states, statics, with_attention, top_k=1, device=None):
    """A StepRunner over IO binding on `device` (default: the host)."""
    from s2s_runtime.engine.device import HostDevice
    from s2s_runtime.engine.runner import BoundBuffers, StepRunner

    return StepRunner(graph, BoundBuffers(graph, states, statics, with_attention, device or HostDevice(), top_k), top_k)


def cpu_ortvalue_device():
    """The device code path (OrtValues, rows gathered by graphs), run on the CPU."""
    from s2s_runtime.engine.device import OrtValueDevice

    return OrtValueDevice("cpu", 0, ["CPUExecutionProvider"])


def drive(runner, steps=6):
    """Step, compact and reorder a runner the way the searches do; collect every output."""
    outputs, previous = [], np.array([4, 5, 6, 7, 8])
    for step in range(steps):
        log_probs, attention = runner.step(previous)
        outputs.append(log_probs.copy())
        if attention is not None:
            outputs.append(attention.copy())
        previous = log_probs.argmax(axis=1)
        if step == 2:  # a row finishes: compaction
            runner.select(np.array([0, 2, 3, 4]))
            previous = previous[[0, 2, 3, 4]]
        if step == 4:  # beam-style reorder with repeats
            runner.select(np.array([3, 3, 0, 1]))
            previous = previous[[3, 3, 0, 1]]
    return outputs


def wait_until(predicate, timeout=10.0):
    """Poll instead of sleeping a fixed time, so a loaded CI machine cannot reorder the steps of a test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


class Wrapped:
    """The real model with its decoding wrapped by `around(method, args, kwargs)`: `stream`, and the `run` of every
    Generation `start` hands out (args: the generation's items; kwargs: its stop)."""

    def __init__(self, model, around):
        self._model, self._around = model, around

    def __getattr__(self, name):
        return getattr(self._model, name)

    def start(self, items, plan, **kwargs):
        generation = self._model.start(items, plan, **kwargs)
        run = generation.run
        generation.run = lambda stop=None: self._around(lambda _items, stop=None: run(stop), (items,), {"stop": stop})
        return generation

    def stream(self, *args, **kwargs):
        return self._around(self._model.stream, args, kwargs)


def slowed(counter):
    """An `around` that makes every decoder step take ≥ 1 ms and counts the steps (the stop checks)."""

    def around(method, args, kwargs):
        stop = kwargs["stop"]

        def slow_stop():
            counter[0] += 1
            time.sleep(0.001)
            return stop()

        return method(*args, **{**kwargs, "stop": slow_stop})

    return around
