"""The `s2s` command: generate and info (runtime only), train and export (export extra)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import __version__
from .batching import BatchingOptions
from .bundle import Bundle, BundleError
from .config import GenerationOptions
from .engine.sessions import DeviceError, import_onnxruntime
from .limits import RequestLimits

COMMANDS_GROUP = "s2s.commands"
log = logging.getLogger("s2s_runtime.cli")

if TYPE_CHECKING:
    from .model import Seq2SeqModel


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s2s", description="Recurrent seq2seq models on onnxruntime.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level (device choice, ...)")
    parser.add_argument("--version", action="version", version=f"s2s-runtime {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="generate outputs for inputs (arguments or stdin lines)")
    generate.add_argument("bundle", help="bundle directory")
    generate.add_argument("inputs", nargs="*", metavar="TEXT", help="inputs; read one per line from stdin if none")
    generate.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per input: text, tokens, ids, score and the n-best hypotheses",
    )
    generate.add_argument("--target-prefix", help="a target prefix every output starts with")
    generate.add_argument("--stream", action="store_true", help="print tokens as they are generated (greedy/sample)")
    generate.add_argument(
        "--timing",
        action="store_true",
        help="print latency per sequence and per token to stderr (after one warm-up call)",
    )
    add_generation_flags(generate)
    add_batching_flags(generate)
    add_session_flags(generate)
    generate.set_defaults(handler=run_generate)

    score = commands.add_parser("score", help="forced-decoding log-probs of source<TAB>target pairs (stdin)")
    score.add_argument("bundle", help="bundle directory")
    score.add_argument(
        "--file",
        type=argparse.FileType("r", encoding="utf-8"),
        default=sys.stdin,
        help="TSV of source<TAB>target pairs (default: stdin)",
    )
    score.add_argument("--json", action="store_true", help="one JSON object per pair with per-token log-probs")
    score.add_argument("--batch-size", type=int, default=64)
    add_session_flags(score)
    score.set_defaults(handler=run_score)

    serve = commands.add_parser(
        "serve",
        help="HTTP service with dynamic batching (the serve extra)",
        description="POST /v1/generate, GET /healthz, /readyz, /metrics. Binds to loopback "
        "unless --host says otherwise.",
    )
    serve.add_argument("bundle", help="bundle directory or built-in name")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--max-batch-size", type=int, default=64)
    serve.add_argument("--max-wait-ms", type=float, default=2.0)
    serve.add_argument("--max-queue", type=int, default=1024)
    serve.add_argument(
        "--timeout-s", type=float, default=30.0, help="per-request deadline, decoding included (504 past it)"
    )
    serve.add_argument("--max-inputs", type=int, default=256, help="inputs per request")
    serve.add_argument(
        "--batch-workers",
        type=int,
        default=1,
        help="threads decoding batches at the same time (for spare cores; default 1)",
    )
    serve.add_argument("--max-streams", type=int, default=64, help="streaming requests open at once (503 past it)")
    serve.add_argument(
        "--shutdown-grace-s",
        type=float,
        default=10.0,
        help="on SIGTERM, how long in-flight requests have to finish before they are stopped",
    )
    serve.add_argument("--max-body-bytes", type=int, default=1 << 20)
    serve.add_argument("--max-header-bytes", type=int, default=16 * 1024)
    serve.add_argument(
        "--read-timeout-s",
        type=float,
        default=10.0,
        help="a request's headers, then its body, must arrive within this (408 otherwise)",
    )
    serve.add_argument("--keep-alive-s", type=float, default=5.0, help="idle keep-alive connections are closed after")
    serve.add_argument("--max-connections", type=int, default=512)
    serve.add_argument("--log-level", default="info")
    ray_group = serve.add_argument_group("scale-out on Ray (the ray extra)")
    ray_group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="serve with Ray Serve replicas: on a new local cluster, or the cluster at ADDRESS",
    )
    ray_group.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas (with --ray)")
    ray_group.add_argument(
        "--replica-cpus", type=float, default=1.0, help="CPUs per replica; its onnxruntime threads follow (with --ray)"
    )
    ray_group.add_argument(
        "--ray-ingress",
        choices=["haproxy", "serve-proxy"],
        default="haproxy",
        help="haproxy (default): replicas serve HTTP themselves behind HAProxy; serve-proxy: "
        "Ray Serve's Python proxy, about 10× slower here (see the docs)",
    )
    add_session_flags(serve)
    add_limit_flags(serve)
    serve.set_defaults(handler=run_serve)

    bulk = commands.add_parser(
        "bulk",
        help="decode a file of inputs into a file of outputs (resumable)",
        description="INPUT: .txt (one source per line), .tsv (header row), .jsonl or "
        ".parquet; OUTPUT: .jsonl or .parquet, one row per input in input order, "
        "bad inputs with an error column. Needs the bulk extra.",
    )
    bulk.add_argument("input", help="input file")
    bulk.add_argument("output", help="output file (.jsonl or .parquet)")
    bulk.add_argument("bundle", help="bundle directory or built-in name")
    bulk.add_argument("--column", default="source", help="the source column of TSV, JSONL and Parquet inputs")
    bulk.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="local processes, one onnxruntime thread each (default: the machine's cores)",
    )
    bulk.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run on Ray Data actors (--workers of them): a new local cluster, or ADDRESS",
    )
    bulk.add_argument("--resume", action="store_true", help="continue a killed job, skipping its finished shards")
    bulk.add_argument("--shard-size", type=int, default=1024, help="rows per output shard (the unit of --resume)")
    bulk.add_argument("--batch-size", type=int, default=64, help="inputs decoded together")
    bulk.add_argument("--quiet", action="store_true", help="no progress bar")
    add_generation_flags(bulk)
    bulk.set_defaults(handler=run_bulk)

    info = commands.add_parser("info", help="describe a bundle: config, parameters, files, providers")
    info.add_argument("bundle", help="bundle directory")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=run_info)

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


def add_generation_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per GenerationOptions field (--beam-size, --top-p, --no-repeat-ngram-size, ...)."""
    group = parser.add_argument_group("generation options (GenerationOptions fields)")
    for field in dataclasses.fields(GenerationOptions):
        flag = "--" + field.name.replace("_", "-")
        if field.name == "suppress_tokens":
            group.add_argument(flag, nargs="+", metavar="TOKEN", help="target tokens never generated")
        elif field.type == "bool":
            group.add_argument(flag, action="store_true", default=None)
        else:
            kind = float if "float" in field.type else int if "int" in field.type else str
            group.add_argument(flag, type=kind, metavar=kind.__name__.upper(), help=f"default {field.default}")


