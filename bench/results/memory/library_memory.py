import os, sys, random, threading, gc
import s2s_runtime
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) // 1024
model = s2s_runtime.load("g2p-en", device="cpu")
print("idle", rss())
rng = random.Random(0)
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
def call(length):
    words = ["".join(rng.choice("abcdefghij") for _ in range(length)) for _ in range(64)]
    model.generate(words, strategy="beam", beam_size=16, max_length=4)
if threads == 1:
    for length in range(48, 54):
        call(length); print(length, rss())
else:
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(call, range(48, 48 + 2 * threads)))
    print("after pool", rss())
gc.collect(); print("end", rss())
