"""Reading the project's JSON files with errors that name the file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

# A manifest or vocabulary nested deeper than this is not one of ours; Python's parser would recurse until a
# RecursionError long before anything useful came of it.
MAX_JSON_DEPTH = 64


def regular_file(path: Path, error: type[ValueError]) -> Path:
    """`path` itself, if it is a regular file and not a symbolic link (checked without opening it): a file that
    links elsewhere, a directory, a FIFO or a device is never read."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as problem:
        raise error(f"{path}: cannot be read ({problem.strerror})") from None
    except ValueError:  # a NUL byte in the name: no file can have it
        raise error(f"{str(path)!r}: not a valid file name (it contains a NUL byte)") from None
    if stat.S_ISLNK(mode):
        raise error(f"{path}: is a symbolic link; bundle and vocabulary files must be regular files")
    if not stat.S_ISREG(mode):
        raise error(f"{path}: is not a regular file")
    return path


def read_json(path: Path, error: type[ValueError]) -> object:
    """The parsed content of a regular JSON file; `error` (a ValueError subclass) naming the file if it is missing,
    not a regular file, invalid, or nested deeper than MAX_JSON_DEPTH.

    Examples:
        >>> read_json(Path("missing.json"), ValueError)
        Traceback (most recent call last):
        ...
        ValueError: missing.json: file not found
    """
    regular_file(path, error)
    try:
        return parse_json(path.read_bytes(), error, str(path))
    except OSError as problem:
        raise error(f"{path}: cannot be read ({problem.strerror})") from None


def parse_json(data: bytes | str, error: type[ValueError], origin: str, max_depth: int = MAX_JSON_DEPTH) -> object:
    """JSON text parsed, or `error` naming `origin`: invalid text, numbers Python refuses (over 4300 digits), or
    nesting deeper than `max_depth`.

    Examples:
        >>> parse_json("[[[1]]]", ValueError, "body", max_depth=2)
        Traceback (most recent call last):
        ...
        ValueError: body: JSON nested deeper than 2 levels
    """
    try:
        value = json.loads(data)
    except RecursionError:
        raise error(f"{origin}: JSON nested deeper than {max_depth} levels") from None
    except ValueError as problem:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise error(f"{origin}: not valid JSON ({problem})") from None
    if _depth(value) > max_depth:
        raise error(f"{origin}: JSON nested deeper than {max_depth} levels")
    return value


def _depth(value: object) -> int:
    """Nesting depth of parsed JSON, without recursion (a hostile value must not exhaust the stack)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        current, depth = pending.pop()
        children = current.values() if isinstance(current, dict) else current if isinstance(current, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest
