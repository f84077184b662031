"""Search algorithms over fake step functions (no graphs): reference equality and constraint properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s_runtime.batching import length_sorted_batches
from s2s_runtime.config import GenerationOptions
from s2s_runtime.decoding.coverage import COVERAGE_FLOOR, CoveragePenalty
from s2s_runtime.decoding.greedy import cut_choices, cut_one_row, greedy_in_graph, greedy_one_row
from s2s_runtime.decoding.hypotheses import Candidate, RowLimits
from s2s_runtime.decoding.processors import processors_for
from s2s_runtime.decoding.registry import strategy_class
from s2s_runtime.decoding.sampling import sampling_distribution
from s2s_runtime.decoding.strategy import SearchTask, run

VOCAB, EOS, START = 6, 0, 1


class FakeRunner:
    """A DecoderRunner over a pure function of (previous ids, states, statics), with numpy row selection."""

    selects = False  # no in-graph selection: the search chooses from the log-probs
    top_k = 0

    def __init__(self, step, states, statics):
        self.step_fn, self.states, self.statics = step, states, statics

    def step(self, previous):
        log_probs, self.states = self.step_fn(previous, self.states, self.statics)
        return log_probs, None

    def select(self, rows):
        self.states = {k: v[rows] for k, v in self.states.items()}
        self.statics = {k: v[rows] for k, v in self.statics.items()}


class FakeSelectingRunner(FakeRunner):
    """A FakeRunner whose "graph" also chooses the argmax and chains it to the next step, like optimized exports."""

    selects = True

    def __init__(self, step, states, statics):
        super().__init__(step, states, statics)
        self.chained = None

    def greedy_step(self, previous=None):
        log_probs, _ = self.step(self.chained if previous is None else previous)
        self.chained = log_probs.argmax(axis=1)
        return self.chained, log_probs.max(axis=1)

    def select(self, rows):
        super().select(rows)
        self.chained = self.chained[rows]


class FakeRankingRunner(FakeRunner):
    """A FakeRunner that also ranks in the "graph": each row's top_k log-probs, best first, equal values lower id
    first (what ONNX TopK does)."""

    def __init__(self, step, states, statics, top_k):
        super().__init__(step, states, statics)
        self.top_k = top_k

    def step(self, previous):
        raise AssertionError("beam search should use the ranked candidates")

    def top_k_step(self, previous):
        log_probs, self.states = self.step_fn(previous, self.states, self.statics)
        order = np.argsort(-log_probs, axis=1, kind="stable")[:, : self.top_k]  # (rows, top_k)
        return np.take_along_axis(log_probs, order, axis=1), order, None


def table_step(tables):
    """Log-probs that depend only on (row id kept in statics, step), so compaction bugs show."""

    def step(previous, states, statics):
        rows, t = statics["rows"], states["t"]
        log_probs = np.stack([tables[r][min(int(k), len(tables[r]) - 1)] for r, k in zip(rows, t, strict=True)])
        return log_probs, {"t": t + 1}

    return step


def history_step(seed):
    """Log-probs that depend on the whole history (kept as a hash in the state)."""

    def step(previous, states, statics):
        h = (states["h"] * 1_000_003 + previous + 1) % (2**31 - 1)
        logits = np.stack([np.random.default_rng([seed, int(x)]).normal(0, 2, VOCAB) for x in h])
        logits[:, EOS] -= 1.5  # long enough outputs to exercise the constraints
        return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True), {"h": h}

    return step


def search(runner, limits, options, seed=0, sources=None):
    """The options' strategy over the runner, every step reported (the stepwise form); each input's n-best."""
    processors = processors_for(options, np.zeros(0, dtype=np.int64), EOS, limits)
    task = SearchTask(
        options,
        START,
        EOS,
        limits,
        processors,
        options.coverage_penalty > 0,
        sources or [[row] for row in range(len(limits))],
        entropy=seed,
        events=True,
    )
    return run(strategy_class(options.strategy)(options).search(runner, task))


def greedy_or_sample(runner, limits, options, seed=0):
    return [n_best[0] for n_best in search(runner, limits, options, seed)]


def beam(runner, limits, options, sources=None):
    runner.select(np.repeat(np.arange(len(limits)), options.beam))  # each input beam times, as beam_search wants
    return search(runner, limits, options, sources=sources)


def reference_greedy(table, max_length):
    """Greedy decoding of one row, written the obvious way."""
    ids, score = [], 0.0
    for step in range(max_length + 1):
        log_probs = table[min(step, len(table) - 1)]
        token = int(np.argmax(log_probs))
        score += float(log_probs[token])
        if token == EOS:
            return ids, score, True
        ids.append(token)
        if len(ids) == max_length:
            return ids, score, False
    raise AssertionError("unreachable")


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.lists(st.floats(-5, 0), min_size=VOCAB, max_size=VOCAB), min_size=1, max_size=6),
        min_size=1,
        max_size=5,
    ),
    st.integers(1, 8),
)
def test_greedy_search_matches_a_row_by_row_reference(tables, max_length):
    tables = [np.array(t) for t in tables]
    batch = len(tables)
    hypotheses = greedy_or_sample(
        FakeRunner(table_step(tables), {"t": np.zeros(batch)}, {"rows": np.arange(batch)}),
        [RowLimits((), 0, max_length)] * batch,
        GenerationOptions(),
    )
    for row, hypothesis in enumerate(hypotheses):
        ids, score, finished = reference_greedy(tables[row], max_length)
        assert hypothesis.ids == ids
        assert abs(hypothesis.score - score) < 1e-9
        assert hypothesis.finished == finished


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.lists(st.floats(-5, 0), min_size=VOCAB, max_size=VOCAB), min_size=1, max_size=6),
            st.integers(1, 8),
        ),
        min_size=1,
        max_size=9,
    )
)
def test_greedy_in_graph_equals_the_stepwise_search_and_the_reference(rows):
    """Per-row max lengths and enough rows for compaction to drop some while others go on."""
    tables, limits = [np.array(t) for t, _ in rows], [RowLimits((), 0, m) for _, m in rows]

    def runner(cls):
        return cls(table_step(tables), {"t": np.zeros(len(rows))}, {"rows": np.arange(len(rows))})

    fast = run(greedy_in_graph(runner(FakeSelectingRunner), start_id=START, eos_id=EOS, limits=limits))
    stepwise = greedy_or_sample(runner(FakeSelectingRunner), limits, GenerationOptions())
    for (table, max_length), a, b in zip(rows, fast, stepwise, strict=True):
        ids, score, finished = reference_greedy(table, max_length)
        assert a.ids == b.ids == ids and a.finished == b.finished == finished
        assert abs(a.score - score) < 1e-9 and abs(b.score - score) < 1e-9


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(-5, 0), min_size=VOCAB, max_size=VOCAB), min_size=1, max_size=6), st.integers(1, 8))
def test_greedy_in_graph_for_a_single_input_equals_the_reference_and_stops_at_once(table, max_length):
    """One input takes its own scalar path: same output as the reference, and not one step more than it needs."""
    table = np.array(table)
    runner = FakeSelectingRunner(table_step([table]), {"t": np.zeros(1)}, {"rows": np.arange(1)})
    candidate = run(greedy_one_row(runner, START, EOS, max_length))
    ids, score, finished = reference_greedy(table, max_length)
    assert candidate.ids == ids and candidate.finished == finished and abs(candidate.score - score) < 1e-9
    assert runner.states["t"][0] == len(ids) + finished  # steps run


def reference_alternative(seed, start_state, prefix, rank, max_length):
    """One alternative of one input, written the obvious way: the prefix, the rank-th best token (equal log-probs:
    lower id first), then the argmax."""
    step, states, previous, ids, score = history_step(seed), {"h": np.array([start_state])}, START, [], 0.0
    while True:
        log_probs, states = step(np.array([previous]), states, {})
        position = len(ids)
        if position < len(prefix):
            token = prefix[position]
        elif position == len(prefix):
            token = int(np.argsort(-log_probs[0], kind="stable")[rank])
        else:
            token = int(np.argmax(log_probs[0]))
        score += float(log_probs[0, token])
        if token == EOS and position >= len(prefix):
            return ids, score, True
        ids.append(token)
        if len(ids) == max_length:
            return ids, score, False
        previous = token


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 10_000),
    st.lists(st.tuples(st.lists(st.integers(1, VOCAB - 1), max_size=3), st.integers(1, 5)), min_size=1, max_size=4),
    st.integers(1, VOCAB),
)
def test_alternatives_equal_a_row_by_row_reference(seed, inputs, count):
    """Each input's alternatives are the prefix, then its count best tokens in order, each continued greedily;
    inputs of different prefix lengths branch at different steps of the same batch."""
    limits = [RowLimits(tuple(prefix), 0, len(prefix) + extra) for prefix, extra in inputs]
    start_states = np.arange(len(inputs)) * 7 + seed
    runner = FakeRunner(history_step(seed), {"h": start_states}, {})
    runner.select(np.repeat(np.arange(len(inputs)), count))  # each input count times, as the strategy wants
    results = search(runner, limits, GenerationOptions(strategy="alternatives", num_hypotheses=count))
    for (prefix, extra), start_state, alternatives in zip(inputs, start_states, results, strict=True):
        expected = [
            reference_alternative(seed, start_state, prefix, rank, len(prefix) + extra) for rank in range(count)
        ]
        assert [(c.ids, c.finished) for c in alternatives] == [(ids, done) for ids, _, done in expected]
        assert [c.score for c in alternatives] == pytest.approx([score for _, score, _ in expected])
        assert len({tuple(c.ids[: len(prefix) + 1]) for c in alternatives}) == count  # they differ at the branch


def test_impossible_and_repeated_alternatives_are_left_out():
    """A suppressed token is no alternative, and a prefix that fills the max length leaves one output."""
    seed, count = 3, 4
    limits = [RowLimits((2,), 0, 4), RowLimits((2, 3), 0, 2)]
    runner = FakeRunner(history_step(seed), {"h": np.array([seed, seed + 1])}, {})
    runner.select(np.repeat(np.arange(2), count))
    options = GenerationOptions(strategy="alternatives", num_hypotheses=count)
    processors = processors_for(options, np.array([1, 4, 5]), EOS, limits)  # only tokens 0 (eos), 2, 3 remain
    task = SearchTask(options, START, EOS, limits, processors, False, [[0], [1]])
    free, filled = run(strategy_class("alternatives")(options).search(runner, task))
    assert sorted(c.ids[1] if len(c.ids) > 1 else EOS for c in free) == [EOS, 2, 3]
    assert [c.ids for c in filled] == [[2, 3]]


constraint_options = st.builds(
    dict,
    min_length=st.integers(0, 4),
    no_repeat_ngram_size=st.integers(0, 3),
    repetition_penalty=st.sampled_from([1.0, 1.5, 3.0]),
    max_length=st.integers(4, 12),
)


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 10_000),
    constraint_options,
    st.lists(st.integers(1, VOCAB - 1), max_size=3),
    st.sampled_from(["greedy", "beam", "sample"]),
)
def test_constraints_are_honoured(seed, constraints, prefix, strategy):
    max_length = constraints.pop("max_length")
    extra = {"beam": dict(beam_size=3, num_hypotheses=2), "sample": dict(seed=seed)}.get(strategy, {})
    options = GenerationOptions(strategy=strategy, max_length=max_length, **constraints, **extra)
    limits = [RowLimits(tuple(prefix), options.min_length, max_length)] * 2
    runner = FakeRunner(history_step(seed), {"h": np.array([seed, seed + 1])}, {})
    if strategy == "beam":
        n_bests = beam(runner, limits, options)
        assert [len(n_best) for n_best in n_bests] == [2, 2]
        hypotheses = [h for n_best in n_bests for h in n_best]
    else:
        hypotheses = greedy_or_sample(runner, limits, options, seed)
    n = options.no_repeat_ngram_size
    for hypothesis in hypotheses:
        ids = hypothesis.ids
        assert ids[: len(prefix)] == prefix
        assert len(ids) <= max_length
        assert hypothesis.finished or len(ids) == max_length
        if hypothesis.finished:
            assert len(ids) >= options.min_length
        if n:  # no generated token completes an n-gram seen earlier (a forced prefix is the caller's business)
            for start in range(len(ids) - n + 1):
                if start + n - 1 >= len(prefix):
                    earlier = {tuple(ids[j : j + n]) for j in range(start)}
                    assert tuple(ids[start : start + n]) not in earlier
        assert EOS not in ids


def test_beam_results_are_sorted_and_beam_one_is_greedy():
    seed = 42
    runner = lambda: FakeRunner(history_step(seed), {"h": np.array([seed, seed + 7, seed + 9])}, {})  # noqa: E731
    limits = [RowLimits((), 0, 10)] * 3
    greedy = greedy_or_sample(runner(), limits, GenerationOptions())
    beam_one = beam(runner(), limits, GenerationOptions(strategy="beam", beam_size=1))
    assert [n[0].ids for n in beam_one] == [g.ids for g in greedy]
    assert [n[0].score for n in beam_one] == [g.score for g in greedy]
    options = GenerationOptions(strategy="beam", beam_size=5, num_hypotheses=5, length_penalty=1.0)
    for n_best in beam(runner(), limits, options):
        normalized = [h.score / (len(h.ids) + h.finished) for h in n_best]
        assert normalized == sorted(normalized, reverse=True) and len(n_best) == 5


class FakeAttentionRunner(FakeRunner):
    """A FakeRunner whose attention over a two-token source follows the previous token: after 2 it looks at the
    first position only, otherwise at both equally."""

    def step(self, previous):
        log_probs, _ = super().step(previous)
        attention = np.where((previous == 2)[:, None], [1.0, 0.0], [0.5, 0.5])  # (rows, 2)
        return log_probs, attention


def test_coverage_penalty_ranks_the_hypothesis_that_covers_the_source_first():
    """Two hypotheses: [2] is more probable (-0.1 + eos -0.01) but, after 2, attends to the first source position
    only, so that position gets 1.5 and the second 0.5; [3] (-0.5 - 0.01) spreads its attention, 1 and 1. The GNMT
    penalty β Σ log(min(coverage, 1)) costs [2] β log 0.5 and [3] nothing."""
    first = np.full(VOCAB, -20.0)
    first[[2, 3]] = [-0.1, -0.5]
    then_eos = np.full(VOCAB, -20.0)
    then_eos[EOS] = -0.01
    tables = [np.stack([first, then_eos])]
    limits = [RowLimits((), 0, 5)]

    def n_best(coverage_penalty):
        runner = FakeAttentionRunner(table_step(tables), {"t": np.zeros(1)}, {"rows": np.arange(1)})
        options = GenerationOptions(strategy="beam", beam_size=2, num_hypotheses=2, coverage_penalty=coverage_penalty)
        return beam(runner, limits, options, sources=[[7, EOS]])[0]

    plain, covered = n_best(0.0), n_best(1.0)
    assert [h.ids for h in plain] == [[2], [3]]
    assert [h.ids for h in covered] == [[3], [2]]
    assert [h.score for h in covered] == pytest.approx([-0.51, -0.11])
    penalty = CoveragePenalty(GenerationOptions(strategy="beam", coverage_penalty=1.0))
    assert [penalty(h, 2) for h in covered] == pytest.approx([0.0, np.log(0.5)])
    assert penalty(Candidate([], attention=[np.array([0.0, 1.0])]), 2) == pytest.approx(np.log(COVERAGE_FLOOR))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.lists(st.sampled_from([-3.0, -2.0, -1.0, -0.5]), min_size=VOCAB, max_size=VOCAB), min_size=1, max_size=6
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(1, VOCAB // 2),
    st.integers(2, 7),
)
def test_beam_over_ranked_candidates_equals_beam_over_full_log_probs(tables, beam_size, max_length):
    """Log-probs from four values, so ties are everywhere: the tie order (earlier beam, then lower id) must survive
    ranking in the graph."""
    tables = [np.array(t) for t in tables]
    options = GenerationOptions(strategy="beam", beam_size=beam_size, num_hypotheses=beam_size)
    limits = [RowLimits((), 0, max_length)] * len(tables)

    def state():
        return {"t": np.zeros(len(tables))}, {"rows": np.arange(len(tables))}

    full = beam(FakeRunner(table_step(tables), *state()), limits, options)
    ranked = beam(FakeRankingRunner(table_step(tables), *state(), top_k=2 * beam_size), limits, options)
    assert [[(h.ids, h.score, h.finished) for h in n] for n in ranked] == [
        [(h.ids, h.score, h.finished) for h in n] for n in full
    ]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-8, 0), min_size=VOCAB, max_size=VOCAB), st.integers(1, VOCAB), st.floats(0.05, 1.0))
def test_sampling_distribution_keeps_only_top_k_and_the_nucleus(log_probs, top_k, top_p):
    log_probs = np.array([log_probs]) - np.logaddexp.reduce(log_probs)
    probs = sampling_distribution(log_probs, GenerationOptions(strategy="sample", top_k=top_k))[0]
    kth_largest = np.sort(log_probs[0])[::-1][top_k - 1]
    assert np.all(probs[log_probs[0] < kth_largest] == 0) and abs(probs.sum() - 1) < 1e-9
    probs = sampling_distribution(log_probs, GenerationOptions(strategy="sample", top_p=top_p))[0]
    kept = np.sort(np.exp(log_probs[0])[probs > 0])
    assert kept.sum() >= top_p - 1e-9 and kept.sum() - kept[0] < top_p + 1e-9  # smallest set reaching top_p


@given(st.lists(st.integers(1, 50), max_size=40), st.integers(1, 9), st.one_of(st.none(), st.integers(1, 200)))
def test_length_sorted_batches_partition_the_inputs(lengths, size, max_tokens):
    batches = length_sorted_batches(lengths, size, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= size for b in batches)
    if max_tokens is not None:
        assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens for b in batches)
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda rows: st.tuples(
            st.lists(st.lists(st.integers(0, 3), min_size=rows, max_size=rows), min_size=1, max_size=7),
            st.lists(st.integers(1, 7), min_size=rows, max_size=rows),
            st.integers(0, 2**32 - 1),
        )
    )
)
def test_cutting_one_row_in_scalars_equals_cutting_rows_in_arrays(case):
    """The single-row fast path of cut_choices gives each row exactly what the vectorized cut gives it (ids,
    finished, and the score to the last bit), with eos anywhere, before, at and after each row's limit."""
    steps, max_lengths, seed = case
    ids = np.array(steps, dtype=np.int64)  # (steps, rows); token 2 plays eos
    log_probs = -np.random.default_rng(seed).random(ids.shape).astype(np.float32)
    limits = np.minimum(np.array(max_lengths), len(steps))  # a row never has more steps than were run
    arrays = cut_choices(
        np.concatenate([ids, ids], axis=1), np.concatenate([log_probs] * 2, axis=1), np.tile(limits, 2), 2
    )
    for row, vectorized in enumerate(arrays[: ids.shape[1]]):
        one = cut_one_row(ids[:, row].tolist(), log_probs[:, row].tolist(), int(limits[row]), 2)
        assert (one.ids, one.finished, one.score) == (vectorized.ids, vectorized.finished, vectorized.score)
