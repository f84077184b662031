"""The `s2s` command: one module per subcommand (generate, score, serve, bulk, info), their flags generated from the
option dataclasses (flags.py); train, export, convert, eval and the bench commands come from the other packages
through the "s2s.commands" entry points, so the runtime imports neither."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from .. import __version__
from ..bundle import BundleError
from ..engine.sessions import DeviceError
from . import bulk, generate, info, score, serve
from .common import add_batching_flags, add_generation_flags, batching_options, generation_options

COMMANDS_GROUP = "s2s.commands"
log = logging.getLogger("s2s_runtime.cli")

__all__ = [
    "add_batching_flags",
    "add_generation_flags",
    "batching_options",
    "build_parser",
    "generation_options",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s", description="Recurrent seq2seq models on onnxruntime.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level (device choice, ...)")
    parser.add_argument("--version", action="version", version=f"s2s-runtime {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (generate, score, serve, bulk, info):
        command.add_parser(commands)
    add_plugin_commands(commands)
    return parser


def add_plugin_commands(commands: argparse._SubParsersAction) -> None:
    """The commands of the other packages (train, export, eval from s2s_export; bench, bench-serve, bench-bulk from
    s2s_bench), found through the "s2s.commands" entry points: the runtime imports neither package. Each entry point
    is a function that adds its subcommand; the modules import nothing heavy until a command runs."""
    from importlib.metadata import entry_points

    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            add = entry.load()
        except ImportError as error:  # a package of the distribution left out of this install
            log.debug("s2s: no %s command (%s)", entry.name, error)
            continue
        add(commands)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # words after an option are more inputs (`s2s generate g2p-en --strategy beam hello world`)
        unknown = [word for word in extra if word.startswith("-")]
        if unknown or not hasattr(args, "inputs"):
            parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
        args.inputs += extra
    chatty = args.verbose or args.command == "train"  # training reports each epoch's dev metrics
    logging.basicConfig(level=logging.INFO if chatty else logging.WARNING, format="%(message)s")
    try:
        return args.handler(args)
    except (BundleError, DeviceError, ValueError, TypeError, ImportError, FileNotFoundError) as error:
        print(f"s2s {args.command}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `s2s generate ... | head -1`: the reader is gone; end as a killed writer would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 128 + signal.SIGPIPE
