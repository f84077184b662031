"""Reading the project's JSON files with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path


def read_json(path: Path, error: type[ValueError]) -> object:
    """The parsed content of a JSON file; `error` (a ValueError subclass) naming the file if it is missing or invalid.

    Example:
        >>> read_json(Path("missing.json"), ValueError)
        Traceback (most recent call last):
        ...
        ValueError: missing.json: file not found
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"{path}: not valid JSON ({problem})") from None
