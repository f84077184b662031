"""`s2s export`: checkpoint directory → bundle directory, gated by the parity check."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnxruntime
import torch

from s2s_runtime.bundle import MANIFEST_FILE, BundleError, sha256_of
from s2s_runtime.engine.sessions import DeviceError
from s2s_runtime.schema import (
    DEFAULT_TARGET_LENGTH_OFFSET,
    DEFAULT_TARGET_LENGTH_RATIO,
    MAX_TARGET_LENGTH_OFFSET,
    MAX_TARGET_LENGTH_RATIO,
    GraphSchema,
    Manifest,
    SideSchema,
)

from .checkpoint import SOURCE_VOCAB_FILE, TARGET_VOCAB_FILE, Checkpoint, load_checkpoint, start_id
from .config import ENCODER_OPS
from .graph_builder import OPSET
from .greedy_graph import GREEDY_FILE, build_greedy, greedy_parity, greedy_schema
from .model import MASK_VALUE
from .onnx_graphs import ExportedGraph, build_decoder_step, build_encoder
from .parity import ParityError, check_parity, require_parity
from .precision import PRECISIONS, convert_fp16, quality_change
from .quantize import quantize_int8
from .weights_file import save_sharing_weights

ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder_step.onnx"
GREEDY = "greedy"  # the manifest's name of the greedy graph


@dataclass(frozen=True)
class ExportOptions:
    """Settings of an export.

    Examples:
        >>> ExportOptions(max_source_length=256).validation_size
        64
    """

    max_source_length: int = 1024  # longer inputs are refused by the runtime (no limit is baked into the weights)
    # The bundle's default output-length rule, ceil(ratio × source length + offset) tokens (ratio 0: a fixed length),
    # so a model converted from another tool can carry that tool's own rule.
    target_length_ratio: float = DEFAULT_TARGET_LENGTH_RATIO
    target_length_offset: int = DEFAULT_TARGET_LENGTH_OFFSET
    validation_size: int = 64  # sources used by the parity check
    plain: bool = False  # ONNX GRU/LSTM ops (+ Gemm in the step) instead of the optimized graphs
    # How the optimized encoder runs its recurrence (s2s_export.onnx_graphs.build_encoder): "auto", "scan" (the
    # faster GRU from batch 8 up; what int8 needs), "rnn" (the ONNX GRU/LSTM op: the faster at batch 1).
    encoder_op: str = "auto"
    precision: str = "float32"  # "int8" (dynamic quantization) or "float16" (for CUDA)
    overwrite: bool = False
    seed: int = 0
    progress: bool = False  # a parity progress bar on a terminal
    # |Δ|/max(1, |value|) the parity check always allows against float64 PyTorch (None: parity.TOLERANCE); a value
    # set here is recorded in the manifest as set by the user.
    parity_tolerance: float | None = None
    # Also write the greedy graph (encoder + a Loop over the step: the whole greedy decode in one onnxruntime call,
    # s2s_export.greedy_graph), with the graphs' weights stored once in weights.bin.
    greedy: bool = True

    def __post_init__(self) -> None:
        if self.max_source_length < 1 or self.validation_size < 1:
            raise ValueError("max_source_length and validation_size must be ≥ 1")
        if not 0 <= self.target_length_ratio <= MAX_TARGET_LENGTH_RATIO:
            raise ValueError(
                f"target_length_ratio: must be in [0, {MAX_TARGET_LENGTH_RATIO:g}], got {self.target_length_ratio}"
            )
        if not 1 <= self.target_length_offset <= MAX_TARGET_LENGTH_OFFSET:
            raise ValueError(
                f"target_length_offset: must be in [1, {MAX_TARGET_LENGTH_OFFSET}], got {self.target_length_offset}"
            )
        if self.parity_tolerance is not None and not 0 < self.parity_tolerance < 1:
            raise ValueError(f"parity_tolerance: must be in (0, 1), got {self.parity_tolerance}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.encoder_op not in ENCODER_OPS:
            raise ValueError(f"encoder_op: {self.encoder_op!r} is not one of {', '.join(ENCODER_OPS)}")
        if self.encoder_op == "rnn" and self.precision == "int8":
            raise ValueError(
                "encoder_op: 'rnn' with int8: onnxruntime's GRU/LSTM ops have no batch-independent int8 form, so the "
                "encoder would stay float32; int8 exports write it as a Scan ('auto' or 'scan')"
            )


def export_bundle(
    checkpoint: str | Path | Checkpoint,
    out_dir: str | Path,
    *,
    validation_sources: Sequence[str] | None = None,
    options: ExportOptions = ExportOptions(),
) -> Path:
    """Write a bundle (encoder.onnx, decoder_step.onnx, vocabularies, manifest.json) after proving parity with PyTorch.

    `validation_sources` (raw source texts, e.g. the dev set) feed the parity check; without them, random sequences of
    source symbols are used. On a parity failure ParityError is raised and nothing is left at `out_dir`.

    Examples:
        >>> export_bundle("runs/reverse/checkpoint", "bundles/reverse",
        ...               validation_sources=["abc", "hello"])  # doctest: +SKIP
        PosixPath('bundles/reverse')
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    out_dir = Path(out_dir)
    if out_dir.exists() and not options.overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass overwrite=True / --overwrite to replace it)")
    ckpt.model.eval()
    # int8 quantizes the encoder's MatMuls: its layers are written as Scans (see build_encoder).
    encoder_op = "scan" if options.precision == "int8" else options.encoder_op
    encoder = build_encoder(ckpt.model, plain=options.plain, encoder_op=encoder_op)
    decoder = build_decoder_step(ckpt.model, plain=options.plain)
    validation = _validation_ids(ckpt, validation_sources, options)
    report = check_parity(
        ckpt, encoder, decoder, validation, tolerance=options.parity_tolerance, progress=options.progress
    )
    require_parity(report)
    manifest = build_manifest(ckpt, encoder, decoder, report.to_dict(), options)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Written next to the destination and renamed at the end, so a crash never leaves a half-bundle at out_dir.
    staging = [_write(out_dir, ckpt, encoder.model, decoder.model, manifest)]
    eos = ckpt.config.source_eos  # the validation ids end with it; the runtime appends it itself
    sources = [ckpt.source_vocab.decode(ids[:-1] if eos else ids) for ids in validation]
    try:
        manifest = check_greedy(staging[0], manifest, sources, "cpu")
        if options.precision != "float32":
            # The parity above proved the fp32 graphs; the reduced-precision graphs are measured against them.
            reduced = dataclasses.replace(manifest, precision=options.precision)
            if options.precision == "int8":
                graphs = quantize_int8(
                    encoder,
                    decoder,
                    validation,
                    pad_id=ckpt.source_vocab.id_of("pad"),
                    start_id=start_id(ckpt.config, ckpt.target_vocab),
                    eos_id=ckpt.target_vocab.id_of("eos"),
                )
            else:
                graphs = convert_fp16(encoder.model), convert_fp16(decoder.model)
            staging.append(_write(out_dir, ckpt, *graphs, reduced))
            reduced = check_greedy(staging[1], reduced, sources, "auto" if options.precision == "float16" else "cpu")
            quality = quality_change(staging[0], staging[1], sources, options.precision)
            write_manifest(staging[1], dataclasses.replace(reduced, quality=quality))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging[-1].rename(out_dir)
    finally:
        for directory in staging:
            shutil.rmtree(directory, ignore_errors=True)
    return out_dir


