"""`s2s bench-serve`: load test of `s2s serve` on loopback — batched versus max_batch_size=1 — and a bounded soak.

The server runs in its own process (as in production); clients are asyncio tasks in this one. Each response is
checked against the answer computed serially beforehand (or, for a deliberately bad request, against its expected
status), so lost or mismatched responses are counted, not assumed. `--soak SECONDS` drives one batched server with
mixed traffic — greedy, beam, seeded sampling, streaming and bad requests — for that long and records throughput,
latency percentiles and the server's resident memory at every interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def add_load_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench-serve", help="load test of s2s serve: batched vs max_batch_size=1")
    parser.add_argument("bundle", help="bundle directory or built-in name")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients at maximum load")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument(
        "--loads",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 0.75],
        help="offered loads as fractions of the batched maximum throughput",
    )
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-workers", type=int, default=1, help="the servers' --batch-workers (both servers)")
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="instead: drive one batched server with mixed traffic for SECONDS (bench-soak.json/png)",
    )
    parser.add_argument("--soak-interval", type=float, default=5.0, help="seconds per soak sample")
    parser.add_argument(
        "--ray",
        action="store_true",
        help="instead: s2s serve --ray with 1 and 2 replicas against s2s serve with as many batch "
        "workers (bench-serve-ray.json/png)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.set_defaults(handler=run_load)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Probe:
    """One request of a load test and what its answer must be: the status, and for a 200 the texts of its
    results (or, streamed, the joined tokens)."""

    body: dict
    status: int = 200
    texts: tuple[str, ...] | None = None
    join: str = ""  # how streamed tokens join into the text (the target tokenizer's rule)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


def word_probes(words: list[str], expected: dict[str, str]) -> list[Probe]:
    """Greedy single-word requests, each with its serial answer."""
    return [Probe({"inputs": word}, texts=(expected[word],)) for word in words]


def mixed_probes(model, words: list[str]) -> list[Probe]:
    """Soak traffic: greedy, beam, seeded sampling and streaming requests with their serial answers, and bad
    requests that must get 400 (one in twenty)."""
    join = "" if model.bundle.target.vocab.tokenizer == "char" else " "  # how the target's tokens join
    probes = []
    kinds = [({}, 12), ({"strategy": "beam", "beam_size": 4}, 3), ({"strategy": "sample", "seed": 7, "top_k": 5}, 2)]
    for options, weight in kinds:
        texts = [r.text for r in model.generate(words, **options)]
        probes += [
            Probe({"inputs": w, "options": options}, texts=(t,)) for w, t in zip(words, texts, strict=True)
        ] * weight
    greedy = {w: r.text for w, r in zip(words, model.generate(words), strict=True)}
    probes += [Probe({"inputs": w, "stream": True}, texts=(greedy[w],), join=join) for w in words] * 2
    probes += [
        Probe({"inputs": w, "options": {"strategy": "beam", "beam_size": 10**6}}, status=400)
        for w in words[: len(words) // 2]
    ]
    probes += [Probe({"inputs": w, "options": {"length_penalty": 1e308}}, status=400) for w in words[: len(words) // 2]]
    return probes


class ServerProcess:
    """`s2s serve` in a subprocess on a free loopback port, stopped on exit."""

    def __init__(self, bundle: str, max_batch_size: int, batch_workers: int = 1, ray_replicas: int = 0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable,
            "-m",
            "s2s_runtime.cli",
            "serve",
            bundle,
            "--port",
            str(self.port),
            "--max-batch-size",
            str(max_batch_size),
            "--batch-workers",
            str(batch_workers),
            "--device",
            "cpu",
            "--log-level",
            "warning",
        ]
        if ray_replicas:
            self.command += ["--ray", "--replicas", str(ray_replicas)]
        self.startup_s = 180 if ray_replicas else 60  # a Ray cluster and its Serve replicas start slowly

    def __enter__(self) -> ServerProcess:
        import httpx

        started = time.monotonic()
        self.process = subprocess.Popen(self.command)
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    self.ready_s = time.monotonic() - started
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.process.kill()
        raise RuntimeError(f"server did not become ready: {' '.join(self.command)}")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def drive(url: str, probes: list[Probe], *, clients: int, duration: float, rate: float | None) -> dict:
    """Closed loop (`rate` None: each client sends its next request when the last one is answered) or open loop
    (requests start at `rate` per second), each request a random probe. Returns throughput, latency percentiles
    and the count of failed (no answer, or an unexpected status) and mismatched responses. aiohttp's C parser keeps
    the client from being the bottleneck."""
    import aiohttp

    latencies, failures, mismatches = [], 0, 0
    rng = random.Random(0)
    stop = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(probe: Probe) -> None:
            nonlocal failures, mismatches
            started = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/generate", json=probe.body) as response:
                    status, text = response.status, await response.text()
            except (aiohttp.ClientError, asyncio.TimeoutError):
                failures += 1
                return
            latencies.append(time.perf_counter() - started)
            if status != probe.status:
                failures += 1
            elif status == 200 and answer_texts(probe, text) != probe.texts:
                mismatches += 1

        async def closed_loop() -> None:
            while time.monotonic() < stop:
                await one(rng.choice(probes))

        if rate is None:
            await asyncio.gather(*(closed_loop() for _ in range(clients)))
        else:
            pending, started, sent = set(), time.monotonic(), 0
            while time.monotonic() < stop:
                due = int((time.monotonic() - started) * rate) - sent
                for _ in range(max(due, 0)):
                    pending.add(asyncio.create_task(one(rng.choice(probes))))
                    sent += 1
                pending = {t for t in pending if not t.done()}
                await asyncio.sleep(0.001)
            await asyncio.gather(*pending)
    p50, p90, p99 = (np.percentile(latencies, [50, 90, 99]) * 1e3).tolist() if latencies else (0, 0, 0)
    return {
        "requests": len(latencies),
        "throughput": len(latencies) / duration,
        "p50_ms": p50,
        "p90_ms": p90,
        "p99_ms": p99,
        "failures": failures,
        "mismatches": mismatches,
    }


def answer_texts(probe: Probe, body: str) -> tuple[str, ...] | None:
    """The texts of a 200 answer: its results' texts, or a stream's tokens joined (None if the stream ended in an
    error event)."""
    if not probe.stream:
        return tuple(result["text"] for result in json.loads(body)["results"])
    tokens, event = [], None
    for line in body.splitlines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "token":
            tokens.append(json.loads(line[6:])["token"])
        elif event == "error":
            return None
    return (probe.join.join(tokens),)


def run_load(args: argparse.Namespace) -> int:
    import s2s_runtime

    from .cli import load_inputs

    model = s2s_runtime.load(args.bundle, device="cpu")
    words = load_inputs(None, model.bundle)[0][:512]
    if args.soak is not None:
        return run_soak(args, model, words)
    if args.ray:
        return run_ray_comparison(args, model, words)
    probes = word_probes(words, {w: r.text for w, r in zip(words, model.generate(words), strict=True)})
    result: dict = {
        "bundle": args.bundle,
        "clients": args.clients,
        "duration_s": args.duration,
        "batch_workers": args.batch_workers,
        "runs": [],
    }
    for batch in (args.max_batch_size, 1):
        with ServerProcess(args.bundle, batch, args.batch_workers) as server:
            asyncio.run(drive(server.url, probes, clients=args.clients, duration=1.0, rate=None))  # warm
            peak = asyncio.run(drive(server.url, probes, clients=args.clients, duration=args.duration, rate=None))
            result["runs"].append({"max_batch_size": batch, "offered": "max", **peak})
            print(f"max_batch_size={batch}: {peak}", file=sys.stderr)
            if batch != 1:
                for load in args.loads:
                    run = asyncio.run(
                        drive(
                            server.url,
                            probes,
                            clients=args.clients,
                            duration=args.duration,
                            rate=load * peak["throughput"],
                        )
                    )
                    result["runs"].append({"max_batch_size": batch, "offered": load, **run})
                    print(f"  offered {load:.0%}: {run}", file=sys.stderr)
    batched, single = result["runs"][0], next(r for r in result["runs"] if r["max_batch_size"] == 1)
    result["throughput_ratio"] = batched["throughput"] / max(single["throughput"], 1e-9)
    half = min(
        (r for r in result["runs"] if r["offered"] != "max"), key=lambda r: abs(r["offered"] - 0.5), default=None
    )
    result["p99_over_p50_at_half_load"] = half["p99_ms"] / half["p50_ms"] if half else None
    result["lost_or_mismatched"] = sum(r["failures"] + r["mismatches"] for r in result["runs"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-serve.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "bench-serve.png")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    return 0


def plot(result: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    runs = sorted((r for r in result["runs"] if r["offered"] != "max"), key=lambda r: r["throughput"])
    peak = result["runs"][0]
    figure, axis = plt.subplots(figsize=(6, 4))
    for key in ("p50_ms", "p90_ms", "p99_ms"):
        axis.plot(
            [r["throughput"] for r in runs] + [peak["throughput"]],
            [r[key] for r in runs] + [peak[key]],
            marker="o",
            label=key.replace("_ms", ""),
        )
    axis.set_xlabel("throughput (requests/s)")
    axis.set_ylabel("latency (ms)")
    axis.set_title(f"s2s serve, max_batch_size={peak['max_batch_size']}")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def resident_mb(pid: int) -> float:
    """The resident memory of a process in MB, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_soak(args: argparse.Namespace, model, words: list[str]) -> int:
    """A bounded soak: one batched server, mixed traffic from `--clients` closed-loop clients for `--soak`
    seconds, sampled every `--soak-interval` seconds."""
    probes = mixed_probes(model, words[:256])
    samples = []
    with ServerProcess(args.bundle, args.max_batch_size, args.batch_workers) as server:
        asyncio.run(drive(server.url, probes, clients=args.clients, duration=1.0, rate=None))  # warm
        started = time.monotonic()
        while time.monotonic() - started < args.soak:
            window = min(args.soak_interval, args.soak - (time.monotonic() - started))
            run = asyncio.run(drive(server.url, probes, clients=args.clients, duration=max(window, 0.5), rate=None))
            samples.append(
                {"t_s": round(time.monotonic() - started, 2), "rss_mb": resident_mb(server.process.pid), **run}
            )
            print(
                f"soak t={samples[-1]['t_s']:.0f}s: {run['throughput']:.0f} req/s, p99 {run['p99_ms']:.1f} ms, "
                f"rss {samples[-1]['rss_mb']:.0f} MB",
                file=sys.stderr,
            )
    result = {
        "bundle": args.bundle,
        "clients": args.clients,
        "soak_s": args.soak,
        "interval_s": args.soak_interval,
        "mix": "greedy 12 : beam-4 3 : seeded sampling 2 : streamed 2 : bad (400) 1, per word",
        "samples": samples,
        "requests": sum(s["requests"] for s in samples),
        "lost_or_mismatched": sum(s["failures"] + s["mismatches"] for s in samples),
        "rss_mb_first_last": [samples[0]["rss_mb"], samples[-1]["rss_mb"]] if samples else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-soak.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_soak(result, args.out / "bench-soak.png")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    return 0


def plot_soak(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    times = [s["t_s"] for s in samples]
    figure, axes = plt.subplots(3, 1, figsize=(6, 7), sharex=True)
    axes[0].plot(times, [s["throughput"] for s in samples], marker="o")
    axes[0].set_ylabel("requests/s")
    for key in ("p50_ms", "p99_ms"):
        axes[1].plot(times, [s[key] for s in samples], marker="o", label=key.replace("_ms", ""))
    axes[1].set_ylabel("latency (ms)")
    axes[1].legend()
    axes[2].plot(times, [s["rss_mb"] for s in samples], marker="o")
    axes[2].set_ylabel("server RSS (MB)")
    axes[2].set_xlabel("seconds into the soak")
    for axis in axes:
        axis.grid(True, alpha=0.3)
    axes[0].set_title(
        f"s2s serve soak: {result['clients']} clients, mixed traffic, {result['lost_or_mismatched']} lost or mismatched"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_ray_comparison(args: argparse.Namespace, model, words: list[str]) -> int:
    """`s2s serve --ray --replicas N` against `s2s serve --batch-workers N`, N = 1 and 2, closed loop at --clients."""
    probes = word_probes(words, {w: r.text for w, r in zip(words, model.generate(words), strict=True)})
    runs = []
    for count in (1, 2):
        for ray_replicas in (0, count):
            with ServerProcess(args.bundle, args.max_batch_size, count, ray_replicas=ray_replicas) as server:
                asyncio.run(drive(server.url, probes, clients=args.clients, duration=2.0, rate=None))  # warm
                peak = asyncio.run(drive(server.url, probes, clients=args.clients, duration=args.duration, rate=None))
            name = f"s2s serve --ray --replicas {count}" if ray_replicas else f"s2s serve --batch-workers {count}"
            runs.append(
                {
                    "server": name,
                    "instances": count,
                    "ray": bool(ray_replicas),
                    "ready_s": round(server.ready_s, 1),
                    **peak,
                }
            )
            print(f"{name}: {peak}", file=sys.stderr)
    for run in runs:
        if run["ray"]:
            base = next(r for r in runs if not r["ray"] and r["instances"] == run["instances"])
            run["vs_s2s_serve"] = round(run["throughput"] / max(base["throughput"], 1e-9), 3)
    result = {
        "bundle": args.bundle,
        "clients": args.clients,
        "duration_s": args.duration,
        "ingress": "HAProxy in front of direct-ingress replicas (s2s serve --ray's default)",
        "runs": runs,
        "lost_or_mismatched": sum(r["failures"] + r["mismatches"] for r in runs),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-serve-ray.json").write_text(json.dumps(result, indent=1) + "\n")
    plot_ray(result, args.out / "bench-serve-ray.png")
    print(json.dumps(result, indent=1))
    return 0


def plot_ray(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    names = [r["server"].replace("s2s serve ", "") for r in runs]
    axes[0].barh(names, [r["throughput"] for r in runs])
    axes[0].set_xlabel("requests/s")
    axes[1].barh(names, [r["p99_ms"] for r in runs])
    axes[1].set_xlabel("p99 latency (ms)")
    for axis in axes:
        axis.invert_yaxis()
        axis.grid(True, axis="x", alpha=0.3)
    figure.suptitle(f"s2s serve vs Ray Serve, {result['clients']} clients")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
