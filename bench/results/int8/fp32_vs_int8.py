import sys, time, numpy as np, s2s_runtime, random, json
from s2s_export.data import cmudict_pairs
words = sorted({p.source for p in cmudict_pairs("dev")}); random.Random(0).shuffle(words)
out = {}
for path in sys.argv[1:]:
    m = s2s_runtime.load(path, device="cpu")
    for batch in (1, 64):
        n = 256 if batch == 1 else 1024
        batches = [words[i:i+batch] for i in range(0, n, batch)]
        for b in batches[:3]: m.generate(b, max_batch_size=batch)
        ts = []
        for _ in range(5):
            t = time.perf_counter(); tok = 0
            for b in batches:
                for r in m.generate(b, max_batch_size=batch): tok += len(r.ids) + r.finished
            ts.append((time.perf_counter() - t) / tok * 1e6)
        out[f"{path.split('/')[-1]}-{batch}"] = min(ts)
print(json.dumps(out))
