"""Adaptive replacement against no replacement and fixed intervals, on a shifting workload.

    python scripts/bench_replacement.py [--preset paper32-shift] [--duration 1800]
                                        [--intervals 60,120,300,600] [--rate-scale 1]
                                        [--on-move migrate|drain] [--load-source host|disk]

Every system sees the same arrivals: `seallm-noreplace` keeps the plan made for the long-run
mean rates, `seallm-fixed-interval` re-places every N seconds (each N of --intervals) whenever
the fresh plan is estimated better, and `seallm` re-places adaptively. Prints mean normalized
latency, P99 latency, SLO attainment, requests completed, re-placements (moves), seconds of
weight loading summed over the re-built groups, requests handed between groups, and the
replacement checks made. One core (the simulator is single-threaded).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import time

from seallm.config import Config
from seallm.costmodel import CostModel
from seallm.metrics import summarize
from seallm.presets import get_preset
from seallm.runtime.sim import simulate
from seallm.systems import get_system

HEADS = ["norm lat s/tok", "P99 lat s", "SLO", "done", "moves", "load s", "moved req", "checks"]


def run(cfg: Config, system: str, label: str, records, cost, rate_scale: float) -> list[str]:
    res = simulate(cfg, get_system(system), records, cost, rate_scale)
    row = summarize(res.requests, {s.name: s.slo_scale for s in cfg.services}, res.end_time, label)
    ctl = res.controller
    return [
        label,
        f"{row.mean_normalized_latency:.4f}",
        f"{row.p99_latency:.1f}",
        f"{row.slo_attainment:.3f}",
        f"{row.completed}/{row.requests}",
        str(len(ctl.moves)),
        f"{sum(m.load_s for m in ctl.moves):.0f}",
        str(sum(m.moved for m in ctl.moves)),
        str(len(ctl.checks)),
        f"{res.wall_seconds:.0f}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper32-shift")
    ap.add_argument("--duration", type=float, default=1800.0)
    ap.add_argument("--intervals", default="60,120,300,600", help="fixed intervals, seconds")
    ap.add_argument("--rate-scale", type=float, default=1.0)
    ap.add_argument("--on-move", choices=["migrate", "drain"], help="default: the config's")
    ap.add_argument("--load-source", choices=["host", "disk"], help="default: the config's")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cfg = get_preset(args.preset)
    cfg.duration_s = args.duration
    cfg.replacement = dataclasses.replace(
        cfg.replacement,
        on_move=args.on_move or cfg.replacement.on_move,
        load_source=args.load_source or cfg.replacement.load_source,
    )
    records = cfg.records(args.rate_scale)
    cost = CostModel(cfg.cluster.device_spec)
    rp = cfg.replacement
    print(
        f"{cfg.name}: {len(records)} requests over {cfg.duration_s:.0f} s"
        f" (rate x{args.rate_scale:g});"
        f" shifts at {[t for t in cfg.workload.shift_times if t < cfg.duration_s]},"
        f" bursts {[b for b in cfg.workload.bursts if b[0] < cfg.duration_s]};"
        f" weights load from {rp.load_source}, requests {rp.on_move} on a move"
    )
    print(f"{'system':<24}" + "".join(f"{h:>15}" for h in [*HEADS, "wall s"]))
    t0 = time.perf_counter()
    rows = [run(cfg, "seallm-noreplace", "seallm-noreplace", records, cost, args.rate_scale)]
    print(f"{rows[-1][0]:<24}" + "".join(f"{v:>15}" for v in rows[-1][1:]), flush=True)
    for every in [float(x) for x in args.intervals.split(",") if x.strip()]:
        fixed = dataclasses.replace(
            cfg, replacement=dataclasses.replace(rp, fixed_interval_s=every)
        )
        label = f"seallm-fixed-{every:g}s"
        rows.append(run(fixed, "seallm-fixed-interval", label, records, cost, args.rate_scale))
        print(f"{rows[-1][0]:<24}" + "".join(f"{v:>15}" for v in rows[-1][1:]), flush=True)
    rows.append(run(cfg, "seallm", "seallm (adaptive)", records, cost, args.rate_scale))
    print(f"{rows[-1][0]:<24}" + "".join(f"{v:>15}" for v in rows[-1][1:]), flush=True)
    adaptive, none = rows[-1], rows[0]
    print(f"adaptive vs none: {float(none[1]) / float(adaptive[1]):.2f}x lower normalized latency")
    if len(rows) < 3:
        return
    best = min(rows[1:-1], key=lambda r: float(r[1]))
    print(
        f"adaptive vs the best fixed interval ({best[0]}): "
        f"{float(best[1]) / float(adaptive[1]):.2f}x lower normalized latency, "
        f"with {adaptive[5]} moves against {best[5]} ({time.perf_counter() - t0:.0f} s in all)"
    )


if __name__ == "__main__":
    main()
