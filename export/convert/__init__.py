"""`s2s convert`: models trained with other tools → checkpoints in this project's format (then `s2s export`).

Each converter reads the other tool's files without importing the tool (no pickled code runs: `.pt` files load
weights-only), maps its tensors onto the model family's names one to one, refuses what the family cannot express
with an error naming the option, and writes a checkpoint plus `conversion.json`: where the model came from, and how
the tool decodes it (its length limit, its start and end tokens, what it does to inputs before the model sees
them), so old outputs can be reproduced on purpose. Formats: `g2p-en` (the g2p_en package's `checkpoint20.npz`),
`keras` (a Keras 3 `.keras` file of the two classic character seq2seq shapes, with a tokens file), `opennmt` (an
OpenNMT-py RNN `.pt`), `torch-tutorial` (the PyTorch seq2seq tutorial's encoder.pt and decoder.pt).

Examples:
    >>> conversion = convert("g2p-en", "checkpoint20.npz", "runs/g2p-en-converted")  # doctest: +SKIP
    >>> conversion.export_options  # doctest: +SKIP
    {'target_length_ratio': 0.0, 'target_length_offset': 20}
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from .base import Conversion, ConversionError

__all__ = ["FORMATS", "Conversion", "ConversionError", "convert"]

REPORT_FILE = "conversion.json"
# format → (module of this package, its converter function); imported when used, so `s2s --help` needs no torch
FORMATS: dict[str, tuple[str, str]] = {
    "g2p-en": ("g2p_en", "convert_g2p_en"),
    "keras": ("keras", "convert_keras"),
    "opennmt": ("opennmt", "convert_opennmt"),
    "torch-tutorial": ("torch_tutorial", "convert_torch_tutorial"),
}


def convert(format: str, source: str | Path, out: str | Path, *, tokens: str | Path | None = None) -> Conversion:
    """Convert `source` (a file of the tool named by `format`) into a checkpoint directory `out`, with the report
    as `out`/conversion.json. `tokens`: the token lists, for formats whose files do not hold them (keras)."""
    from ..checkpoint import save_checkpoint

    if format not in FORMATS:
        raise ConversionError(f"format {format!r} is not one of {', '.join(sorted(FORMATS))}")
    source = Path(source)
    if not source.exists():
        raise ConversionError(f"{source}: no such file or directory")
    module, function = FORMATS[format]
    converter = getattr(importlib.import_module(f".{module}", __name__), function)
    conversion: Conversion = converter(source, None if tokens is None else Path(tokens))
    directory = save_checkpoint(conversion.checkpoint, out)
    (directory / REPORT_FILE).write_text(json.dumps(conversion.report, indent=2) + "\n")
    return conversion
