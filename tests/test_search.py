import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from s2s_runtime.batching import length_sorted_batches
from s2s_runtime.search import greedy_search

VOCAB, EOS, START = 6, 0, 1


def table_step(tables):
    """A fake decoder whose log-probs depend only on (row id kept in state, step), so compaction bugs show."""
    def step(previous, states, statics):
        rows, t = statics["rows"], states["state.t"]
        log_probs = np.stack([tables[r][min(int(k), len(tables[r]) - 1)] for r, k in zip(rows, t)])
        return log_probs, {"state.t": t + 1}
    return step


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.lists(st.floats(-5, 0), min_size=VOCAB, max_size=VOCAB), min_size=1, max_size=6),
                min_size=1, max_size=5), st.integers(1, 8))
def test_greedy_search_matches_a_row_by_row_reference(tables, max_length):
    tables = [np.array(t) for t in tables]
    batch = len(tables)
    hypotheses = greedy_search(table_step(tables), {"state.t": np.zeros(batch)}, {"rows": np.arange(batch)},
                               {"state.t": 0, "rows": 0}, start_id=START, eos_id=EOS,
                               max_lengths=np.full(batch, max_length))
    for row, hypothesis in enumerate(hypotheses):
        ids, score, finished = reference_greedy(tables[row], max_length)
        assert hypothesis.ids == ids
        assert abs(hypothesis.score - score) < 1e-9
        assert hypothesis.finished == finished


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


@given(st.lists(st.integers(1, 50), max_size=40), st.integers(1, 9))
def test_length_sorted_batches_partition_the_inputs(lengths, size):
    batches = length_sorted_batches(lengths, size)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= size for b in batches)
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)
