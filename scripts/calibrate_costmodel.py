"""Fit the cost model's efficiency factors to the measured kernel profiles.

    python scripts/calibrate_costmodel.py [--profiles DIR]     (default ../shared/profiles)

For each GPU in the profiles (a100, h100), one `Calibration` is fitted to every row of every
model and tensor-parallel degree together (no per-model factors). The loss is the mean absolute
log error (robust, scale-free) of each profiled op, summed over the ops, plus twice the same
for the per-layer sum, with rows weighted so that every octave of the token count weighs the
same (the profiles sample large counts densely; decode batches are small). The search is a
coordinate descent in log space with a shrinking step (numpy only); efficiencies are capped
at 1. The constants these profiles cannot inform (attention, all-reduce, CPU overheads) are
kept from the current `CALIBRATIONS` entry. The printed `Calibration(...)` literals are
pasted into `seallm/calibration.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seallm.calibration import (
    CALIBRATIONS,
    DEFAULT_CALIBRATION,
    PROFILE_OPS,
    Calibration,
    layer_time,
    profile_device,
    read_profiles,
)
from seallm.costmodel import LINEAR_OPS, CostModel

FITTED = (
    "launch_overhead",
    "gemm_launch_overhead",
    "gemm_compute_eff",
    "gemm_pad_m",
    "gemm_pad_n",
    "gemm_memory_eff",
    "row_bandwidth",
    "norm_memory_eff",
    "act_memory_eff",
    "rope_memory_eff",
    "add_memory_eff",
)
NOT_EFFICIENCIES = {
    "launch_overhead",
    "gemm_launch_overhead",
    "gemm_pad_m",
    "gemm_pad_n",
    "row_bandwidth",
}


class Problem:
    """The rows of one GPU, grouped by (model, tp) so each group is one vectorized call."""

    def __init__(self, rows):
        self.device = profile_device(rows[0].gpu)
        groups = defaultdict(list)
        for r in rows:
            groups[(r.model, r.tp)].append(r)
        self.groups = []
        for (model, tp), rs in groups.items():
            tokens = np.array([r.num_tokens for r in rs], dtype=np.float64)
            meas = {op: np.array([r.times[op] for r in rs]) for op in PROFILE_OPS}
            meas["layer"] = layer_time(meas)
            self.groups.append((model, tp, tokens, meas))
        # Rows are dense at large token counts (multiples of 8 up to 4096); weight them so
        # that every octave of M counts the same, or the decode regime would barely count.
        tokens = np.concatenate([g[2] for g in self.groups])
        octave = np.floor(np.log2(tokens))
        counts = {o: (octave == o).sum() for o in np.unique(octave)}
        self.weights = np.array([1.0 / counts[o] for o in octave])
        self.weights /= self.weights.mean()

    def errors(self, cal: Calibration) -> dict[str, np.ndarray]:
        """op -> log(pred / measured) over all rows."""
        cm = CostModel(self.device, cal)
        out = defaultdict(list)
        for model, tp, tokens, meas in self.groups:
            mc = cm.for_model(model, tp)
            pred = mc.linear_op_times(tokens)
            pred["layer"] = layer_time(pred)
            pred["emb"] = mc.embedding_time(tokens)
            for op, p in pred.items():
                out[op].append(np.log(p / meas[op]))
        return {op: np.concatenate(v) for op, v in out.items()}

    def loss(self, cal: Calibration) -> float:
        err = self.errors(cal)
        mae = {op: float((self.weights * np.abs(e)).mean()) for op, e in err.items()}
        return sum(mae[op] for op in LINEAR_OPS) + 2.0 * mae["layer"]


def coordinate_search(f, x: dict[str, float], names, caps, step=0.5, tol=1e-3):
    """Minimize f(x) by multiplicative moves on one coordinate at a time."""
    best = f(x)
    while step > tol:
        improved = False
        for name in names:
            for factor in (1 + step, 1 / (1 + step)):
                trial = dict(x)
                trial[name] = min(x[name] * factor, caps.get(name, math.inf))
                val = f(trial)
                if val < best - 1e-12:
                    x, best, improved = trial, val, True
        if not improved:
            step /= 2
    return x, best


def fit(rows) -> tuple[Calibration, Problem]:
    prob = Problem(rows)
    base = CALIBRATIONS.get(prob.device.name, DEFAULT_CALIBRATION)
    # Start from the generic defaults (not from the current fit) so the result is
    # reproducible, and from a few wave-quantization paddings: the loss has local minima.
    start = {k: getattr(DEFAULT_CALIBRATION, k) for k in (*FITTED, "emb_memory_eff")}
    caps = {k: 1.0 for k in start if k not in NOT_EFFICIENCIES}

    def make(x):
        return dataclasses.replace(base, **x)

    best, best_loss = start, math.inf
    for pad_m in (64.0, 256.0):
        for pad_n in (64.0, 512.0):
            x0 = {**start, "gemm_pad_m": pad_m, "gemm_pad_n": pad_n}
            x, loss = coordinate_search(lambda x: prob.loss(make(x)), x0, FITTED, caps)
            if loss < best_loss:
                best, best_loss = x, loss
    x = best
    x, _ = coordinate_search(
        lambda x: float((prob.weights * np.abs(prob.errors(make(x))["emb"])).mean()),
        x,
        ["emb_memory_eff"],
        caps,
    )
    return make(x), prob


def fmt(v: float) -> str:
    """3 significant digits, as a float literal."""
    text = f"{v:.3g}".replace("e-0", "e-").replace("e+0", "e").replace("e+", "e")
    return text if any(c in text for c in ".e") else text + ".0"


def main() -> int:
    default = Path(__file__).resolve().parents[2] / "shared" / "profiles"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", type=Path, default=default)
    args = ap.parse_args()
    rows = read_profiles(args.profiles)
    if not rows:
        print(f"no profiles under {args.profiles}", file=sys.stderr)
        return 1
    by_gpu = defaultdict(list)
    for r in rows:
        by_gpu[r.gpu].append(r)
    for gpu, gpu_rows in sorted(by_gpu.items()):
        cal, prob = fit(gpu_rows)
        err = prob.errors(cal)
        print(f"# {gpu}: {len(gpu_rows)} rows, loss {prob.loss(cal):.4f}; median |rel err| per op:")
        for op, e in err.items():
            print(f"#   {op:26s} {np.median(np.abs(np.expm1(e))):6.1%}")
        print(f'    "{prob.device.name}": Calibration(')
        for field in dataclasses.fields(cal):
            print(f"        {field.name}={fmt(getattr(cal, field.name))},")
        print("    ),")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
