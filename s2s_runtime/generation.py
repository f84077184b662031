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

from .batching import BatchingOptions, length_sorted_batches
from .decoding.forced import forced_log_probs
from .decoding.hypotheses import Candidate, StepEvent
from .decoding.strategy import Search, SearchTask
from .engine.engine import Engine
from .engine.fused import FusedGreedy
from .engine.watchdog import CallStopped
from .inputs import PreparedInput
from .plan import DecodingPlan
from .results import Hypothesis, Result, StreamedToken, TokenScore, hypothesis, once

Stop = Callable[[], bool]  # asked between steps: True ends the generation with DecodingStopped


class DecodingStopped(Exception):
    """Decoding was stopped between two steps because its `stop` callable said so (a deadline passed, every caller
    went away, or the service is shutting down); the caller decides what to answer."""


class Generation:
    """See the module docstring. Created by `Seq2SeqModel.start`; a context manager that closes itself."""

    def __init__(
        self,
        engine: Engine,
        items: list[PreparedInput],
        plan: DecodingPlan,
        *,
        events: bool,
        entropy: int | None = None,
    ):
        self.items, self.plan = items, plan
        self._vocab = engine.bundle.target.vocab
        self._results: list[Result | None] = [None] * len(items)
        # The lexicon's outputs of inputs it knows: enough of them answer the input without decoding (a stream yields
        # the preferred one's tokens); fewer than num_hypotheses come first, the model's after.
        self._known: dict[int, list[Hypothesis]] = {}
        wanted = plan.options.num_hypotheses
        for index, item in enumerate(items):
            if not item.ids:  # an empty input: an empty output, without running the model
                self._results[index] = Result([Hypothesis("", [], [], 0.0, 0.0, True)], 0)
            elif item.lexicon:
                known = once([Hypothesis.from_lexicon(ids, self._vocab, plan.view) for ids in item.lexicon])[:wanted]
                if len(known) == wanted:
                    self._results[index] = Result(known, item.unknown)
                else:
                    self._known[index] = known
        self._pending = [i for i, item in enumerate(items) if self._results[i] is None]
        self._stack = ExitStack()
        self._search: Search | None = None
        self._steps = 0
        self._stop: Stop | None = None  # run()'s stop, for the one call of the greedy graph
        pending = [items[i] for i in self._pending]
        if not pending:
            return
        if engine.fused is not None and not events and self._plain_greedy(pending, engine):
            self._search = self._decode_fused(engine.fused, pending)
        else:
            self._search = self._start(engine, pending, events, plan.entropy() if entropy is None else entropy)

    def _plain_greedy(self, items: list[PreparedInput], engine: Engine) -> bool:
        """Whether the greedy graph can decode this batch: greedy with nothing that needs every step's log-probs
        (no logits rule, no forced prefix, no attention) and at most settings.greedy_graph_max_batch inputs."""
        plan = self.plan
        return (
            plan.options.strategy == "greedy"
            and not plan.with_attention
            and len(items) <= engine.settings.greedy_graph_max_batch
            and not plan.processors([item.limits for item in items])
        )

    def _decode_fused(self, fused: FusedGreedy, items: list[PreparedInput]) -> Search:
        """The batch's greedy decode in one call of the greedy graph: a search of no step events, which run() and
        step() drive like any other (its first advance is the whole decode)."""
        yield from ()
        try:
            candidates = fused.decode(
                [item.ids for item in items], [item.limits.max_length for item in items], self._stop
            )
        except CallStopped:
            raise DecodingStopped() from None
        return [[candidate] for candidate in candidates]

    def _start(self, engine: Engine, items: list[PreparedInput], events: bool, entropy: int) -> Search:
        plan, strategy, bundle = self.plan, self.plan.strategy, engine.bundle
        limits = [item.limits for item in items]
        processors = plan.processors(limits)
        sources = [item.ids for item in items]
        runner = self._stack.enter_context(
            engine.runner(
                sources,
                copies=strategy.rows_per_input(),
                with_attention=plan.with_attention,
                top_k=lambda ranks, vocab_size: strategy.top_k(ranks, vocab_size, processors),
            )
        )
        task = SearchTask(
            plan.options,
            bundle.start_id,
            bundle.eos_id,
            limits,
            processors,
            plan.with_attention,
            sources,
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
            self._stop = stop
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

    def tokens(self, stop: Stop | None = None) -> Iterator[StreamedToken]:
        """The output tokens of the first input as the steps produce them (a generation started with events=True),
        asking `stop` before every step as `run` does."""
        vocab, view = self._vocab.tokens, self.plan.view
        known = self._results[0] if self._results else None
        if known is not None and known.best.origin == "lexicon":  # certain: each token's log-prob is 0
            yield from (StreamedToken(t, i, 0.0) for t, i in zip(known.tokens, known.ids, strict=True))
        while self._search is not None:
            if stop is not None and stop():
                self.close()
                raise DecodingStopped()
            event = self.step()
            if event is not None and not event.ended[0]:
                token_id = int(event.tokens[0])
                token = view.get(token_id, vocab[token_id]) if view else vocab[token_id]
                yield StreamedToken(token, token_id, float(event.log_probs[0]))

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
        options, view = self.plan.options, self.plan.view
        for index, candidates in zip(self._pending, n_best, strict=True):
            item = self.items[index]
            decoded = [hypothesis(c, item.tokens, len(item.ids), options, self._vocab, view) for c in candidates]
            known = self._known.get(index)
            if known:  # the lexicon's variants first, then the model's other outputs
                seen = [h.ids for h in known]
                decoded = (known + [h for h in decoded if h.ids not in seen])[: options.num_hypotheses]
            if view:
                decoded = once(decoded)
            self._results[index] = Result(decoded, item.unknown)


def decode_in_batches(
    engine: Engine, items: list[PreparedInput], plan: DecodingPlan, batching: BatchingOptions, stop: Stop | None
) -> list[Result]:
    """`Seq2SeqModel.decode`: a Generation run to the end per length-sorted batch; one Result per input, in order.
    Every batch shares the call's seed material, so a sampled input's output does not depend on its batch."""
    entropy = plan.entropy()
    results: list[Result | None] = [None] * len(items)
    for batch in length_sorted_batches(
        [len(item.ids) for item in items], batching.max_batch_size, batching.max_batch_tokens
    ):
        generation = Generation(engine, [items[i] for i in batch], plan, events=False, entropy=entropy)
        for index, result in zip(batch, generation.run(stop), strict=True):
            results[index] = result
    return results  # type: ignore[return-value]


def score_in_batches(engine: Engine, pairs: list[tuple[list[int], list[int]]], max_batch_size: int) -> list[TokenScore]:
    """`Seq2SeqModel.score`: forced decoding of (source ids, target ids) pairs per length-sorted batch; one
    TokenScore per pair, in order."""
    results: list[TokenScore | None] = [None] * len(pairs)
    bundle = engine.bundle
    for batch in length_sorted_batches([len(source) for source, _ in pairs], max_batch_size):
        with engine.runner([pairs[i][0] for i in batch]) as runner:
            log_probs = forced_log_probs(runner, [pairs[i][1] for i in batch], bundle.start_id, bundle.eos_id)
        for i, row_log_probs in zip(batch, log_probs, strict=True):
            target = pairs[i][1]
            tokens = bundle.target.vocab.decode_tokens(target)
            results[i] = TokenScore(tokens, target, row_log_probs, float(sum(row_log_probs)))
    return results  # type: ignore[return-value]
