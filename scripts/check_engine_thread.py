"""Decode step time of SmolLM2 on this CPU: in the main thread, in an engine thread as the
server ran it before `seallm/executor/threads.py`, and in an engine thread set up by it.

    python scripts/check_engine_thread.py [--steps 60]

Each setup runs in a fresh process (PyTorch's thread pools are per process): load both
real models (SmolLM2-135M-Instruct and Gemma-3-270M, float32, one shared KV pool), prefill one
greedy request, then time `--steps` decode steps through the TorchExecutor; the median is
printed for each setup.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

SETUPS = {
    "main thread": "main",
    "engine thread (before: the main thread loaded with every thread)": "thread",
    "engine thread (reserve_for_engine, as seallm serve now runs)": "reserved",
}

CHILD = """
import statistics, sys, threading
import torch
from seallm.executor import threads
mode, steps = sys.argv[1], int(sys.argv[2])
if mode == "reserved":
    threads.reserve_for_engine()
from seallm.executor.base import Batch
from seallm.executor.torch import TorchExecutor, live_request
from seallm.kvcache import UnifiedKVCache
from seallm.models.loader import load_model
from seallm.models.sampling import SamplingParams
models = {m: load_model(m, progress=False) for m in ("smollm2-135m", "gemma-3-270m")}

def timed():
    kv = UnifiedKVCache({k: m.spec for k, m in models.items()}, 1, 512 * 2**20, 2 * 2**20)
    ex = TorchExecutor(models, kv, device="cpu")
    s = "smollm2-135m"
    prompt = models[s].encode("Tell me a long story about a cat. " * 3)
    params = SamplingParams(max_tokens=steps + 2, temperature=0.0, ignore_eos=True)
    r = live_request(0, s, prompt, params, 0.0)
    kv.allocate(r, r.context_tokens + 1)
    ex.execute(Batch(s, [r], []), 0.0)
    r.generated += 1
    out = []
    for _ in range(steps):
        kv.allocate(r, r.context_tokens + 1)
        out.append(ex.execute(Batch(s, [], [r]), 0.0).duration)
        r.generated += 1
    return statistics.median(out), torch.get_num_threads()

if mode == "main":
    ms, n = timed()
elif mode == "reserved":
    ms, n = threads.run_in_engine_thread(timed)
else:
    box = {}
    t = threading.Thread(target=lambda: box.update(r=timed()))
    t.start(); t.join()
    ms, n = box["r"]
print(f"{ms * 1e3:.2f} {n}")
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    print(f"{'setup':<66} {'decode ms':>9} {'threads':>7}")
    for label, mode in SETUPS.items():
        cmd = [sys.executable, "-c", CHILD, mode, str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        print(f"{label:<66} {float(out[0]):>9.2f} {out[1]:>7}")


if __name__ == "__main__":
    main()
