"""Benchmark: the cost model's per-layer linear-op times against the measured GPU profiles.

    python scripts/check_costmodel.py [--profiles DIR]      (default ../shared/profiles)

For every (model, GPU, tensor-parallel size) in the profiles: the number of rows, the median
and p90 relative error |pred - meas| / meas of the per-layer linear time (QKV, O, fused
gate+up, down, activation, the two norms, rope and two residual adds), its median over the rows
of at most 256 tokens (the decode regime; the profiles sample large counts densely), and the
median error of each of the four matmuls. The model shapes come from the CSVs' own columns.
Exits 1 when any median per-layer error exceeds the 15% target (2 when there are no profiles).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seallm.calibration import layer_time, profile_device, read_profiles
from seallm.costmodel import CostModel

TARGET = 0.15
MATMULS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
HEADER = [
    "model",
    "gpu",
    "tp",
    "rows",
    "median err",
    "p90 err",
    "<=256 tok",
    "qkv",
    "o",
    "up",
    "down",
]


def evaluate(rows) -> list[dict]:
    groups = defaultdict(list)
    for r in rows:
        groups[(r.model.name, r.gpu, r.tp)].append(r)
    models = {}
    results = []
    for (name, gpu, tp), rs in sorted(groups.items()):
        cm = models.setdefault(gpu, CostModel(profile_device(gpu)))
        mc = cm.for_model(rs[0].model, tp)
        err = defaultdict(list)
        for r in rs:
            pred = mc.linear_op_times(r.num_tokens)
            err["layer"].append(abs(layer_time(pred) / layer_time(r.times) - 1))
            if r.num_tokens <= 256:
                err["small"].append(err["layer"][-1])
            for op in MATMULS:
                err[op].append(abs(pred[op] / r.times[op] - 1))
        results.append(
            {
                "model": name,
                "gpu": gpu,
                "tp": tp,
                "rows": len(rs),
                "median": float(np.median(err["layer"])),
                "p90": float(np.percentile(err["layer"], 90)),
                "small": float(np.median(err["small"])) if err["small"] else float("nan"),
                **{op: float(np.median(err[op])) for op in MATMULS},
            }
        )
    return results


def cells(r: dict) -> list[str]:
    pct = [f"{r[k]:.1%}" for k in ("median", "p90", "small", *MATMULS)]
    return [r["model"], r["gpu"], str(r["tp"]), str(r["rows"]), *pct]


def show(results: list[dict]) -> None:
    title = f"cost model vs measured per-layer linear time (target: median <= {TARGET:.0%})"
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        lines = [HEADER, *(cells(r) for r in results)]
        widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
        for line in lines:
            print(
                "  ".join(
                    c.rjust(w) if i >= 2 else c.ljust(w)
                    for i, (c, w) in enumerate(zip(line, widths, strict=True))
                )
            )
        return
    table = Table(title=title)
    for i, h in enumerate(HEADER):
        table.add_column(h, justify="left" if i < 2 else "right")
    for r in results:
        row = cells(r)
        if r["median"] > TARGET:
            row[4] = f"[red]{row[4]}[/red]"
        table.add_row(*row)
    Console(width=120).print(table)


def main() -> int:
    default = Path(__file__).resolve().parents[2] / "shared" / "profiles"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", type=Path, default=default)
    args = ap.parse_args()
    rows = read_profiles(args.profiles)
    if not rows:
        print(f"no profiles under {args.profiles}", file=sys.stderr)
        return 2
    results = evaluate(rows)
    show(results)
    worst = max(results, key=lambda r: r["median"])
    print(
        f"worst median error: {worst['median']:.1%} ({worst['model']}, {worst['gpu']}, "
        f"tp={worst['tp']}); overall rows: {len(rows)}"
    )
    return 1 if worst["median"] > TARGET else 0


if __name__ == "__main__":
    raise SystemExit(main())