def check_greedy(directory: Path, manifest: Manifest, sources: Sequence[str], device: str) -> Manifest:
    """The written bundle's greedy graph checked against its step loop (ParityError unless identical), the check
    recorded in the manifest's parity report; a bundle without one as it is."""
    if GREEDY not in manifest.graphs:
        return manifest
    try:
        report = greedy_parity(directory, sources, device=device)
    except DeviceError as error:  # a float16 bundle on a machine without CUDA: checked where it runs, at load
        report = {"measured": False, "reason": str(error)}
    except BundleError as error:  # the runtime's own load-time probe already saw it decode differently
        raise ParityError(f"parity check failed — {error}") from None
    if report.get("passed") is False:
        raise ParityError(
            f"parity check failed — the greedy graph decodes differently from the step loop ({report}); "
            "export with --no-greedy and report this"
        )
    checked = dataclasses.replace(manifest, parity={**manifest.parity, "greedy_graph": report})
    write_manifest(directory, checked)
    return checked


def _write(
    out_dir: Path, ckpt: Checkpoint, encoder: onnx.ModelProto, decoder: onnx.ModelProto, manifest: Manifest
) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    if GREEDY in manifest.graphs:
        greedy = build_greedy(
            encoder,
            decoder,
            manifest.graphs["encoder"],
            manifest.graphs["decoder_step"],
            start_id=manifest.start_id,
            eos_id=manifest.eos_id,
        )
        save_sharing_weights({ENCODER_FILE: encoder, DECODER_FILE: decoder, GREEDY_FILE: greedy}, staging)
    else:
        onnx.save(encoder, str(staging / ENCODER_FILE))
        onnx.save(decoder, str(staging / DECODER_FILE))
    ckpt.source_vocab.save(staging / SOURCE_VOCAB_FILE)
    ckpt.target_vocab.save(staging / TARGET_VOCAB_FILE)
    write_manifest(staging, manifest)
    return staging


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Write manifest.json with the checksum of every other file of the directory."""
    files = {p.name: sha256_of(p) for p in sorted(directory.iterdir()) if p.name != MANIFEST_FILE}
    data = dataclasses.replace(manifest, files=files).to_json()
    (directory / MANIFEST_FILE).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def _validation_ids(ckpt: Checkpoint, sources: Sequence[str] | None, options: ExportOptions) -> list[list[int]]:
    rng = random.Random(options.seed)
    eos = [ckpt.source_vocab.id_of("eos")] if ckpt.config.source_eos else []
    if sources:
        chosen = rng.sample(list(sources), min(len(sources), options.validation_size))
        ids = [ckpt.source_vocab.encode(s) + eos for s in chosen if s]
        if ids:
            return ids
    symbols = [i for i in range(len(ckpt.source_vocab)) if i not in ckpt.source_vocab.special_ids.values()]
    symbols = symbols or list(range(len(ckpt.source_vocab)))
    return [[rng.choice(symbols) for _ in range(rng.randint(1, 12))] + eos for _ in range(options.validation_size)]


def build_manifest(
    ckpt: Checkpoint, encoder: ExportedGraph, decoder: ExportedGraph, parity: dict, options: ExportOptions
) -> Manifest:
    """The manifest of an export (its `files` are filled in when it is written)."""

    def graph(file: str, exported: ExportedGraph) -> GraphSchema:
        return GraphSchema(file, {io.role: io for io in exported.inputs}, {io.role: io for io in exported.outputs})

    graphs = {"encoder": graph(ENCODER_FILE, encoder), "decoder_step": graph(DECODER_FILE, decoder)}
    if options.greedy:
        graphs[GREEDY] = greedy_schema(graphs["encoder"])
    return Manifest(
        config=ckpt.config.to_dict(),
        source=SideSchema(SOURCE_VOCAB_FILE, ckpt.source_vocab.special_ids),
        target=SideSchema(TARGET_VOCAB_FILE, ckpt.target_vocab.special_ids),
        start_id=start_id(ckpt.config, ckpt.target_vocab),
        eos_id=ckpt.target_vocab.id_of("eos"),
        memory_bias_padding=MASK_VALUE if ckpt.config.attention != "none" else None,
        max_source_length=options.max_source_length,
        limits_ratio=options.target_length_ratio,
        limits_offset=options.target_length_offset,
        graphs=graphs,
        opset=OPSET,
        graph_variant="plain" if options.plain else "optimized",
        precision="float32",
        files={},
        parameters=sum(p.numel() for p in ckpt.model.parameters()),  # shared (tied) weights counted once
        producer={
            "name": "s2s_export",
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        parity=parity,
    )
