"""`s2s info`: what a bundle is — config, parameters, vocabularies, limits, parity, graphs, lexicon, target views
(tokens each changes), files, providers."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..bundle import Bundle
from ..engine.sessions import import_onnxruntime
from .common import add_bundle


def add_parser(commands: Any) -> None:
    parser = commands.add_parser("info", help="describe a bundle: config, parameters, files, providers")
    add_bundle(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    manifest = bundle.manifest.to_json()
    info = {
        "bundle": str(bundle.root),
        "format_version": manifest["format_version"],
        "config": manifest["config"],
        "parameters": manifest["parameters"],
        "source": _side(bundle.source),
        "target": _side(bundle.target),
        "limits": manifest["limits"],
        "opset": manifest["opset"],
        "graph_variant": manifest["graph_variant"],
        "precision": manifest["precision"],
        "producer": manifest["producer"],
        # The gate is the scaled difference (|runtime − torch| over the log-probs' magnitude) against the tolerance.
        "parity": {k: manifest["parity"].get(k) for k in ("passed", "max_scaled_diff", "tolerance", "max_abs_diff")},
        "graphs": sorted(bundle.graphs),  # "greedy": the whole greedy decode in one call
        "lexicon": len(bundle.lexicon) if bundle.lexicon is not None else None,  # known inputs
        "target_views": {name: len(view) for name, view in (bundle.manifest.target_views or {}).items()},
        "files": {name: (bundle.root / name).stat().st_size for name in sorted(manifest["files"])},
        "available_providers": import_onnxruntime().get_available_providers(),
    }
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for inner_key, inner_value in value.items():
                print(f"  {inner_key}: {inner_value}")
        else:
            print(f"{key}: {value}")
    return 0


def _side(side: Any) -> dict:
    return {"tokenizer": side.vocab.tokenizer, "vocab_size": len(side.vocab), "special_ids": side.special_ids}
