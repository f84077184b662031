"""Beam search, sampling, constraints, streaming, scoring and attention through the runtime, against PyTorch."""

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import s2s_runtime
from s2s_runtime import GenerationOptions
from tests.conftest import (
    EXTRA_OPTIONS,
    GRID,
    SOURCE_VOCAB,
    TARGET_VOCAB,
    grid_id,
    random_checkpoint,
    random_sources,
    write_bundle,
)

START, EOS = TARGET_VOCAB.id_of("bos"), TARGET_VOCAB.id_of("eos")


@torch.no_grad()
def torch_beam(model, source, beam, max_length, n_best):
    """A straightforward beam search over the PyTorch model, one input at a time, with the runtime's documented rule:
    extend every live beam by every token, visit the 2·beam best extensions (ties: earlier beam, lower id), eos →
    finished, others → live until beam live beams; stop at beam finished hypotheses or the max length."""
    ids = SOURCE_VOCAB.encode(source)
    states, statics = model.split(model.encode(torch.tensor([ids]), torch.tensor([len(ids)])))
    live, finished = [([], 0.0, states)], []
    while live:
        candidates = []
        for tokens, score, beam_states in live:
            previous = torch.tensor([tokens[-1] if tokens else START])
            log_probs, new_states, _ = model.decoder(previous, beam_states, statics)
            for token in range(log_probs.shape[1]):
                candidates.append((score + float(log_probs[0, token]), tokens, token, new_states))
        candidates.sort(key=lambda c: -c[0])
        next_live, survivors = [], 0
        for score, tokens, token, new_states in candidates[: 2 * beam]:
            if token == EOS:
                finished.append((tokens, score, True))
                continue
            if len(tokens) + 1 >= max_length:
                finished.append((tokens + [token], score, False))
            else:
                next_live.append((tokens + [token], score, new_states))
            survivors += 1
            if survivors == beam:
                break
        live = [] if sum(f[2] for f in finished) >= beam else next_live
    return sorted(finished, key=lambda f: -f[1])[:n_best]


@pytest.mark.parametrize("options", GRID[::8] + EXTRA_OPTIONS[:3], ids=grid_id)
def test_beam_search_equals_pytorch_reference(tmp_path, options):
    checkpoint = random_checkpoint(21, **options)
    model = s2s_runtime.load(write_bundle(checkpoint, tmp_path), device="cpu")
    sources = random_sources(5, seed=4, high=6)
    results = model.generate(sources, strategy="beam", beam_size=3, num_hypotheses=3, max_length=8)
    for source, result in zip(sources, results, strict=True):
        expected = torch_beam(checkpoint.model, source, 3, 8, 3)
        assert [h.ids for h in result.hypotheses] == [e[0] for e in expected]
        assert [h.score for h in result.hypotheses] == pytest.approx([e[1] for e in expected], abs=1e-4)
        assert [h.finished for h in result.hypotheses] == [e[2] for e in expected]


@pytest.fixture(scope="module")
def attention_model(tmp_path_factory):
    checkpoint = random_checkpoint(5, hidden_size=16, attention="general", bidirectional=True, bridge="linear")
    # The distribution test draws 3000 samples at once, past the default cap of 16 hypotheses.
    limits = s2s_runtime.RequestLimits(max_num_hypotheses=3000)
    return checkpoint, s2s_runtime.load(
        write_bundle(checkpoint, tmp_path_factory.mktemp("attn")), device="cpu", limits=limits
    )


def test_beam_one_equals_greedy_and_n_best_is_sorted(attention_model):
    _, model = attention_model
    sources = random_sources(12, seed=8)
    greedy = model.generate(sources)
    beam_one = model.generate(sources, strategy="beam", beam_size=1)
    assert [r.ids for r in beam_one] == [r.ids for r in greedy]
    assert [r.score for r in beam_one] == pytest.approx([r.score for r in greedy], abs=1e-6)
    for normalization, alpha in (("power", 0.0), ("power", 1.0), ("gnmt", 0.6)):
        for result in model.generate(
            sources,
            strategy="beam",
            beam_size=4,
            num_hypotheses=4,
            max_length=10,
            length_penalty=alpha,
            length_normalization=normalization,
        ):
            scores = [h.normalized_score for h in result.hypotheses]
            assert scores == sorted(scores, reverse=True) and len(scores) == 4
            assert all(h.finished or len(h.ids) == 10 for h in result.hypotheses)
            length = len(result.hypotheses[0].ids) + result.hypotheses[0].finished
            expected = result.score / (length**alpha if normalization == "power" else ((5 + length) / 6) ** alpha)
            assert result.normalized_score == pytest.approx(expected)


