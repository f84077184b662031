import sys, time, json, numpy as np
import s2s_runtime
from s2s_export.data import cmudict_pairs
m = s2s_runtime.load(sys.argv[1], device="cpu")
words = sorted({p.source for p in cmudict_pairs("dev")})
import random; random.Random(0).shuffle(words)
out = {}
for strategy, batch in (("greedy", 1), ("greedy", 8), ("greedy", 64), ("greedy", 256), ("beam", 1), ("beam", 64)):
    opts = {} if strategy == "greedy" else {"strategy": "beam", "beam_size": 4}
    n = 256 if batch < 64 else 512
    if strategy == "beam" and batch == 1: n = 64
    sources = words[:n]
    batches = [sources[i:i + batch] for i in range(0, n, batch)]
    for b in batches[:3]: m.generate(b, max_batch_size=batch, **opts)
    ts = []
    for _ in range(5):
        t = time.perf_counter(); tokens = 0
        for b in batches:
            for r in m.generate(b, max_batch_size=batch, **opts): tokens += len(r.ids) + r.finished
        ts.append((time.perf_counter() - t) / tokens * 1e6)
    out[f"{strategy}-{batch}"] = float(np.min(ts))
print(json.dumps(out))
