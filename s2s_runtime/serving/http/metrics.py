"""The service's Prometheus metrics, in a registry of their own (several apps in one process do not collide)."""

from __future__ import annotations

from typing import Any

# Each request is counted once, under one of these (503s for shutting down count as overloaded: the service could
# not take the request).
OUTCOMES = ("ok", "bad_input", "overloaded", "timeout", "cancelled", "internal")


class Metrics:
    """Requests and latency by outcome, batch sizes, queue depth, open streams, tokens, rejected connections; also
    the batcher's observer (s2s_runtime.serving.execution.BatcherObserver)."""

    def __init__(self) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            GCCollector,
            Histogram,
            PlatformCollector,
            ProcessCollector,
        )

        self.registry = CollectorRegistry()
        # The process's own (resident memory, CPU seconds, open files, threads, GC) beside the service's.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.requests = Counter(
            "s2s_requests",
            "Requests to /v1/generate by outcome, each counted once",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "s2s_request_latency_seconds",
            "Latency of /v1/generate requests by outcome",
            ["outcome"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batch_size = Histogram(
            "s2s_batch_size",
            "Inputs per decoded batch",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.queue = Gauge("s2s_queue_depth", "Requests waiting in the batcher", registry=self.registry)
        self.streams = Gauge("s2s_open_streams", "Streaming responses in progress", registry=self.registry)
        self.tokens = Counter("s2s_tokens_generated", "Tokens generated (eos included)", registry=self.registry)
        self.rejected = Counter(
            "s2s_connections_rejected", "Connections closed before reaching the app", ["reason"], registry=self.registry
        )
        self.idle_buffers = Gauge(
            "s2s_idle_buffer_bytes",
            "Bytes of decoder buffers kept idle for reuse (bounded by SessionSettings.idle_buffer_bytes)",
            registry=self.registry,
        )
        for outcome in OUTCOMES:  # every label present from the start, so rates are defined
            self.requests.labels(outcome=outcome)

    def watch(self, model: Any) -> None:
        """Report the model's idle decoder buffers, read at each scrape."""
        self.idle_buffers.set_function(model.engine.runners.idle_bytes)

    def request_done(self, outcome: str, seconds: float) -> None:
        self.requests.labels(outcome=outcome).inc()
        self.latency.labels(outcome=outcome).observe(seconds)

    # BatcherObserver
    def batch_done(self, size: int, seconds: float, tokens: int) -> None:
        self.batch_size.observe(size)
        self.tokens.inc(tokens)

    def queue_depth(self, depth: int) -> None:
        self.queue.set(depth)
