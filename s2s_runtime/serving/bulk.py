"""`s2s bulk`: decode a file of inputs into a file of outputs, one row per input, in input order, resumably.

    s2s bulk words.txt phonemes.jsonl g2p-en --workers 2
    s2s bulk corpus.parquet out.parquet BUNDLE --column text --ray

Inputs: text (one source per line), TSV with a header row, JSONL (one object per line) or Parquet — the last three
read the column named by --column. Outputs: JSONL or Parquet, one row per input with its index, source, text,
tokens, score, finished and error (None, or the ValueError/TypeError the input caused: a bad row never stops the
job, and never goes missing).

The inputs are cut into shards of --shard-size rows. Each finished shard is written to OUTPUT.parts/ (atomically),
and the output file is assembled from the shards in order at the end; `--resume` after a crash or a kill skips the
shards already written, and since an input's output never depends on its batch, the result is the same file as an
uninterrupted run's. Shards are decoded by --workers local processes (one onnxruntime thread each), or with --ray by
Ray Data actors through s2s_runtime.serving.ray.Predictor.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..batching import BatchingOptions
from ..config import GenerationOptions
from ..model import load
from .records import decode_records, from_row

INPUT_FORMATS = {".txt": "text", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
OUTPUT_FORMATS = {".jsonl": "jsonl", ".parquet": "parquet"}
JOB_FILE = "job.json"


class BulkError(ValueError):
    """A bulk job's files or settings are wrong; the message names the file, line or setting."""


@dataclass(frozen=True)
class BulkJob:
    """What a bulk job decodes, and how; saved in OUTPUT.parts/job.json so that --resume continues the same job.

    Examples:
        >>> BulkJob("in.txt", "out.jsonl", "g2p-en").shard_size
        1024
    """

    input: str
    output: str
    bundle: str
    column: str = "source"
    options: dict | None = None  # GenerationOptions fields
    shard_size: int = 1024
    max_batch_size: int = 64

    @property
    def parts(self) -> Path:
        return Path(self.output + ".parts")

    def generation_options(self) -> GenerationOptions:
        return GenerationOptions.from_kwargs(dict(self.options or {}))

    @property
    def batching(self) -> BatchingOptions:
        return BatchingOptions(max_batch_size=self.max_batch_size)


def read_sources(path: str | Path, column: str) -> list[Any]:
    """The sources of an input file, by its extension (see the module docstring)."""
    path = Path(path)
    kind = INPUT_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise BulkError(f"{path}: unknown input format (use {', '.join(INPUT_FORMATS)})")
    if not path.is_file():
        raise BulkError(f"{path}: file not found")
    if kind == "parquet":
        table = _pyarrow().parquet.read_table(path)
        if column not in table.column_names:
            raise BulkError(f"{path}: no column {column!r} (columns: {', '.join(table.column_names)})")
        return table.column(column).to_pylist()
    lines = path.read_text(encoding="utf-8").splitlines()
    if kind == "text":
        return lines
    if kind == "tsv":
        header = lines[0].split("\t") if lines else []
        if column not in header:
            raise BulkError(f"{path}: the header row has no column {column!r} (columns: {', '.join(header)})")
        position = header.index(column)
        rows = [line.split("\t") for line in lines[1:]]
        return [row[position] if position < len(row) else None for row in rows]
    sources = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError as problem:
            raise BulkError(f"{path}:{number}: not valid JSON ({problem})") from None
        sources.append(record.get(column) if isinstance(record, dict) else None)
    return sources


# ---- the job ---------------------------------------------------------------------------------------------------


