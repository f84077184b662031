"""Target views: alternative spellings of a bundle's outputs that callers ask for by name (GenerationOptions.view),
written into its manifest — e.g. g2p-en's "no-stress", ARPAbet without CMUdict's stress digits (AH0 → AH)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from s2s_runtime.bundle import MANIFEST_FILE, Bundle
from s2s_runtime.schema import Manifest

from .bundle_export import write_manifest


def view_removing(pattern: str, tokens: list[str]) -> dict[str, str]:
    """The view that removes what `pattern` (a regular expression) matches from each token — only the tokens it
    changes and leaves non-empty.

    Examples:
        >>> view_removing(r"\\d", ["AH0", "EY1", "K", "</s>"])
        {'AH0': 'AH', 'EY1': 'EY'}
    """
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"target view: {pattern!r} is not a regular expression ({error})") from None
    shown = {token: compiled.sub("", token) for token in tokens}
    return {
        token: view for token, view in shown.items() if view and view != token and not any(c.isspace() for c in view)
    }


def attach_target_view(bundle: Path, name: str, pattern: str) -> int:
    """Add the view `name` (what `pattern` matches removed from each target token) to the bundle's manifest and check
    that the runtime loads it. Returns the number of tokens the view changes.

    Examples:
        >>> attach_target_view(Path("bundles/g2p"), "no-stress", r"\\d")  # doctest: +SKIP
        15
    """
    bundle = Path(bundle)
    if not name or any(c.isspace() for c in name):
        raise ValueError(f"target view: {name!r} is not a name")
    manifest = Manifest.parse(json.loads((bundle / MANIFEST_FILE).read_text()))
    view = view_removing(pattern, Bundle.open(bundle).target.vocab.tokens)
    if not view:
        raise ValueError(f"target view {name!r}: {pattern!r} changes no target token")
    write_manifest(bundle, dataclasses.replace(manifest, target_views={**(manifest.target_views or {}), name: view}))
    Bundle.open(bundle)
    return len(view)
