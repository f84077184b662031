"""`s2s upgrade`: a bundle of an earlier revision rewritten in the current one — its own graphs, unchanged, plus the
greedy graph composed from them and the weights stored once in weights.bin — without the checkpoint it came from.

The greedy graph is checked against the bundle's own step loop (as `s2s export` checks it) on sources drawn from
the bundle's source vocabulary, or the given ones; the result is written next to the destination and renamed into
place, so a failure leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import onnx

from s2s_runtime.bundle import MANIFEST_FILE, Bundle

from .bundle_export import DECODER_FILE, ENCODER_FILE, GREEDY, check_greedy, write_manifest
from .greedy_graph import GREEDY_FILE, build_greedy, greedy_schema
from .weights_file import WEIGHTS_FILE, save_sharing_weights


def upgrade_bundle(bundle: str | Path, out: str | Path, *, sources: Sequence[str] | None = None) -> Path:
    """Write `bundle` (a directory or built-in name, any revision the runtime reads) to `out` in the current
    revision with a greedy graph; ValueError if it has one already, ParityError if the greedy graph does not decode
    as its step loop.

    Examples:
        >>> upgrade_bundle("bundles/old", "bundles/new")  # doctest: +SKIP
        PosixPath('bundles/new')
    """
    old = Bundle.open(bundle)  # every checksum verified
    manifest = old.manifest
    if GREEDY in manifest.graphs:
        raise ValueError(f"{old.root}: already has a greedy graph (nothing to upgrade)")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)
    try:
        graph_files = {old.graphs[kind].path.name for kind in ("encoder", "decoder_step")}
        for path in sorted(old.root.iterdir()):
            if path.name not in graph_files | {MANIFEST_FILE, WEIGHTS_FILE}:
                shutil.copy2(path, staging / path.name)
        encoder = onnx.load(str(old.graphs["encoder"].path))  # with its external data, if it has any
        step = onnx.load(str(old.graphs["decoder_step"].path))
        encoder_schema, step_schema = manifest.graphs["encoder"], manifest.graphs["decoder_step"]
        greedy = build_greedy(
            encoder, step, encoder_schema, step_schema, start_id=manifest.start_id, eos_id=manifest.eos_id
        )
        save_sharing_weights({ENCODER_FILE: encoder, DECODER_FILE: step, GREEDY_FILE: greedy}, staging)
        graphs = {
            "encoder": dataclasses.replace(encoder_schema, file=ENCODER_FILE),
            "decoder_step": dataclasses.replace(step_schema, file=DECODER_FILE),
            GREEDY: greedy_schema(encoder_schema),
        }
        upgraded = dataclasses.replace(manifest, graphs=graphs)
        write_manifest(staging, upgraded)
        check_greedy(staging, upgraded, sources or _random_sources(old), "cpu")
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _random_sources(bundle: Bundle, count: int = 64, seed: int = 0) -> list[str]:
    """Sources of 1 to 12 random symbols of the bundle's source vocabulary (its special tokens left out)."""
    vocab = bundle.source.vocab
    symbols = [t for i, t in enumerate(vocab.tokens) if i not in vocab.special_ids.values()] or vocab.tokens
    rng = random.Random(seed)
    return [vocab.join([rng.choice(symbols) for _ in range(rng.randint(1, 12))]) for _ in range(count)]