def add_batching_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per BatchingOptions field (how many inputs are decoded together)."""
    group = parser.add_argument_group("batching (BatchingOptions fields)")
    group.add_argument("--max-batch-size", type=int, default=64, metavar="INT", help="inputs per batch (default 64)")
    group.add_argument(
        "--max-batch-tokens", type=int, metavar="INT", help="padded source tokens per batch (default: no limit)"
    )


def batching_options(args: argparse.Namespace) -> BatchingOptions:
    return BatchingOptions(args.max_batch_size, args.max_batch_tokens)


def generation_options(args: argparse.Namespace) -> GenerationOptions:
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(GenerationOptions)
        if getattr(args, f.name, None) is not None
    }
    return GenerationOptions(**given)


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per RequestLimits field (--max-beam-size, --max-output-length, ...)."""
    group = parser.add_argument_group("request limits (RequestLimits fields: the most work one request may ask)")
    for field in dataclasses.fields(RequestLimits):
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            type=int,
            default=None,
            metavar="N",
            help=f"default {field.default if field.default is not None else 'from the bundle'}",
        )


def request_limits(args: argparse.Namespace) -> RequestLimits:
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(RequestLimits)
        if getattr(args, f.name, None) is not None
    }
    return RequestLimits(**given)


def add_session_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="on CUDA, replay the decoder step as captured CUDA graphs (no effect on the CPU)",
    )


def load_model(args: argparse.Namespace) -> Seq2SeqModel:
    """The model the session flags ask for."""
    from .model import load

    return load(
        args.bundle,
        device=args.device,
        intra_op_threads=args.threads,
        cuda_graph=args.cuda_graph,
        limits=request_limits(args),
    )


def run_generate(args: argparse.Namespace) -> int:
    options, batching = generation_options(args), batching_options(args)
    model = load_model(args)
    inputs: Sequence[str] = args.inputs or [line.rstrip("\n") for line in sys.stdin]
    if args.stream:
        for text in inputs:
            for token in model.generate_stream(text, target_prefix=args.target_prefix, options=options):
                print(token.token, end="" if model.bundle.target.vocab.tokenizer == "char" else " ", flush=True)
            print()
        return 0
    prefixes = None if args.target_prefix is None else [args.target_prefix] * len(inputs)
    if args.timing and inputs:  # onnxruntime initializes lazily on the first run: time the steady state
        model.generate(list(inputs[:1]), target_prefix=None if prefixes is None else prefixes[:1], options=options)
    started = time.perf_counter()
    results = model.generate(list(inputs), target_prefix=prefixes, options=options, batching=batching)
    elapsed = time.perf_counter() - started
    for index, (text, result) in enumerate(zip(inputs, results, strict=True)):
        if args.json:
            print(json.dumps({"input": text, **result.to_dict()}, ensure_ascii=False))
        elif len(result.hypotheses) == 1:
            print(result.text)
        else:
            for rank, hypothesis in enumerate(result.hypotheses):
                print(f"{index}\t{rank}\t{hypothesis.normalized_score:.4f}\t{hypothesis.text}")
    if args.timing:
        tokens = sum(len(h.ids) + h.finished for r in results for h in r.hypotheses)  # eos is a decoding step too
        print(
            f"{len(results)} sequences, {tokens} tokens in {elapsed * 1e3:.1f} ms: "
            f"{elapsed * 1e3 / max(len(results), 1):.2f} ms/sequence, {elapsed * 1e6 / max(tokens, 1):.0f} µs/token "
            f"({model.device}, {args.threads} thread(s), {options.strategy}, batch ≤ {batching.max_batch_size})",
            file=sys.stderr,
        )
    return 0


