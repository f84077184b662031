import json, random, subprocess, sys, time, urllib.request
workers = sys.argv[1]
proc = subprocess.Popen([sys.executable, "-m", "s2s_runtime.cli", "serve", "g2p-en", "--device", "cpu", "--port", "8765", "--batch-workers", workers, "--log-level", "warning"])
def rss():
    with open(f"/proc/{proc.pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) // 1024
for _ in range(100):
    try:
        urllib.request.urlopen("http://127.0.0.1:8765/readyz"); break
    except Exception:
        time.sleep(0.2)
idle = rss()
rng = random.Random(0)
peak = idle
for length in range(48, 65):
    words = ["".join(rng.choice("abcdefghij") for _ in range(length)) for _ in range(64)]
    body = json.dumps({"inputs": words, "options": {"strategy": "beam", "beam_size": 16, "max_length": 4}}).encode()
    r = urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:8765/v1/generate", data=body, headers={"content-type": "application/json"}), timeout=120)
    assert r.status == 200
    peak = max(peak, rss())
time.sleep(1)
metrics = urllib.request.urlopen("http://127.0.0.1:8765/metrics").read().decode()
idle_buffers = next(l for l in metrics.splitlines() if l.startswith("s2s_idle_buffer_bytes"))
print(f"workers={workers} idle={idle} MB peak={peak} MB after={rss()} MB {idle_buffers}")
proc.terminate(); proc.wait()