def test_coverage_penalty_reranks_the_beam_by_the_gnmt_formula(attention_model):
    """Each hypothesis's normalized score is its GNMT length-normalized score plus β Σ_i log(min(Σ_t a_t,i, 1))
    over its own attention, the n-best is sorted by it, and the penalty only re-ranks: the hypotheses are those of
    the same beam without it, and their attention is read whether or not it is returned."""
    _, model = attention_model
    sources = random_sources(12, seed=8)
    options = dict(
        strategy="beam", beam_size=4, num_hypotheses=4, max_length=10, length_penalty=0.6, length_normalization="gnmt"
    )
    plain = model.generate(sources, **options)
    covered = model.generate(sources, coverage_penalty=2.0, return_attention=True, **options)
    hidden = model.generate(sources, coverage_penalty=2.0, **options)
    reordered = 0
    for source, without, result, unreturned in zip(sources, plain, covered, hidden, strict=True):
        assert sorted(map(tuple, (h.ids for h in result.hypotheses))) == sorted(
            map(tuple, (h.ids for h in without.hypotheses))
        )
        for h in result.hypotheses:
            length = len(h.ids) + h.finished
            coverage = np.maximum(np.minimum(h.attention.sum(axis=0), 1.0), 1e-20)
            assert h.attention.shape == (length, len(source))  # this model appends no eos to sources
            assert h.normalized_score == pytest.approx(
                h.score / ((5 + length) / 6) ** 0.6 + 2.0 * np.log(coverage).sum(), abs=1e-5
            )
        scores = [h.normalized_score for h in result.hypotheses]
        assert scores == sorted(scores, reverse=True)
        assert [h.ids for h in unreturned.hypotheses] == [h.ids for h in result.hypotheses]
        assert [h.normalized_score for h in unreturned.hypotheses] == scores
        assert all(h.attention is None for h in unreturned.hypotheses)
        reordered += [h.ids for h in result.hypotheses] != [h.ids for h in without.hypotheses]
    assert reordered  # the penalty changed some ranking (else this test would prove nothing)


def test_alternatives_are_the_best_tokens_after_the_prefix_continued_greedily(attention_model):
    """Alternative r of an input equals greedy decoding with the prefix extended by the r-th most likely token at
    the branching position (by the model's forced-decoding log-probs), whatever else is in the batch."""
    _, model = attention_model
    sources, prefixes = ["abcd", "hij", "jjab"], ["ba", None, "c"]
    results = model.generate(sources, target_prefix=prefixes, strategy="alternatives", num_hypotheses=3, max_length=8)
    for source, prefix, result in zip(sources, prefixes, results, strict=True):
        prefix_tokens = list(prefix or "")
        branch = len(prefix_tokens)
        assert len(result.hypotheses) == 3
        for h in result.hypotheses:
            assert h.tokens[:branch] == prefix_tokens
            if len(h.tokens) == branch:  # eos was the alternative: the output ends with the prefix
                assert h.finished
                continue
            extended = prefix_tokens + h.tokens[branch : branch + 1]
            greedy = model.generate(source, target_prefix=[extended], max_length=8)[0]
            assert (h.ids, h.finished) == (greedy.ids, greedy.finished)
            assert h.score == pytest.approx(greedy.score, abs=1e-5)
        branch_log_probs = [model.score([source], [h.tokens])[0].log_probs[branch] for h in result.hypotheses]
        assert branch_log_probs == sorted(branch_log_probs, reverse=True)
    alone = model.generate("hij", strategy="alternatives", num_hypotheses=3, max_length=8)[0]
    assert [h.ids for h in alone.hypotheses] == [h.ids for h in results[1].hypotheses]


def test_sampling_is_seeded_and_independent_of_batch_composition(attention_model):
    _, model = attention_model
    alone = model.generate("abcd", strategy="sample", seed=7, num_hypotheses=3)[0]
    mixed = model.generate(["jj", "abcd", "hello"], strategy="sample", seed=7, num_hypotheses=3, max_batch_size=2)[1]
    assert [h.ids for h in mixed.hypotheses] == [h.ids for h in alone.hypotheses]
    other_seed = model.generate("abcd", strategy="sample", seed=8, num_hypotheses=3)[0]
    assert [h.ids for h in other_seed.hypotheses] != [h.ids for h in alone.hypotheses]
    unseeded = [model.generate("abcd", strategy="sample")[0].ids for _ in range(4)]
    assert len({tuple(u) for u in unseeded}) > 1


def test_top_k_never_leaves_the_k_most_likely(attention_model):
    checkpoint, model = attention_model
    sources = random_sources(6, seed=3)
    results = model.generate(sources, strategy="sample", seed=1, top_k=2, temperature=1.5, max_length=8)
    for source, result in zip(sources, results, strict=True):
        ids = SOURCE_VOCAB.encode(source)
        targets = result.ids + ([EOS] if result.finished else [])
        with torch.no_grad():
            log_probs = checkpoint.model(
                torch.tensor([ids]), torch.tensor([len(ids)]), torch.tensor([[START] + targets[:-1]])
            )[0]  # (steps, vocab)
        ranks = (log_probs > log_probs[range(len(targets)), targets][:, None]).sum(1)
        assert ranks.max() < 2