def run(
    job: BulkJob,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    use_ray: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> Path:
    """Run (or with `resume`, continue) a bulk job; returns the output path.

    Examples:
        >>> run(BulkJob("words.txt", "out.jsonl", "g2p-en"), workers=2)  # doctest: +SKIP
        PosixPath('out.jsonl')
    """
    output_kind = OUTPUT_FORMATS.get(Path(job.output).suffix.lower())
    if output_kind is None:
        raise BulkError(f"{job.output}: unknown output format (use {', '.join(OUTPUT_FORMATS)})")
    if output_kind == "parquet":
        _pyarrow()
    job.generation_options()  # invalid options fail before anything is read or written
    sources = read_sources(job.input, job.column)
    shards = [(start // job.shard_size, start) for start in range(0, len(sources), job.shard_size)]
    _prepare_parts(job, resume)
    pending = [(shard, start) for shard, start in shards if not _shard_path(job, shard).exists()]
    bar = _progress(
        len(sources), len(sources) - sum(len(sources[s : s + job.shard_size]) for _, s in pending), progress
    )
    try:
        if use_ray:
            _run_on_ray(job, sources, pending, ray_address, workers, bar)
        else:
            _run_local(job, sources, pending, workers, bar)
    finally:
        bar.close()
    _assemble(job, [shard for shard, _ in shards], output_kind)
    return Path(job.output)


def _progress(total: int, done: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, initial=done, unit="rows", desc="s2s bulk", file=sys.stderr, disable=not enabled or None
    )  # None: only on a terminal


def _prepare_parts(job: BulkJob, resume: bool) -> None:
    parts, saved = job.parts, job.parts / JOB_FILE
    if resume and saved.is_file():
        previous = json.loads(saved.read_text())
        if previous != asdict(job):
            changed = sorted(k for k in previous if previous[k] != asdict(job).get(k))
            raise BulkError(
                f"{saved}: --resume of another job (changed: {', '.join(changed)}); remove {parts} to start over"
            )
        return
    if parts.exists() and not resume:
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(asdict(job), indent=1) + "\n")


def _shard_path(job: BulkJob, shard: int) -> Path:
    return job.parts / f"shard-{shard:06d}.jsonl"


def _write_shard(job: BulkJob, shard: int, records: list[dict]) -> None:
    path = _shard_path(job, shard)
    partial = path.with_suffix(".partial")
    partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    os.replace(partial, path)  # a shard is on disk whole, or not at all


def _assemble(job: BulkJob, shards: list[int], kind: str) -> None:
    records: Iterator[dict] = (
        json.loads(line)
        for shard in shards
        for line in _shard_path(job, shard).read_text(encoding="utf-8").splitlines()
    )
    partial = Path(job.output + ".partial")
    if kind == "jsonl":
        with open(partial, "w", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        pyarrow = _pyarrow()
        pyarrow.parquet.write_table(pyarrow.Table.from_pylist(list(records)), partial)
    os.replace(partial, job.output)
    shutil.rmtree(job.parts)


# ---- local workers ---------------------------------------------------------------------------------------------

_worker: dict = {}


def _start_worker(bundle: str, options: GenerationOptions) -> None:
    model = load(bundle, device="cpu", intra_op_threads=1)
    _worker.update(model=model, plan=model.plan(options))


def _decode_shard(job: BulkJob, shard: int, start: int, sources: list[Any]) -> int:
    records = decode_records(_worker["model"], _worker["plan"], sources, first_index=start, batching=job.batching)
    _write_shard(job, shard, records)
    return len(records)


def _run_local(job: BulkJob, sources: list[Any], pending: list[tuple[int, int]], workers: int, bar: Any) -> None:
    options = job.generation_options()
    tasks = [(job, shard, start, sources[start : start + job.shard_size]) for shard, start in pending]
    if workers <= 1:
        _start_worker(job.bundle, options)
        for task in tasks:
            bar.update(_decode_shard(*task))
        return
    # spawn, not fork: onnxruntime's thread pools do not survive a fork
    with multiprocessing.get_context("spawn").Pool(workers, _start_worker, (job.bundle, options)) as pool:
        for rows in pool.imap_unordered(_starred, tasks):
            bar.update(rows)


def _starred(task: tuple) -> int:
    return _decode_shard(*task)


# ---- Ray Data ----------------------------------------------------------------------------------------------------


def _run_on_ray(
    job: BulkJob, sources: list[Any], pending: list[tuple[int, int]], address: str | None, actors: int, bar: Any
) -> None:
    from .ray._require import import_ray
    from .ray.predictor import Predictor

    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address or "local", include_dashboard=False, logging_level="ERROR")
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        per_actor = max(min(1.0, (cpus - 1) / max(actors, 1)), 0.25)  # leave a CPU for Ray Data's read tasks
        rows = [
            {"index": start + offset, "shard": shard, "source": source}
            for shard, start in pending
            for offset, source in enumerate(sources[start : start + job.shard_size])
        ]
        expected = {shard: len(sources[start : start + job.shard_size]) for shard, start in pending}
        collected: dict[int, list[dict]] = {shard: [] for shard in expected}
        dataset = ray.data.from_items(rows).map_batches(
            Predictor,
            fn_constructor_kwargs={"bundle": job.bundle, "column": "source", "options": job.generation_options()},
            concurrency=max(actors, 1),
            num_cpus=per_actor,
            batch_size=job.max_batch_size,
        )
        for row in dataset.iter_rows():
            shard = int(row["shard"])
            collected[shard].append(row)
            if len(collected[shard]) == expected[shard]:  # a shard is complete: write it in input order
                records = [from_row(r) for r in sorted(collected.pop(shard), key=lambda r: int(r["index"]))]
                _write_shard(job, shard, records)
                bar.update(len(records))
    finally:
        if started_here:
            ray.shutdown()


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ImportError("Parquet needs pyarrow: pip install 's2s-runtime[bulk]'") from None
    return pyarrow
