"""Timing harness: every contender over the same inputs, per batch size and strategy, warm-up excluded, repeated
runs with medians, plus the machine's single-thread float32 matmul rate measured in the same run."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from s2s_runtime import roles

from .baselines import Contender, cpu_session


@dataclass
class Measurement:
    contender: str
    strategy: str
    batch_size: int
    sequences: int  # per repeat
    tokens: int  # per repeat, eos included
    p50_ms: float  # latency of one call (= of each sequence in it)
    p90_ms: float
    p99_ms: float
    us_per_token: float  # median repeat time / tokens
    sequences_per_s: float  # median over repeats
    tokens_per_s: float

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Everything alive now (torch, the graphs, the inputs: it lives to the end) moved out of the collector's reach
    while the contenders run: a full collection scanning it paused whichever contender was running for 30–250 ms
    and landed in its latency percentiles."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def measure(
    contenders: Sequence[Contender],
    sources: Sequence[str],
    strategy: str,
    batch_size: int,
    *,
    repeats: int,
    min_sequences: int,
    progress: tqdm | None = None,
    each_round: Callable[[], object] | None = None,
) -> list[Measurement]:
    """Every contender over the same batches, `repeats` times. The contenders take turns repeat by repeat (after
    one warm-up call each), so a slow spell of a shared machine falls on all of them rather than on one, and
    `each_round`, if given, is called once per round among them (the floor probe). One Measurement per contender:
    the median repeat, and call latency percentiles over every call."""
    batches = [list(sources[i : i + batch_size]) for i in range(0, max(min_sequences, batch_size), batch_size)]
    batches = [b if len(b) == batch_size else (b + list(sources))[:batch_size] for b in batches]
    for contender in contenders:
        contender.run(batches[0], strategy)  # warm-up: session initialization, allocator growth
    call_ms: list[list[float]] = [[] for _ in contenders]
    repeat_s: list[list[float]] = [[] for _ in contenders]
    tokens = [0] * len(contenders)
    for _ in range(repeats):
        if each_round is not None:
            each_round()
        for index, contender in enumerate(contenders):
            started, tokens[index] = time.perf_counter(), 0
            for batch in batches:
                call_start = time.perf_counter()
                tokens[index] += contender.run(batch, strategy)
                call_ms[index].append((time.perf_counter() - call_start) * 1e3)
            repeat_s[index].append(time.perf_counter() - started)
            if progress is not None:
                progress.update(1)
    measurements = []
    sequences = len(batches) * batch_size
    for index, contender in enumerate(contenders):
        median = statistics.median(repeat_s[index])
        p50, p90, p99 = np.percentile(call_ms[index], [50, 90, 99])
        measurements.append(
            Measurement(
                contender.name,
                strategy,
                batch_size,
                sequences,
                tokens[index],
                float(p50),
                float(p90),
                float(p99),
                median * 1e6 / max(tokens[index], 1),
                sequences / median,
                tokens[index] / median,
            )
        )
    return measurements


def matmul_gflops(threads: int = 1, size: int = 512, repeats: int = 20) -> float:
    """float32 GEMM rate of onnxruntime's own kernels (what the graphs use) on `threads` threads, in GFLOP/s."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "gemm",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    session.run(None, {"a": a, "b": a})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, {"a": a, "b": a})
        times.append(time.perf_counter() - started)
    return 2 * size**3 / statistics.median(times) / 1e9


def encoder_flops_per_source_token(config: dict) -> float:
    """Multiply-adds × 2 of the optimized encoder per source position and row: the recurrence of every layer and
    direction, the input projections of layers above the first (the first is a table lookup) and the attention keys.
    The plain encoder also multiplies the embeddings by W_ih, which is not counted: the count is the work the
    optimized graphs need, the same for every contender."""
    hidden, layers = config["hidden_size"], config["num_layers"]
    units = config.get("encoder_hidden_size") or hidden  # per encoder direction
    gates = 3 if config["cell"] == "gru" else 4
    directions = 2 if config["bidirectional"] else 1
    enc_out = units * directions
    flops = directions * (layers * 2 * gates * units * units + (layers - 1) * 2 * gates * units * enc_out)
    if config["attention"] in ("general", "additive"):
        flops += 2 * enc_out * hidden  # keys, projected once per source position
    return flops