def test_temperature_one_sampling_follows_the_model_distribution(attention_model):
    checkpoint, model = attention_model
    draws = model.generate("abc", strategy="sample", seed=3, num_hypotheses=3000, max_length=1)[0].hypotheses
    first = np.array([h.ids[0] if h.ids else EOS for h in draws])
    ids = SOURCE_VOCAB.encode("abc")
    with torch.no_grad():
        log_probs = checkpoint.model(torch.tensor([ids]), torch.tensor([3]), torch.tensor([[START]]))[0, 0]
    probs = log_probs.double().exp().numpy()
    observed = np.bincount(first, minlength=len(probs)).astype(float)
    expected = probs * len(first)
    big = expected >= 5  # merge rare tokens into one cell, as the test requires
    observed = np.append(observed[big], observed[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    keep = expected > 0
    assert chisquare(observed[keep], expected[keep] * observed.sum() / expected[keep].sum()).pvalue > 0.001


def test_score_of_the_greedy_output_equals_its_score(reverse_model, attention_model):
    trained = s2s_runtime.load(reverse_model["bundle"], device="cpu")
    sources = ["hello", "abc", "runtime", "x", "seq"]
    results = trained.generate(sources)
    scored = trained.score(sources, [r.tokens for r in results], max_batch_size=2)
    for result, scores in zip(results, scored, strict=True):
        assert result.finished and scores.ids == result.ids and len(scores.log_probs) == len(result.ids) + 1
        assert scores.score == pytest.approx(result.score, abs=1e-4)
    _, untrained = attention_model  # hits the length limit: its score has no eos term
    result = untrained.generate("abcd", max_length=7)[0]
    assert not result.finished
    assert sum(untrained.score(["abcd"], [result.tokens])[0].log_probs[:-1]) == pytest.approx(result.score, abs=1e-4)


def test_streaming_yields_the_greedy_tokens(attention_model):
    _, model = attention_model
    streamed = list(model.generate_stream("hello", max_length=9))
    result = model.generate("hello", max_length=9)[0]
    assert [t.id for t in streamed] == result.ids and "".join(map(str, streamed)) == result.text
    forced = model.score(["hello"], [result.tokens])[0].log_probs  # per token, then eos
    assert [t.log_prob for t in streamed] == pytest.approx(forced[: len(streamed)], abs=1e-5)
    sampled = list(model.generate_stream("hello", strategy="sample", seed=4, max_length=9))
    assert [t.id for t in sampled] == model.generate("hello", strategy="sample", seed=4, max_length=9)[0].ids


def test_target_prefix_attention_and_unknown_replacement(attention_model):
    _, model = attention_model
    result = model.generate(["abcd", "hij"], target_prefix=["ba", None], return_attention=True, max_length=6)
    assert result[0].tokens[:2] == ["b", "a"]
    attention = result[0].attention
    assert attention.shape == (len(result[0].ids) + result[0].finished, 4)
    np.testing.assert_allclose(attention.sum(axis=1), 1.0, rtol=1e-5)
    replaced = model.generate("abcd", target_prefix=[["<unk>"]], replace_unknowns=True, return_attention=True)[0]
    assert replaced.ids[0] == TARGET_VOCAB.id_of("unk")
    assert replaced.tokens[0] == "abcd"[int(replaced.attention[0].argmax())]
    beam = model.generate("abcd", target_prefix=["ab"], strategy="beam", beam_size=3, num_hypotheses=3)[0]
    assert all(h.tokens[:2] == ["a", "b"] for h in beam.hypotheses)


def test_constraints_through_the_runtime(attention_model):
    _, model = attention_model
    for result in model.generate(
        random_sources(8, seed=9),
        strategy="beam",
        beam_size=3,
        min_length=5,
        max_length=9,
        no_repeat_ngram_size=2,
        suppress_tokens=["a", 5],
        repetition_penalty=1.3,
    ):
        assert 5 <= len(result.ids) <= 9
        assert TARGET_VOCAB.encode("a")[0] not in result.ids and 5 not in result.ids
        bigrams = list(itertools.pairwise(result.ids))
        assert len(bigrams) == len(set(bigrams))
    assert all(len(r.ids) <= 3 for r in model.generate(random_sources(4), max_length_ratio=0.5, max_length=3))


@pytest.mark.parametrize(
    "options, error, message",
    [
        (
            dict(strategy="beam", beam_size=2, num_hypotheses=3),
            ValueError,
            "num_hypotheses: 3 is more than beam_size 2",
        ),
        (dict(strategy="sample", top_p=0.0), ValueError, r"top_p: must be in \(0, 1\]"),
        (dict(strategy="sample", top_p=1.5), ValueError, "top_p"),
        (dict(strategy="sample", temperature=-1.0), ValueError, "temperature: must be > 0"),
        (dict(temperature=0.5), ValueError, "temperature: only used with strategy='sample'"),
        (dict(beam_size=4), ValueError, "beam_size: only used with strategy='beam'"),
        (dict(num_hypotheses=2), ValueError, "num_hypotheses: greedy decoding gives one hypothesis"),
        (dict(min_length=5, max_length=3), ValueError, "min_length: 5 is more than max_length 3"),
        (dict(suppress_tokens=["</s>"]), ValueError, "suppress_tokens: eos cannot be suppressed"),
        (dict(suppress_tokens=["zz"]), ValueError, "suppress_tokens: 'zz' is not in the target vocabulary"),
        (dict(strategy="nucleus"), ValueError, "strategy: 'nucleus'"),
        (dict(length_penalty=-1.0), ValueError, r"length_penalty: must be in \[0, 10\]"),
        (dict(top_k=3), ValueError, "top_k: only used with strategy='sample'"),
        (dict(coverage_penalty=0.5), ValueError, "coverage_penalty: only used with strategy='beam'"),
        (dict(strategy="beam", coverage_penalty=11.0), ValueError, r"coverage_penalty: must be in \[0, 10\]"),
        (dict(strategy="beam", coverage_penalty=float("inf")), ValueError, "coverage_penalty: must be finite"),
    ],
)
def test_invalid_options_name_the_option(attention_model, options, error, message):
    _, model = attention_model
    with pytest.raises(error, match=message):
        model.generate("abc", **options)


def test_invalid_streaming_and_prefix_uses(attention_model, small_bundle):
    _, model = attention_model
    with pytest.raises(ValueError, match="strategy: beam search is not streamable"):
        list(model.generate_stream("abc", strategy="beam"))
    with pytest.raises(ValueError, match=r"target_prefix: expected a list with one prefix \(or None\) per input \(2\)"):
        model.generate(["a", "b"], target_prefix=["x"])
    with pytest.raises(ValueError, match=r"target_prefix\[0\]: 4 tokens, more than the max length 3"):
        model.generate(["a"], target_prefix=["abcd"], max_length=3)
    with pytest.raises(ValueError, match=r"targets: 1 targets for 2 sources"):
        model.score(["a", "b"], ["x"])
    no_attention = s2s_runtime.load(
        write_bundle(random_checkpoint(1, hidden_size=16), small_bundle.parent / "plain"), device="cpu"
    )
    with pytest.raises(ValueError, match="return_attention: this model has no attention"):
        no_attention.generate("abc", return_attention=True)
    with pytest.raises(ValueError, match="coverage_penalty: this model has no attention"):
        no_attention.generate("abc", strategy="beam", coverage_penalty=0.2)
    assert GenerationOptions(strategy="sample", seed=3).seed == 3


def test_options_from_keywords_are_cached_by_type_and_still_validated():
    """The cache of validated option sets must not let an invalid value through because an equal valid one (1 for
    True, 2 for 2.0) was validated before, nor hand out options other than a fresh validation gives."""
    for kwargs in (
        dict(max_length=1),
        dict(strategy="beam", beam_size=2, num_hypotheses=2),
        dict(no_repeat_ngram_size=7),
    ):
        first, again = GenerationOptions.from_kwargs(kwargs), GenerationOptions.from_kwargs(dict(kwargs))
        assert first == again == dataclasses.replace(GenerationOptions(), **kwargs)
    base = GenerationOptions(strategy="beam", beam_size=3)
    assert GenerationOptions.from_kwargs(dict(num_hypotheses=2), base) == GenerationOptions(
        strategy="beam", beam_size=3, num_hypotheses=2
    )
    with pytest.raises(TypeError, match="max_length: expected an int, got bool"):
        GenerationOptions.from_kwargs(dict(max_length=True))
    with pytest.raises(TypeError, match="no_repeat_ngram_size: expected an int, got float"):
        GenerationOptions.from_kwargs(dict(no_repeat_ngram_size=7.0))
    with pytest.raises(TypeError, match="unknown generation option 'beam'"):
        GenerationOptions.from_kwargs(dict(beam=2))
    listed = GenerationOptions.from_kwargs(dict(suppress_tokens=["a", 5]))  # unhashable: validated without the cache
    assert listed.suppress_tokens == ("a", 5)
    with pytest.raises(TypeError, match="suppress_tokens"):
        GenerationOptions.from_kwargs(dict(suppress_tokens=[1.5]))
