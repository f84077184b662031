"""Command-line flags generated from the option dataclasses: one flag per field, its help text taken from the
class's `Arguments:` docstring section, its default shown from the field itself (never written a second time), its
type from the field's annotation, and choices where a command gives them. A flag left out is not passed on, so the
dataclass's own default and validation apply."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ..docstrings import field_help


def add_fields(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    title: str,
    skip: Sequence[str] = (),
    choices: Mapping[str, Sequence[str]] | None = None,
    names: Mapping[str, str] | None = None,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """One flag per field of `cls` (but `skip`), in a group titled `title`. `names` renames a field's flag (without
    the dashes); `aliases` adds more flags for the same field."""
    group = parser.add_argument_group(title)
    helps = field_help(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        flag = "--" + (names or {}).get(field.name, field.name).replace("_", "-")
        flags = [flag, *(aliases or {}).get(field.name, ())]
        text = helps.get(field.name, "").rstrip(".")
        default = field.default if field.default is not dataclasses.MISSING else None
        shown = "" if "default" in text else f" (default: {default if default not in ((), None) else 'none'})"
        kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": (text + shown).strip()}
        annotation = str(field.type)
        if annotation == "bool":
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, **kwargs)
        elif annotation == "tuple":
            group.add_argument(*flags, nargs="+", metavar="TOKEN", **kwargs)
        else:
            kind = float if "float" in annotation else int if "int" in annotation else str
            if choices and field.name in choices:
                kwargs["choices"] = list(choices[field.name])  # argparse shows them as the metavar
            else:
                kwargs["metavar"] = kind.__name__.upper()
            group.add_argument(*flags, type=kind, **kwargs)


def given(args: argparse.Namespace, cls: type, skip: Sequence[str] = ()) -> dict[str, Any]:
    """The fields of `cls` given on the command line (absent ones keep the dataclass's defaults)."""
    return {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(cls)
        if field.name not in skip and getattr(args, field.name, None) is not None
    }