def decoder_flops_per_token(config: dict, source_length: float) -> float:
    """Multiply-adds × 2 of one decoder step for one row, as the optimized graph executes it (the embedding part of
    the first layer's input projection is a table lookup, so it costs nothing)."""
    hidden, layers = config["hidden_size"], config["num_layers"]
    gates = 3 if config["cell"] == "gru" else 4
    enc_out = (config.get("encoder_hidden_size") or hidden) * (2 if config["bidirectional"] else 1)
    before = config["attention"] != "none" and config.get("attention_placement", "after") == "before"
    first_input = (
        (enc_out if config["conditioning"] in ("concat", "both") else 0)
        + (hidden if config["input_feeding"] else 0)
        + (enc_out if before else 0)  # the attention context enters the step's input
    )
    flops = 2 * gates * hidden * (first_input + hidden)  # layer 0: non-embedding input + recurrent
    flops += (layers - 1) * 2 * gates * hidden * (hidden + hidden)
    if config["attention"] != "none":
        key = enc_out if config["attention"] == "dot" else hidden
        flops += 2 * source_length * (key + enc_out)  # scores and context
        flops += 0 if before else 2 * (enc_out + hidden) * hidden  # combine
        if config["attention"] == "additive":
            flops += 2 * hidden * hidden + 2 * source_length * hidden
    return flops + 2 * hidden * config["target_vocab_size"]  # output projection


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls of `run`, after one call to warm up."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def graphs_alone(model: Any, sources: Sequence[str], batch_size: int, matmul: float, repeats: int = 20) -> dict:
    """The optimized graphs without the search around them, at one batch size: the encoder as the runtime runs it
    (in its length groups) and one decoder step over the whole batch, medians of `repeats` runs, with their FLOP/s
    counted as in the end-to-end figures (real positions only). `model` is a loaded s2s_runtime model."""

    config = model.bundle.manifest.config
    from s2s_runtime import GenerationOptions

    plan = model.plan(GenerationOptions())
    batch = [model.prepare(source, plan, index=index).ids for index, source in enumerate(sources[:batch_size])]

    encoder_s = median_seconds(lambda: model.engine.encoder.encode(batch), repeats)
    states, statics = model.engine.encoder.encode(batch)
    previous = np.full(len(batch), model.bundle.start_id, dtype=np.int64)
    with model.engine.runners.runner(states, statics, False) as runner:
        step_s = median_seconds(lambda: runner.step(previous), repeats)
    positions = sum(len(ids) for ids in batch)
    encoder_flops = positions * encoder_flops_per_source_token(config)
    step_flops = len(batch) * decoder_flops_per_token(config, positions / len(batch))
    return {
        "batch_size": len(batch),
        "encoder_ms": encoder_s * 1e3,
        "encoder_gflops": encoder_flops / encoder_s / 1e9,
        "encoder_matmul_fraction": encoder_flops / encoder_s / 1e9 / matmul,
        "step_us": step_s * 1e6,
        "step_gflops": step_flops / step_s / 1e9,
        "step_matmul_fraction": step_flops / step_s / 1e9 / matmul,
        "encoder_flops": encoder_flops,
        "step_flops": step_flops,
    }


