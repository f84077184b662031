"""`s2s bench-serve`: load test of `s2s serve` on loopback — batched versus max_batch_size=1.

The server runs in its own process (as in production); clients are asyncio tasks in this one. Each response is
checked against the answer computed serially beforehand, so lost or mismatched responses are counted, not assumed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def add_load_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench-serve", help="load test of s2s serve: batched vs max_batch_size=1")
    parser.add_argument("bundle", help="bundle directory or built-in name")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients at maximum load")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--loads", type=float, nargs="+", default=[0.25, 0.5, 0.75],
                        help="offered loads as fractions of the batched maximum throughput")
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-workers", type=int, default=1, help="the servers' --batch-workers (both servers)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.set_defaults(handler=run_load)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`s2s serve` in a subprocess on a free loopback port, stopped on exit."""

    def __init__(self, bundle: str, max_batch_size: int, batch_workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "s2s_runtime.cli", "serve", bundle, "--port", str(self.port),
                        "--max-batch-size", str(max_batch_size), "--batch-workers", str(batch_workers),
                        "--device", "cpu", "--log-level", "warning"]

    def __enter__(self) -> "ServerProcess":
        import httpx

        self.process = subprocess.Popen(self.command)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
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
        self.process.wait(30)


async def drive(url: str, words: list[str], expected: dict[str, str], *, clients: int, duration: float,
                rate: float | None) -> dict:
    """Closed loop (`rate` None: each client sends its next request when the last one is answered) or open loop
    (requests start at `rate` per second). Returns throughput, latency percentiles and the count of failed or
    mismatched responses. aiohttp's C parser keeps the client from being the bottleneck."""
    import aiohttp

    latencies, failures, mismatches = [], 0, 0
    rng = random.Random(0)
    stop = time.monotonic() + duration
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def one(word: str) -> None:
            nonlocal failures, mismatches
            started = time.perf_counter()
            try:
                async with session.post(f"{url}/v1/generate", json={"inputs": word}) as response:
                    body = await response.json() if response.status == 200 else None
            except (aiohttp.ClientError, asyncio.TimeoutError):
                failures += 1
                return
            latencies.append(time.perf_counter() - started)
            if body is None:
                failures += 1
            elif body["results"][0]["text"] != expected[word]:
                mismatches += 1

        async def closed_loop() -> None:
            while time.monotonic() < stop:
                await one(rng.choice(words))

        if rate is None:
            await asyncio.gather(*(closed_loop() for _ in range(clients)))
        else:
            pending, started, sent = set(), time.monotonic(), 0
            while time.monotonic() < stop:
                due = int((time.monotonic() - started) * rate) - sent
                for _ in range(max(due, 0)):
                    pending.add(asyncio.create_task(one(rng.choice(words))))
                    sent += 1
                pending = {t for t in pending if not t.done()}
                await asyncio.sleep(0.001)
            await asyncio.gather(*pending)
    p50, p90, p99 = (np.percentile(latencies, [50, 90, 99]) * 1e3).tolist() if latencies else (0, 0, 0)
    return {"requests": len(latencies), "throughput": len(latencies) / duration, "p50_ms": p50, "p90_ms": p90,
            "p99_ms": p99, "failures": failures, "mismatches": mismatches}


def run_load(args: argparse.Namespace) -> int:
    import json

    import s2s_runtime

    from .cli import load_inputs

    model = s2s_runtime.load(args.bundle, device="cpu")
    words = load_inputs(None, model.bundle)[0][:512]
    expected = {w: r.text for w, r in zip(words, model.generate(words))}
    result: dict = {"bundle": args.bundle, "clients": args.clients, "duration_s": args.duration,
                    "batch_workers": args.batch_workers, "runs": []}
    for batch in (args.max_batch_size, 1):
        with ServerProcess(args.bundle, batch, args.batch_workers) as server:
            asyncio.run(drive(server.url, words, expected, clients=args.clients, duration=1.0, rate=None))  # warm
            peak = asyncio.run(drive(server.url, words, expected, clients=args.clients, duration=args.duration,
                                     rate=None))
            result["runs"].append({"max_batch_size": batch, "offered": "max", **peak})
            print(f"max_batch_size={batch}: {peak}", file=sys.stderr)
            if batch != 1:
                for load in args.loads:
                    run = asyncio.run(drive(server.url, words, expected, clients=args.clients,
                                            duration=args.duration, rate=load * peak["throughput"]))
                    result["runs"].append({"max_batch_size": batch, "offered": load, **run})
                    print(f"  offered {load:.0%}: {run}", file=sys.stderr)
    batched, single = result["runs"][0], next(r for r in result["runs"] if r["max_batch_size"] == 1)
    result["throughput_ratio"] = batched["throughput"] / max(single["throughput"], 1e-9)
    half = min((r for r in result["runs"] if r["offered"] != "max"), key=lambda r: abs(r["offered"] - 0.5),
               default=None)
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
        axis.plot([r["throughput"] for r in runs] + [peak["throughput"]], [r[key] for r in runs] + [peak[key]],
                  marker="o", label=key.replace("_ms", ""))
    axis.set_xlabel("throughput (requests/s)")
    axis.set_ylabel("latency (ms)")
    axis.set_title(f"s2s serve, max_batch_size={peak['max_batch_size']}")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)

