"""Profile catalog models on a GPU and measure the roofline cost model's error against it.

    python scripts/profile_gpu.py [--models llama-2-7b,llama-3-8b] [--device cuda]
        [--device-spec h100-80gb] [--out results/gpu] [--repeats 5] [--layers N]

Each model is built at its catalog shape (Llama architecture) with random bf16 weights on the
device: an iteration's time does not depend on the weights' values, and no checkpoint can be
downloaded here. The real engine (TorchExecutor over the paged KV pool, the code that serves)
is timed through `seallm.bench.profiler` over a grid of prefill, decode and mixed batches,
and the profile is written in `seallm profile`'s format (`seallm simulate --profile` reads
it). Every measured point is then predicted by the roofline `CostModel` of `--device-spec`
(with its calibration) and by the profile's own fit; the script prints both errors per point
and their medians per kind, and writes `profile-<device>.json` and `roofline-error.json`.

`--busy` also runs a few decode iterations under the PyTorch profiler and sums the GPU's
kernel time: how much of an iteration the GPU works, against the wall time and the roofline.

`--layers N` truncates each model to N layers (a CPU smoke run: `--device cpu --layers 2`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from seallm.bench.profiler import Grid, profile_models
from seallm.catalog import DEVICES, MODELS
from seallm.costmodel import CostModel
from seallm.models.loader import random_model
from seallm.profiled import Measurement
from seallm.specs import ModelSpec

ROOT = Path(__file__).resolve().parent.parent

# Larger batches and prompts than the CPU grid: a GPU's iteration time stays flat far longer.
GPU_GRID = Grid(
    prefill=((1, 32), (1, 128), (1, 512), (1, 1024), (1, 2048), (4, 256), (4, 1024), (16, 256)),
    decode=tuple((b, c) for b in (1, 4, 16, 32, 64, 128, 256) for c in (128, 512, 2048)),
    mixed=((1, 512, 16), (1, 1024, 64), (2, 256, 128)),
)


def hf_config(spec: ModelSpec, layers: int | None) -> dict:
    """A Hugging Face Llama config of the catalog shape."""
    return {
        "model_type": "llama",
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": layers or spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "rms_norm_eps": 1e-5,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "max_position_embeddings": spec.max_context,
        "tie_word_embeddings": False,
    }


def catalog_model(name: str, device: str, dtype: torch.dtype, layers: int | None):
    return random_model(name, hf_config(MODELS[name], layers), device, dtype)


def fits(grid: Grid, kv_tokens: int) -> Grid:
    """The grid's points whose KV fits the pool."""
    return Grid(
        tuple(p for p in grid.prefill if p[0] * (p[1] + 8) <= kv_tokens),
        tuple(p for p in grid.decode if p[0] * (p[1] + 16) <= kv_tokens),
        tuple(p for p in grid.mixed if p[0] * p[1] + p[2] * 80 <= kv_tokens),
    )


BUSY_POINTS = ((1, 512), (16, 512), (64, 512), (256, 128))  # (decode requests, context each)