def encoder_costs(bundle: Any, threads: int, batch_sizes: Sequence[int], repeats: int = 200) -> dict:
    """An encoder graph's cost by batch size: a call over one source position, and each position more (from
    equal-length batches of 1 and 17 positions, median times). Said for the Scan and the ONNX GRU/LSTM op
    forms of one model, it shows at which batch sizes each is the faster."""
    from s2s_runtime.bundle import Bundle

    opened = Bundle.open(bundle)
    encoder = opened.graphs["encoder"]
    session = cpu_session(str(encoder.path), threads)
    symbol = next(i for i in range(len(opened.source.vocab.tokens)) if i not in opened.source.special_ids.values())
    costs = {}
    for batch in batch_sizes:
        seconds = {}
        for length in (1, 17):
            feeds = {
                encoder.inputs[roles.SOURCE_IDS].name: np.full((batch, length), symbol, dtype=np.int64),
                encoder.inputs[roles.SOURCE_LENGTHS].name: np.full(batch, length, dtype=np.int64),
            }
            seconds[length] = median_seconds(lambda f=feeds: session.run(None, f), max(repeats // batch, 5))
        per_position = (seconds[17] - seconds[1]) / 16
        costs[str(batch)] = {"one_position_us": seconds[1] * 1e6, "per_position_us": per_position * 1e6}
    return costs


class TimedSession:
    """An onnxruntime session that adds up the wall time of its inference calls; everything else passes through."""

    def __init__(self, session: Any):
        self.session, self.seconds = session, 0.0

    def run(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.session.run(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    def run_with_iobinding(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.session.run_with_iobinding(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def batch1_breakdown(bundle: Any, sources: Sequence[str], threads: int, repeats: int, greedy_graph: bool) -> dict:
    """Where the runtime's time goes at batch 1: `generate` called once per input over `sources` (a model of its
    own, loaded from `bundle`, whose sessions are timed), medians over `repeats` passes; `greedy_graph` False: the
    step loop (greedy_graph_max_batch=0). What the sessions do not account for is the runtime's own Python
    (tokenizing, limits, the search, results). µs per output token (eos included) and per sequence, by part:
    encoder, step, greedy_graph (the one-call decode), python."""
    import s2s_runtime

    model = s2s_runtime.load(
        bundle, device="cpu", intra_op_threads=threads, **({} if greedy_graph else {"greedy_graph_max_batch": 0})
    )
    timed: dict[str, TimedSession] = {}
    model.engine.instrument(lambda kind, session: timed.setdefault(kind, TimedSession(session)))
    sessions = {"encoder": timed["encoder"], "step": timed["decoder_step"]}
    if "greedy" in timed:
        sessions["greedy_graph"] = timed["greedy"]
    tokens = sum(len(r.ids) + r.finished for source in sources for r in model.generate([source]))  # and warm up
    passes = []
    for _ in range(repeats):
        for session in sessions.values():
            session.seconds = 0.0
        started = time.perf_counter()
        for source in sources:
            model.generate([source])
        passes.append((time.perf_counter() - started, *(session.seconds for session in sessions.values())))
    total, *spent = sorted(passes)[len(passes) // 2]  # the median pass, its parts as measured in it
    parts = {"total": total, "encoder": 0.0, "step": 0.0, "greedy_graph": 0.0}
    parts.update(zip(sessions, spent, strict=True))
    parts["python"] = total - parts["encoder"] - parts["step"] - parts["greedy_graph"]
    return {
        "sequences": len(sources),
        "tokens": tokens,
        "us_per_token": {name: seconds * 1e6 / tokens for name, seconds in parts.items()},
        "us_per_sequence": {name: seconds * 1e6 / len(sources) for name, seconds in parts.items()},
    }


# The ops whose initializers are dense weights: fp32 products and the int8 ones of every quantization the exports use
# (MatMulIntegerToFloat: the statically calibrated int8 matmuls of `--quantize int8`).
DENSE = (
    "MatMul",
    "Gemm",
    "GRU",
    "LSTM",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul",
)


def _dense_weight_bytes(graph: Any, consumers: tuple[str, ...] = DENSE, outer: dict | None = None) -> int:
    """Bytes of the initializers that `consumers` nodes read in `graph` and its subgraphs (Scan bodies, which may
    read their weights from the outer graph): the dense weights a row streams through once per call. Tables read by
    Gather (one row per token) are not counted."""
    from onnx import helper

    initializers = {**(outer or {}), **{i.name: i for i in graph.initializer}}
    total = 0
    for node in graph.node:
        if node.op_type in consumers:
            for name in node.input:
                if name in initializers:
                    tensor = initializers[name]
                    itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
                    total += itemsize * int(np.prod(tensor.dims))
        for attribute in node.attribute:
            if attribute.g.node:  # a subgraph: the Scan's cell
                total += _dense_weight_bytes(attribute.g, consumers, initializers)
    return total


class FloorProbe:
    """What no runtime on this machine can beat at batch 1: one session.run of an empty graph (the cost of calling
    onnxruntime at all), the bytes of dense weights of the decoder step (read once per token) and of the encoder
    (read once per source position), and the bandwidth measured for a working set of the step's size (a MatMul of a
    (1, K) row by a (K, N) matrix of those bytes). The machine is shared, so `measure` is called in every round of
    the batch-1 rows, in the same conditions as they; `floor_per_token` turns a measurement into µs/token for an
    input mix. `model`: a loaded s2s_runtime model (fp32)."""

    def __init__(self, model: Any, threads: int = 1, repeats: int = 2000):
        import onnx
        from onnx import TensorProto, helper

        self.repeats = repeats
        self.step_bytes = _dense_weight_bytes(onnx.load(str(model.bundle.graphs["decoder_step"].path)).graph)
        self.encoder_bytes = _dense_weight_bytes(onnx.load(str(model.bundle.graphs["encoder"].path)).graph)

        def graph(nodes: list, inputs: list, initializers: list) -> bytes:
            made = helper.make_graph(
                nodes,
                "floor",
                inputs,
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                initializer=initializers,
            )
            model = helper.make_model(made, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
            return model.SerializeToString()

        k = 256
        self.x = np.zeros((1, k), np.float32)
        self.empty = cpu_session(
            graph(
                [helper.make_node("Identity", ["x"], ["y"])],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                [],
            ),
            threads,
        )
        self.weight = np.random.default_rng(0).standard_normal((k, max(self.step_bytes // (4 * k), 1)), np.float32)
        self.streaming = cpu_session(
            graph(
                [helper.make_node("MatMul", ["x", "w"], ["y"])],
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                [onnx.numpy_helper.from_array(self.weight, "w")],
            ),
            threads,
        )

    def measure(self) -> dict:
        empty_s = median_seconds(lambda: self.empty.run(None, {"x": self.x}), self.repeats)
        matvec_s = median_seconds(lambda: self.streaming.run(None, {"x": self.x}), self.repeats)
        bandwidth = self.weight.nbytes / max(matvec_s - empty_s, 1e-9)  # bytes/s, the call's own cost taken out
        return {
            "empty_run_us": empty_s * 1e6,
            "bandwidth_gb_per_s": bandwidth / 1e9,
            "step_weight_bytes": self.step_bytes,
            "encoder_weight_bytes_per_position": self.encoder_bytes,
        }


def median_floor(timings: list[dict]) -> dict:
    """The median of FloorProbe measurements, field by field (the bytes are the same in each)."""
    return {key: statistics.median(t[key] for t in timings) for key in timings[0]}


def floor_per_token(machine_floor: dict, source_tokens: float, target_tokens: float) -> dict:
    """The floor in µs per output token for sequences of `source_tokens` source positions (eos included) and
    `target_tokens` output tokens (eos included): an empty call per token and one more per sequence (the encoder's),
    plus the step's weight bytes per token and the encoder's per source position, at the measured bandwidth. The
    physical floor is the weight reads alone (`physical_us_per_token`), the floor of a runtime with no call cost."""
    target_tokens = max(target_tokens, 1e-9)
    bandwidth = machine_floor["bandwidth_gb_per_s"] * 1e3  # bytes per µs
    parts = {
        "calls_us": machine_floor["empty_run_us"] * (1 + 1 / target_tokens),
        "step_weights_us": machine_floor["step_weight_bytes"] / bandwidth,
        "encoder_weights_us": machine_floor["encoder_weight_bytes_per_position"]
        * source_tokens
        / target_tokens
        / bandwidth,
    }
    return {
        "source_tokens_per_sequence": source_tokens,
        "target_tokens_per_sequence": target_tokens,
        **parts,
        "us_per_token": sum(parts.values()),
        # The products alone (no call overhead): what a runtime with no per-call cost at all would still pay.
        "physical_us_per_token": parts["step_weights_us"] + parts["encoder_weights_us"],
    }
