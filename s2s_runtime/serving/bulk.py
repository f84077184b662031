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
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..batching import BatchingOptions
from ..config import GenerationOptions
from ..model import load
from .bulk_files import (
    OUTPUT_FORMATS,
    BulkError,
    RowError,
    assemble,
    pyarrow_module,
    read_sources,
    write_shard,
)
from .records import decode_records, from_row, record

JOB_FILE = "job.json"


@dataclass(frozen=True)
class BulkReport:
    """What a bulk job wrote: the output file, its rows (one per input row), how many of them are error rows, and
    the seconds it took (this run: a resumed job counts only its own time)."""

    output: Path
    rows: int
    failed: int
    seconds: float


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

    def __post_init__(self) -> None:
        for name in ("shard_size", "max_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise BulkError(f"{name}: must be an int ≥ 1, got {value!r}")

    @property
    def parts(self) -> Path:
        return Path(self.output + ".parts")

    def generation_options(self) -> GenerationOptions:
        return GenerationOptions.from_kwargs(dict(self.options or {}))

    @property
    def batching(self) -> BatchingOptions:
        return BatchingOptions(max_batch_size=self.max_batch_size)


# ---- the job ---------------------------------------------------------------------------------------------------


def run(
    job: BulkJob,
    *,
    workers: int = 1,
    ray_address: str | None = None,
    use_ray: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> BulkReport:
    """Run (or with `resume`, continue) a bulk job; returns what it wrote.

    Examples:
        >>> run(BulkJob("words.txt", "out.jsonl", "g2p-en"), workers=2)  # doctest: +SKIP
        BulkReport(output=PosixPath('out.jsonl'), rows=2, failed=0, seconds=0.9)
    """
    started = time.perf_counter()
    output_kind = OUTPUT_FORMATS.get(Path(job.output).suffix.lower())
    if output_kind is None:
        raise BulkError(f"{job.output}: unknown output format (use {', '.join(OUTPUT_FORMATS)})")
    if output_kind == "parquet":
        pyarrow_module()
    if Path(job.input).resolve() == Path(job.output).resolve():
        raise BulkError(f"{job.output}: the output would overwrite the input")
    options = job.generation_options()  # invalid options fail before anything is read or written
    checked = load(job.bundle, device="cpu", intra_op_threads=1)  # what the model refuses fails before any worker
    plan = checked.plan(options)
    sources = read_sources(job.input, job.column)
    if output_kind == "parquet" and {str, list} <= {type(s) for s in sources}:
        raise BulkError(f"{job.input}: texts and token lists in one column cannot be written to Parquet")
    shards = [(start // job.shard_size, start) for start in range(0, len(sources), job.shard_size)]
    try:
        _prepare_parts(job, resume)
        pending = [(shard, start) for shard, start in shards if not _shard_path(job, shard).exists()]
        bar = _progress(
            len(sources), len(sources) - sum(len(sources[s : s + job.shard_size]) for _, s in pending), progress
        )
        try:
            if use_ray:
                _run_on_ray(job, sources, pending, ray_address, workers, bar)
            else:
                _run_local(job, sources, pending, workers, bar, (checked, plan))
        finally:
            bar.close()
        failed = assemble([_shard_path(job, shard) for shard, _ in shards], job.output, output_kind)
        shutil.rmtree(job.parts)
    except OSError as error:  # a read-only or full disk, an output path under a file: one line, exit 2
        raise BulkError(f"{error.filename or job.output}: {error.strerror or error}") from None
    return BulkReport(Path(job.output), len(sources), failed, time.perf_counter() - started)


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
    write_shard(_shard_path(job, shard), records)


# ---- local workers ---------------------------------------------------------------------------------------------

_worker: dict = {}


def _start_worker(bundle: str, options: GenerationOptions) -> None:
    """A worker process's model. Failing here would make multiprocessing start replacements forever: the error is
    kept instead, and the worker's first shard raises it, which ends the job."""
    try:
        model = load(bundle, device="cpu", intra_op_threads=1)
        _worker.update(model=model, plan=model.plan(options), error=None)
    except Exception as error:  # noqa: BLE001 (whatever it is, the job ends with it)
        _worker.update(error=f"a worker could not start: {type(error).__name__}: {error}")


def _decode_shard(job: BulkJob, shard: int, start: int, sources: list[Any]) -> int:
    if _worker.get("error"):
        raise BulkError(_worker["error"])
    records = decode_records(_worker["model"], _worker["plan"], sources, first_index=start, batching=job.batching)
    _write_shard(job, shard, records)
    return len(records)


def _run_local(
    job: BulkJob, sources: list[Any], pending: list[tuple[int, int]], workers: int, bar: Any, checked: tuple
) -> None:
    """The shards on this process (one worker: with the model `run` already loaded and planned) or on a pool."""
    options = job.generation_options()
    tasks = [(job, shard, start, sources[start : start + job.shard_size]) for shard, start in pending]
    if workers <= 1:
        model, plan = checked
        _worker.update(model=model, plan=plan, error=None)
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
            if not isinstance(source, RowError)
        ]
        expected = {shard: len(sources[start : start + job.shard_size]) for shard, start in pending}
        collected: dict[int, list[dict]] = {shard: [] for shard in expected}
        for shard, start in pending:  # rows that were never sources: their error records are made here
            for offset, source in enumerate(sources[start : start + job.shard_size]):
                if isinstance(source, RowError):
                    collected[shard].append(record(start + offset, None, None, source.reason, False))
        for shard in [s for s in expected if len(collected[s]) == expected[s]]:
            _write_shard(job, shard, sorted(collected.pop(shard), key=lambda r: r["index"]))
            bar.update(expected[shard])
        dataset = ray.data.from_items(rows).map_batches(
            Predictor,
            fn_constructor_kwargs={"bundle": job.bundle, "column": "source", "options": job.generation_options()},
            concurrency=max(actors, 1),
            num_cpus=per_actor,
            batch_size=job.max_batch_size,
        )
        for row in dataset.iter_rows():
            shard = int(row["shard"])
            collected[shard].append(from_row(row))
            if len(collected[shard]) == expected[shard]:  # a shard is complete: write it in input order
                records = sorted(collected.pop(shard), key=lambda r: r["index"])
                _write_shard(job, shard, records)
                bar.update(len(records))
    finally:
        if started_here:
            ray.shutdown()
