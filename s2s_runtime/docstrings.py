"""The `Arguments:` section of a dataclass's docstring, read as field descriptions: the one text of an option, shown
as its command-line help (s2s_runtime.cli.flags) and in the HTTP API's OpenAPI schema."""

from __future__ import annotations

import re

_ARGUMENT = re.compile(r"^ {8}(\w+): (.*)$")
_CONTINUATION = re.compile(r"^ {12}(.*)$")


def field_help(cls: type) -> dict[str, str]:
    """The `Arguments:` section of a dataclass's docstring: field name → its description (lines joined).

    Examples:
        >>> from s2s_runtime.batching import BatchingOptions
        >>> field_help(BatchingOptions)["max_batch_size"]
        'inputs per batch (default 64).'
    """
    lines = (cls.__doc__ or "").splitlines()
    if "    Arguments:" not in lines:
        return {}
    helps: dict[str, str] = {}
    current = None
    for line in lines[lines.index("    Arguments:") + 1 :]:
        if match := _ARGUMENT.match(line):
            current = match.group(1)
            helps[current] = match.group(2)
        elif current and (match := _CONTINUATION.match(line)):
            helps[current] += " " + match.group(1)
        elif line.strip() == "" or not line.startswith("        "):
            if line.strip():
                break
            current = None
    return helps
