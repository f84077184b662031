"""The engine of one model: its onnxruntime sessions on a device, the encoder, the decoder step and the runners over
it — made once at load and checked by a probe — and, per generation, the runner a search drives.

`Seq2SeqModel` (the public door) owns one Engine; `Generation` asks it for a runner over encoded inputs
(`runner`), so neither reaches into the other's parts. `instrument` is the public hook that routes every session
call through a wrapper (s2s bench times the encoder and the step with it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np

from .. import roles
from ..bundle import Bundle, BundleError
from ..decoding.hypotheses import RowLimits
from ..decoding.processors import Processors
from ..decoding.stepwise import argmax, stepwise_search
from ..decoding.strategy import input_rows
from .capture import GraphCapture
from .device import device_for
from .encoding import Encoder
from .fused import FusedGreedy
from .memory import release_free_memory
from .runner import LOG_PROBS, ArrayBuffers, StepGraph, StepRunner, take_rows
from .runners import Runners
from .sessions import (
    DeviceError,
    SessionSettings,
    create_capture_session,
    create_sessions,
    cuda_works,
    parse_device,
)

log = logging.getLogger("s2s_runtime")

PROBE_STEPS = 6  # greedy steps the load-time probe compares between the greedy graph and the step loop
TopK = Callable[[bool, int], int]  # (the graph ranks, its vocabulary size) → ranked candidates per row


class Engine:
    """A bundle's graphs in onnxruntime sessions (see the module docstring).

    Attributes:
        settings: the SessionSettings the sessions were made with.
        placement: where the sessions run (device, providers, and why).
        device: the Device the decoder states live on.
        encoder: the Encoder.
        runners: the Runners over the decoder step (`step_graph` is theirs).
    """

    def __init__(self, bundle: Bundle, device: str, settings: SessionSettings):
        self.bundle, self.settings = bundle, settings
        graphs = [bundle.graphs["encoder"], bundle.graphs["decoder_step"]]
        if "greedy" in bundle.graphs and settings.greedy_graph_max_batch:
            graphs.append(bundle.graphs["greedy"])
        if bundle.manifest.precision == "float16":
            device = cuda_only(device)  # onnxruntime's CPU kernels cannot run these graphs (it may even crash)
        weights = bundle.read_weights()  # read once for every session, then dropped (each session keeps its own)
        sessions, self.placement = create_sessions(graphs, device, settings, weights)
        padding, pad_id = bundle.manifest.memory_bias_padding, bundle.source.special_ids["pad"]
        self.encoder = Encoder(sessions[0], graphs[0], graphs[1], pad_id, padding)
        self.device = device_for(self.placement)  # compaction and beam reordering where the states live
        step = StepGraph.of(sessions[1], graphs[1], padding)
        # the whole greedy decode in one call, for plain greedy batches of up to settings.greedy_graph_max_batch
        self.fused = FusedGreedy(sessions[2], graphs[2], pad_id, bundle.eos_id) if len(sessions) > 2 else None
        capture = self._graph_capture(step, settings, weights)
        del weights
        self.runners = Runners(
            step,
            self.device,
            io_binding=settings.io_binding,
            capture=capture,
            idle_bytes_limit=settings.idle_buffer_bytes,
        )
        self.probe()

    @property
    def step_graph(self) -> StepGraph:
        return self.runners.graph

    @property
    def has_attention(self) -> bool:
        return roles.ATTENTION in self.step_graph.spec.outputs

    @contextmanager
    def runner(
        self, sources: list[list[int]], *, copies: int = 1, with_attention: bool = False, top_k: TopK | None = None
    ) -> Iterator[StepRunner]:
        """Encode `sources` and hold a runner over them, each input `copies` times (its beams or samples, input-major);
        `top_k` says how many ranked candidates per row the search wants. A clean exit keeps the runner's buffers for
        reuse; an exception (an abandoned generation) drops them."""
        states, statics = self.encoder.encode(sources)
        if copies > 1:
            rows = input_rows(len(sources), copies)
            axes = self.step_graph.batch_axes
            states, statics = take_rows(states, rows, axes), take_rows(statics, rows, axes)
        ranked = 1 if top_k is None else top_k(self.step_graph.ranks, self.step_graph.vocab_size)
        with self.runners.runner(states, statics, with_attention, ranked) as runner:
            yield runner
        if runner.nbytes > self.runners.idle_bytes_limit:  # too large to keep: its memory goes back to the OS
            del states, statics, runner
            release_free_memory()

    def instrument(self, wrap: Callable[[str, Any], Any]) -> None:
        """Route the sessions through `wrap(kind, session)` ("encoder", "decoder_step", "greedy" where the greedy
        graph is loaded): a timing or tracing hook.
        The wrapper must offer what it wraps (run, run_with_iobinding, io_binding); runners made afterwards use it.

        Examples:
            >>> model.engine.instrument(lambda kind, session: TimedSession(session))  # doctest: +SKIP
        """
        self.encoder.session = wrap("encoder", self.encoder.session)
        self.runners.use(replace(self.step_graph, session=wrap("decoder_step", self.step_graph.session)))
        if self.fused is not None:
            self.fused.session = wrap("greedy", self.fused.session)

    def probe(self) -> None:
        """Run the encoder on the highest source id and one step on the highest target id, and compare every output
        shape with the manifest: a vocabulary larger than a graph's embedding table, or a declared size the graph
        does not have, is a BundleError at load naming the file — not an onnxruntime error at the first request."""
        highest = {"encoder": len(self.bundle.source.vocab) - 1, "decoder_step": len(self.bundle.target.vocab) - 1}
        try:
            encoded = self.encoder.run([[highest["encoder"]]])
        except Exception as error:  # noqa: BLE001 (onnxruntime's own exception types)
            raise BundleError(
                f"{self.encoder.spec.path}: the graph fails on source id {highest['encoder']}, the highest of "
                f"the source vocabulary ({str(error).strip()[:200]})"
            ) from None
        outputs = dict(encoded)
        states = {role: encoded[role] for role in self.encoder.state_roles}
        statics = {role: encoded[role] for role in self.encoder.static_roles}
        try:
            buffers = ArrayBuffers(self.step_graph, states, statics, False)
            buffers.set_previous(np.array([highest["decoder_step"]], dtype=np.int64))
            buffers.run(LOG_PROBS)
            outputs[roles.LOG_PROBS] = buffers.log_probs()
            stepped = dict(buffers.states)
        except Exception as error:  # noqa: BLE001 (onnxruntime's own exception types)
            raise BundleError(
                f"{self.step_graph.spec.path}: the graph fails on target id {highest['decoder_step']}, the highest "
                f"of the target vocabulary ({str(error).strip()[:200]})"
            ) from None
        self._check_lstm_roles(stepped)
        if self.fused is not None:
            self._probe_fused(highest["encoder"])
        for role, value in outputs.items():
            graph = self.encoder.spec if role in encoded else self.step_graph.spec
            declared = graph.outputs[role].shape
            if len(value.shape) != len(declared):
                raise BundleError(
                    f"{graph.path}: output {role!r} has {len(value.shape)} dimensions, manifest.json "
                    f"declares {len(declared)}"
                )
            for axis, (real, claimed) in enumerate(zip(value.shape, declared, strict=True)):
                if isinstance(claimed, int) and real != claimed:
                    raise BundleError(
                        f"{graph.path}: output {role!r} has size {real} on axis {axis}, manifest.json "
                        f"declares {claimed}"
                    )

    def _probe_fused(self, highest_source_id: int) -> None:
        """The greedy graph must decode as the step loop does: a greedy graph of another model (or of other graphs
        of this one) is a BundleError at load, not different answers depending on the batch size."""
        source = [highest_source_id, *range(min(highest_source_id, 7))]  # the highest id and a few others
        limits = [RowLimits((), 0, PROBE_STEPS)]
        spec = self.fused.spec  # type: ignore[union-attr]
        try:
            [fused] = self.fused.decode([source], [PROBE_STEPS])  # type: ignore[union-attr]
        except Exception as error:  # noqa: BLE001 (onnxruntime's own exception types)
            raise BundleError(f"{spec.path}: the greedy graph fails ({str(error).strip()[:200]})") from None
        with self.runner([source]) as runner:
            search = stepwise_search(
                runner,
                start_id=self.bundle.start_id,
                eos_id=self.bundle.eos_id,
                limits=limits,
                processors=Processors([], [], self.bundle.eos_id),
                choose=argmax,
            )
            try:
                while True:
                    next(search)
            except StopIteration as done:
                [[expected]] = done.value
        if fused.ids != expected.ids or not np.isclose(fused.score, expected.score, rtol=1e-4, atol=1e-4):
            raise BundleError(
                f"{spec.path}: the greedy graph does not decode as the encoder and step graphs do (ids {fused.ids} "
                f"score {fused.score:.6g} against {expected.ids} score {expected.score:.6g}): it belongs to another "
                "model; re-export the bundle"
            )

    def _check_lstm_roles(self, states: dict[str, np.ndarray]) -> None:
        """An LSTM cell's output satisfies |h| = o·|tanh(c)| ≤ |tanh(c)| in every unit (o, its output gate, is in
        (0, 1)); with the graph names of state.h and state.c swapped in the manifest it fails wherever c ≠ 0. So a
        swapped manifest is a BundleError here, not wrong answers later. (A swap on the step's inputs alone leaves
        its outputs right and cannot be seen this way; the manifest's checksum guards what the exporter wrote.)"""
        if roles.STATE_H not in states or roles.STATE_C not in states:
            return
        h, bound = np.abs(states[roles.STATE_H]), np.abs(np.tanh(states[roles.STATE_C]))
        if np.any(h > bound * (1 + 1e-3) + 1e-5):
            raise BundleError(
                f"{self.step_graph.spec.path}: the output named for state.h is not an LSTM's hidden state for the "
                "one named for state.c (|h| > |tanh(c)|): manifest.json binds the two names the wrong way round"
            )

    def _graph_capture(self, step: StepGraph, settings: SessionSettings, weights: bytes | None) -> GraphCapture | None:
        """The CUDA graph capture of the step, when asked for and the device captures (else None, logged)."""
        if not settings.cuda_graph:
            return None
        device = self.device
        if not device.captures or not settings.io_binding:
            log.info(
                "s2s_runtime: cuda_graph=True has no effect: %s",
                "it needs io_binding" if device.captures else f"the model runs on the CPU ({self.placement.reason})",
            )
            return None
        session = create_capture_session(step.spec, device.device_id, settings, weights)  # type: ignore[attr-defined]
        if session is None:
            return None
        return GraphCapture(StepGraph.of(session, step.spec, step.padding_bias), device)  # type: ignore[arg-type]


def cuda_only(device: str) -> str:
    """The device for a float16 bundle: CUDA, or a DeviceError naming the precision."""
    kind, device_id = parse_device(device)
    works, why = cuda_works(device_id) if kind != "cpu" else (False, "device='cpu' requested")
    if not works:
        raise DeviceError(f"this bundle is float16 (s2s export --fp16) and runs on CUDA only: {why}")
    return f"cuda:{device_id}"
