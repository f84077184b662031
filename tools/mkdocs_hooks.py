"""MkDocs hooks: `<!-- s2s-cli -->` in a page becomes the help of `s2s` and of every subcommand, generated from the
argparse parser the command itself uses (so the reference cannot drift from the code); and the plots of
bench/results join the site under the same paths, so pages show the measured runs without copies in docs/."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

MARKER = "<!-- s2s-cli -->"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps its subparsers here; there is no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_reference() -> str:
    from s2s_runtime.cli import build_parser

    os.environ["COLUMNS"] = "110"  # argparse wraps help to the terminal width: fix it for reproducible pages
    parser = build_parser()
    sections = ["## s2s", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, command in sorted(_subcommands(parser).items()):
        sections += [f"## s2s {name}", "", "```text", command.format_help().rstrip(), "```", ""]
    return "\n".join(sections)


def on_page_markdown(markdown: str, **_: object) -> str:
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    root = Path(config["docs_dir"]).parent
    for plot in sorted((root / "bench" / "results").glob("*/*.png")):
        files.append(File(str(plot.relative_to(root)), str(root), config["site_dir"], config["use_directory_urls"]))
    return files