def run_score(args: argparse.Namespace) -> int:
    pairs = []
    for number, line in enumerate(args.file, start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise ValueError(f"{args.file.name}:{number}: no tab between source and target")
        source, target = line.rstrip("\n").split("\t", 1)
        pairs.append((source, target))
    model = load_model(args)
    scores = model.score([p[0] for p in pairs], [p[1] for p in pairs], max_batch_size=args.batch_size)
    for (source, target), score in zip(pairs, scores, strict=True):
        if args.json:
            print(
                json.dumps(
                    {
                        "source": source,
                        "target": target,
                        "score": round(score.score, 6),
                        "tokens": score.tokens,
                        "log_probs": [round(x, 6) for x in score.log_probs],
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print(f"{score.score:.6f}\t{source}\t{target}")
    return 0


def run_bulk(args: argparse.Namespace) -> int:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        raise ImportError("s2s bulk needs the bulk extra: pip install 's2s-runtime[bulk]'") from None
    from .serving.bulk import BulkJob, run

    options = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(GenerationOptions)
        if getattr(args, f.name, None) is not None
    }
    job = BulkJob(
        args.input,
        args.output,
        args.bundle,
        column=args.column,
        options=options or None,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
    )
    output = run(
        job,
        workers=args.workers,
        use_ray=args.ray is not None,
        ray_address=None if args.ray in (None, "local") else args.ray,
        resume=args.resume,
        progress=not args.quiet,
    )
    print(f"wrote {output}", file=sys.stderr)
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from .serving import BatcherConfig

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401

        from .serving.http import ServerConfig, serve
    except ImportError:
        raise ImportError("s2s serve needs the serve extra: pip install 's2s-runtime[serve]'") from None
    batcher_config = BatcherConfig(
        args.max_batch_size,
        args.max_wait_ms,
        args.max_queue,
        args.timeout_s,
        workers=args.batch_workers,
        max_streams=args.max_streams,
    )
    config = ServerConfig(
        max_body_bytes=args.max_body_bytes,
        max_inputs=args.max_inputs,
        request_timeout_s=args.timeout_s,
        max_header_bytes=args.max_header_bytes,
        read_timeout_s=args.read_timeout_s,
        keep_alive_s=args.keep_alive_s,
        max_connections=args.max_connections,
        shutdown_grace_s=args.shutdown_grace_s,
    )
    if args.ray is not None:
        from .serving.ray.serving import ReplicaConfig, run

        replica = ReplicaConfig(
            batcher=batcher_config, server=config, limits=request_limits(args), device=args.device, threads=None
        )
        run(
            args.bundle,
            address=None if args.ray == "local" else args.ray,
            replicas=args.replicas,
            num_cpus=args.replica_cpus,
            host=args.host,
            port=args.port,
            config=replica,
            haproxy=args.ray_ingress == "haproxy",
        )
        return 0
    model = load_model(args)
    serve(model, host=args.host, port=args.port, log_level=args.log_level, batcher_config=batcher_config, config=config)
    return 0


def run_info(args: argparse.Namespace) -> int:
    bundle = Bundle.open(args.bundle)
    manifest = bundle.manifest.to_json()
    info = {
        "bundle": str(bundle.root),
        "format_version": manifest["format_version"],
        "config": manifest["config"],
        "parameters": manifest["parameters"],
        "source": {
            "tokenizer": bundle.source.vocab.tokenizer,
            "vocab_size": len(bundle.source.vocab),
            "special_ids": bundle.source.special_ids,
        },
        "target": {
            "tokenizer": bundle.target.vocab.tokenizer,
            "vocab_size": len(bundle.target.vocab),
            "special_ids": bundle.target.special_ids,
        },
        "limits": manifest["limits"],
        "opset": manifest["opset"],
        "graph_variant": manifest["graph_variant"],
        "precision": manifest["precision"],
        "producer": manifest["producer"],
        "parity": {k: manifest["parity"].get(k) for k in ("passed", "max_abs_diff", "tolerance")},
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chatty = args.verbose or args.command == "train"  # training reports each epoch's dev metrics
    logging.basicConfig(level=logging.INFO if chatty else logging.WARNING, format="%(message)s")
    try:
        return args.handler(args)
    except (BundleError, DeviceError, ValueError, TypeError, ImportError, FileNotFoundError) as error:
        print(f"s2s {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
