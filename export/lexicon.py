"""Attaching a lexicon to a bundle: exact outputs for known inputs, answered by the runtime without decoding
(s2s_runtime.lexicon says the format and the lookup)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path

from s2s_runtime.bundle import MANIFEST_FILE, Bundle
from s2s_runtime.lexicon import FILE
from s2s_runtime.schema import Manifest

from .bundle_export import write_manifest


def read_lexicon(path: Path) -> list[tuple[str, str]]:
    """(key, output) pairs of a TSV file, `key<TAB>output tokens` per line (a key's lines are its variants)."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if line.strip():
            key, tab, output = line.partition("\t")
            if not tab:
                raise ValueError(f"{path}:{number}: no tab between the key and the output")
            pairs.append((key, output.strip()))
    return pairs


def attach_lexicon(bundle: Path, pairs: Iterable[tuple[str, str]]) -> int:
    """Write `pairs` as the bundle's lexicon (lexicon.tsv.gz, its checksum in the manifest) and check that the
    runtime loads it (a BundleError names the line at fault, and the bundle is left without it). Returns the number
    of known inputs.

    Examples:
        >>> attach_lexicon(Path("bundles/g2p"), [("read", "R IY D"), ("read", "R EH D")])  # doctest: +SKIP
        1
    """
    bundle = Path(bundle)
    path = bundle / FILE
    text = "".join(f"{key}\t{output}\n" for key, output in pairs)
    path.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    manifest = Manifest.parse(json.loads((bundle / MANIFEST_FILE).read_text()))
    write_manifest(bundle, manifest)
    try:
        lexicon = Bundle.open(bundle).lexicon
    except Exception:
        path.unlink()
        write_manifest(bundle, manifest)
        raise
    assert lexicon is not None  # just written
    return len(lexicon)