def gpu_busy(lm, pool_gib: float, page_mib: float, kv_tokens: int, steps: int = 5) -> list[dict]:
    """Wall time, GPU kernel time and kernel launches of decode iterations (PyTorch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    from seallm.bench.profiler import ModelTimer

    timer = ModelTimer(lm.name, lm, pool_gib * 2**30, int(page_mib * 2**20))
    out = []
    for n, c in (p for p in BUSY_POINTS if p[0] * (p[1] + 16) <= kv_tokens):
        reqs = timer.new_requests(n, c)
        timer.step(reqs, [])
        timer.step([], reqs)  # warm
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            walls = [timer.step([], reqs) for _ in range(steps)]
        events = prof.key_averages()
        kernel_us = sum(e.self_device_time_total for e in events)
        launches = sum(e.count for e in events if e.key.startswith("cudaLaunchKernel"))
        out.append(
            {
                "n_decode": n,
                "context": c,
                "wall_ms": 1e3 * statistics.median(walls),
                "gpu_busy_ms": kernel_us / 1e3 / steps,
                "kernel_launches": launches // steps,
            }
        )
        timer.free(reqs)
    return out


def kind(m: Measurement) -> str:
    if m.prefill_tokens and m.n_decode:
        return "mixed"
    return "prefill" if m.prefill_tokens else "decode"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="llama-2-7b,llama-3-8b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--device-spec", default="h100-80gb", choices=sorted(DEVICES))
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--pool-gib", type=float, default=32.0)
    ap.add_argument("--page-mib", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="the small CPU grid")
    ap.add_argument("--busy", action="store_true", help="GPU kernel time of decode iterations")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "gpu")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dtype = getattr(torch, args.dtype)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    roofline = CostModel(DEVICES[args.device_spec])
    rows, busy = [], []
    profiles = []
    for name in args.models.split(","):
        t0 = time.perf_counter()
        lm = catalog_model(name, args.device, dtype, args.layers)
        spec = lm.spec
        kv_tokens = int(args.pool_gib * 2**30 // spec.kv_bytes_per_token)
        grid = fits(Grid.quick() if args.quick else GPU_GRID, kv_tokens)
        print(f"{name}: built in {time.perf_counter() - t0:.1f} s, {kv_tokens} KV tokens")
        prof = profile_models(
            {name: lm},
            args.device,
            grid,
            args.repeats,
            pool_bytes=args.pool_gib * 2**30,
            page_bytes=int(args.page_mib * 2**20),
        )
        profiles.extend(prof.profiles)
        mp = prof.profiles[0]
        # The roofline prices the catalog model (its layer count unless truncated).
        cost = roofline.for_model(dataclasses.replace(MODELS[name], num_layers=spec.num_layers), 1)
        for m in mp.measurements:
            pred = cost.iteration_time(
                m.prefill_tokens, m.prefill_sq_sum, m.n_decode, m.decode_ctx_sum
            )
            rows.append(
                {
                    "model": name,
                    "kind": kind(m),
                    "prefill_tokens": m.prefill_tokens,
                    "n_decode": m.n_decode,
                    "decode_ctx_sum": m.decode_ctx_sum,
                    "measured_ms": round(m.seconds * 1e3, 3),
                    "roofline_ms": round(pred * 1e3, 3),
                    "roofline_error": round(pred / m.seconds - 1, 4),
                    "fit_error": round(mp.predict(m) / m.seconds - 1, 4),
                }
            )
        if args.busy:
            for b in gpu_busy(lm, args.pool_gib, args.page_mib, kv_tokens):
                m = Measurement(0, 0.0, b["n_decode"], b["n_decode"] * b["context"], 0.0)
                b["roofline_ms"] = 1e3 * cost.iteration_time(0, 0.0, m.n_decode, m.decode_ctx_sum)
                busy.append({"model": name, **b})
        del lm
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    meta = {
        "gpu": device_name,
        "torch": torch.__version__,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "weights": "random (timing only)",
    }
    from seallm.profiled import Profile

    Profile(args.device_spec, profiles, meta).save(args.out / f"profile-{args.device_spec}.json")
    print(
        f"\n{'model':<12} {'kind':<8} {'pf tok':>6} {'dec':>4} {'ctx sum':>8} "
        f"{'measured ms':>11} {'roofline ms':>11} {'roofline err':>12} {'fit err':>8}"
    )
    for r in rows:
        print(
            f"{r['model']:<12} {r['kind']:<8} {r['prefill_tokens']:>6} {r['n_decode']:>4} "
            f"{r['decode_ctx_sum']:>8} {r['measured_ms']:>11.3f} {r['roofline_ms']:>11.3f} "
            f"{r['roofline_error']:>+12.1%} {r['fit_error']:>+8.1%}"
        )
    summary = {}
    print("\nmedian |error| per model and kind (roofline / profile fit):")
    for name in args.models.split(","):
        for k in ("prefill", "decode", "mixed", "all"):
            sel = [r for r in rows if r["model"] == name and (k == "all" or r["kind"] == k)]
            if not sel:
                continue
            roof = statistics.median(abs(r["roofline_error"]) for r in sel)
            fit = statistics.median(abs(r["fit_error"]) for r in sel)
            summary[f"{name}/{k}"] = {"points": len(sel), "roofline": roof, "fit": fit}
            print(f"  {name:<12} {k:<8} {len(sel):>3} points  {roof:6.1%}  {fit:6.1%}")
    if busy:
        print("\ndecode iterations under the profiler (ms; launches per iteration):")
        print(
            f"  {'model':<12} {'batch':>5} {'ctx':>5} {'wall':>7} {'GPU busy':>8} "
            f"{'roofline':>8} {'launches':>8}"
        )
        for b in busy:
            print(
                f"  {b['model']:<12} {b['n_decode']:>5} {b['context']:>5} {b['wall_ms']:>7.2f} "
                f"{b['gpu_busy_ms']:>8.2f} {b['roofline_ms']:>8.2f} {b['kernel_launches']:>8}"
            )
    doc = {
        "meta": {**meta, "device_spec": args.device_spec},
        "summary": summary,
        "points": rows,
        "busy": busy,
    }
    (args.out / "roofline-error.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
