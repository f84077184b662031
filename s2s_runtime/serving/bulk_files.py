"""The files of a bulk job: reading its input as rows, and writing shards and the output.

Input is read as a stream of lines, one row per "\\n" (a "\\r" before it is dropped; no other character ends a row —
U+2028, form feeds and the like stay inside their row), each line at most MAX_LINE_BYTES: a longer line, a line that
is not UTF-8, a blank or malformed JSONL line (or one nested deeper than the JSON depth limit) becomes an error row
that keeps its place, and the job goes on. Parquet columns are read whole (pyarrow's own format). Shards are
written atomically (a shard is on disk whole, or not at all).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files import parse_json

INPUT_FORMATS = {".txt": "text", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
OUTPUT_FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}
MAX_LINE_BYTES = 1 << 20  # an input line longer than this (1 MiB) is an error row, never read whole


class BulkError(ValueError):
    """A bulk job's files or settings are wrong; the message names the file, line or setting."""


@dataclass(frozen=True)
class RowError:
    """An input row that cannot be a source (the reason names the file and line); it becomes an error row."""

    reason: str


def read_sources(path: str | Path, column: str) -> list[Any]:
    """The sources of an input file, by its extension (see the module docstring); a bad row is a RowError."""
    path = Path(path)
    kind = INPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise BulkError(f"{path}: unknown input format (use {', '.join(INPUT_FORMATS)})")
    if not path.is_file():
        raise BulkError(f"{path}: file not found")
    if kind == "parquet":
        table = pyarrow_module().parquet.read_table(path)
        if column not in table.column_names:
            raise BulkError(f"{path}: no column {column!r} (columns: {', '.join(table.column_names)})")
        return table.column(column).to_pylist()
    lines = _lines(path)
    if kind == "text":
        return list(lines)
    if kind == "tsv":
        header = next(lines, "")
        names = header.split("\t") if isinstance(header, str) else []
        if column not in names:
            raise BulkError(f"{path}: the header row has no column {column!r} (columns: {', '.join(names)})")
        position = names.index(column)
        return [_field(line, position) for line in lines]
    return [_record_field(line, column, f"{path}:{number}") for number, line in enumerate(lines, start=1)]


def _lines(path: Path) -> Iterator[str | RowError]:
    with open(path, "rb") as stream:
        number = 0
        while line := stream.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(line) > MAX_LINE_BYTES:  # skip the rest of the line without holding it
                size = len(line)
                while not line.endswith(b"\n") and (line := stream.readline(MAX_LINE_BYTES)):
                    size += len(line)
                yield RowError(f"{path}:{number}: a line of {size} bytes, more than {MAX_LINE_BYTES}")
                continue
            line = line.removesuffix(b"\n").removesuffix(b"\r")
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as error:
                yield RowError(f"{path}:{number}: not UTF-8 ({error.reason} at byte {error.start})")


def _field(line: str | RowError, position: int) -> Any:
    if isinstance(line, RowError):
        return line
    fields = line.split("\t")
    return fields[position] if position < len(fields) else None


def _record_field(line: str | RowError, column: str, where: str) -> Any:
    if isinstance(line, RowError):
        return line
    if not line.strip():
        return RowError(f"{where}: a blank line")
    try:
        record = parse_json(line, ValueError, where)
    except ValueError as problem:
        return RowError(str(problem))
    value = record.get(column) if isinstance(record, dict) else None
    if not _encodable(value):
        return RowError(f"{where}: {column!r} is not valid Unicode (a lone surrogate)")
    return value


def _encodable(value: Any) -> bool:
    texts = value if isinstance(value, list) else [value]
    try:
        for text in texts:
            if isinstance(text, str):
                text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write_shard(path: Path, records: list[dict]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(partial, path)  # a shard is on disk whole, or not at all


def shard_records(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8", newline="\n") as shard:
        for line in shard:
            yield json.loads(line)


def assemble(shards: list[Path], output: str, kind: str) -> int:
    """The output file from the shards, in order (written beside it, then moved into place); returns how many of
    its rows are error rows."""
    failed = 0

    def counted(record: dict) -> dict:
        nonlocal failed
        failed += record["error"] is not None
        return record

    records = (counted(record) for shard in shards for record in shard_records(shard))
    partial = Path(output + ".partial")
    if kind == "jsonl":
        with open(partial, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        pyarrow = pyarrow_module()
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(list(records)), partial)
    os.replace(partial, output)
    return failed


def pyarrow_module() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError("Parquet needs pyarrow: pip install 's2s-runtime[bulk]'") from None
    return pyarrow
