"""The public step API: one batch of prepared inputs decoded a decoder step at a time (`Seq2SeqModel.start`).

    generation = model.start(items, plan)
    while not generation.is_done():
        event = generation.step()      # the tokens this step produced (None where the graph kept them)
        if deadline_passed():
            generation.close()         # abandon it: its runner is released
            break
    results = generation.results()

`run(stop=...)` does the same loop, asking `stop` between steps. The batcher, the bench and the tests drive decoding
through this object; `Seq2SeqModel.decode` is `start` + `run` per length-sorted batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING

import numpy as np

from .decoding.hypotheses import Candidate, StepEvent
from .decoding.strategy import Search, SearchTask
from .engine.runner import take_rows
from .inputs import PreparedInput
from .plan import DecodingPlan
from .results import Hypothesis, Result, hypothesis

if TYPE_CHECKING:
    from .model import Seq2SeqModel

Stop = Callable[[], bool]  # asked between steps: True ends the generation with DecodingStopped


class DecodingStopped(Exception):
    """Decoding was stopped between two steps because its `stop` callable said so (a deadline passed, every caller
    went away, or the service is shutting down); the caller decides what to answer."""


class Generation:
    """See the module docstring. Created by `Seq2SeqModel.start`; a context manager that closes itself."""

    def __init__(
        self,
        model: Seq2SeqModel,
        items: list[PreparedInput],
        plan: DecodingPlan,
        *,
        events: bool,
        entropy: int | None = None,
    ):
        self.items, self.plan = items, plan
        self._vocab = model.bundle.target.vocab
        self._results: list[Result | None] = [None] * len(items)
        self._pending = [i for i, item in enumerate(items) if item.ids]
        for index, item in enumerate(items):
            if not item.ids:  # an empty input: an empty output, without running the model
                self._results[index] = Result([Hypothesis("", [], [], 0.0, 0.0, True)], 0)
        self._stack = ExitStack()
        self._search: Search | None = None
        self._steps = 0
        if self._pending:
            self._search = self._start(
                model, [items[i] for i in self._pending], events, plan.entropy() if entropy is None else entropy
            )

    def _start(self, model: Seq2SeqModel, items: list[PreparedInput], events: bool, entropy: int) -> Search:
        plan, strategy = self.plan, self.plan.strategy
        limits = [item.limits for item in items]
        states, statics = model.encoder.encode([item.ids for item in items])
        copies = strategy.rows_per_input()
        if copies > 1:  # each input `copies` times: its beams or its samples
            rows = np.repeat(np.arange(len(items)), copies)
            axes = model.step_graph.batch_axes
            states, statics = take_rows(states, rows, axes), take_rows(statics, rows, axes)
        processors = plan.processors(limits)
        top_k = strategy.top_k(model.step_graph.ranks, model.step_graph.vocab_size, processors)
        runner = self._stack.enter_context(model.runners.runner(states, statics, plan.with_attention, top_k))
        task = SearchTask(
            plan.options,
            model.bundle.start_id,
            model.bundle.eos_id,
            limits,
            processors,
            plan.with_attention,
            [item.ids for item in items],
            entropy,
            events,
        )
        return strategy.search(runner, task)

    def step(self) -> StepEvent | None:
        """Advance every live row by one decoder step; returns what the step produced (None where the graph chose
        and kept its tokens, or once done)."""
        if self._search is None:
            return None
        self._steps += 1
        try:
            return next(self._search)
        except StopIteration as done:
            self._finish(done.value)
            return None

    def is_done(self) -> bool:
        return self._search is None

    @property
    def steps(self) -> int:
        """Decoder steps run so far."""
        return self._steps

    def run(self, stop: Stop | None = None) -> list[Result]:
        """Step until done, asking `stop` before every step (DecodingStopped when it says so); the results."""
        if self._search is not None:
            advance = self._search.__next__  # the loop of step() without its per-step call: the fast paths' pace
            try:
                if stop is None:
                    while True:
                        advance()
                        self._steps += 1
                while True:
                    if stop():
                        raise DecodingStopped()
                    advance()
                    self._steps += 1
            except StopIteration as done:
                self._steps += 1
                self._finish(done.value)
            except BaseException:
                self.close()
                raise
        return self.results()

    def __iter__(self) -> Iterator[StepEvent | None]:
        """The step events, until done."""
        while self._search is not None:
            event = self.step()
            if self._search is not None or event is not None:
                yield event

    def results(self) -> list[Result]:
        """One Result per input, in input order (once done)."""
        if self._search is not None:
            raise RuntimeError("the generation is not done: step() it to the end, or run() it")
        return self._results  # type: ignore[return-value]

    def close(self) -> None:
        """Abandon a generation that is not done (its runner is released, not kept for reuse); no-op when done."""
        if self._search is not None:
            self._search.close()
            self._search = None
            self._stack.__exit__(DecodingStopped, DecodingStopped(), None)

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _finish(self, n_best: list[list[Candidate]]) -> None:
        self._search = None
        self._stack.close()  # a clean finish: the runner's buffers are kept for reuse
        options = self.plan.options
        for index, candidates in zip(self._pending, n_best, strict=True):
            item = self.items[index]
            self._results[index] = Result(
                [hypothesis(c, item.tokens, len(item.ids), options, self._vocab) for c in candidates], item.unknown
            )
