"""Simulator speed: simulated seconds and requests per wall second on a preset.

    python scripts/bench_simulator.py [--preset paper32] [--duration 3600] [--system vllm]

Target (issue 2): one simulated hour of paper32 at its default load in at most 60 s of wall
time on one core. Threads are pinned to one (the simulator is single-threaded Python; this
keeps numpy from borrowing a second core).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

from seallm.costmodel import CostModel  # noqa: E402
from seallm.metrics import summarize  # noqa: E402
from seallm.presets import get_preset  # noqa: E402
from seallm.runtime.sim import simulate  # noqa: E402
from seallm.systems import resolve_systems  # noqa: E402
from seallm.workload import generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper32")
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--system", default="all")
    ap.add_argument("--rate-scale", type=float, default=1.0)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    cfg = get_preset(args.preset)
    cfg.duration_s = args.duration
    t0 = time.perf_counter()
    records = generate(
        cfg.workload, [(s.name, s.weight) for s in cfg.services], cfg.duration_s, cfg.seed, args.rate_scale
    )
    gen = time.perf_counter() - t0
    print(f"{cfg.name}: {len(records)} requests over {cfg.duration_s:.0f} s (generated in {gen:.2f} s)")
    print(f"{'system':<20}{'wall s':>9}{'sim s':>9}{'sim s/wall s':>14}{'req/wall s':>12}{'iterations':>12}{'steps':>9}{'done':>8}")
    slo = {s.name: s.slo_scale for s in cfg.services}
    for system in resolve_systems(args.system):
        res = simulate(cfg, system, records, CostModel(cfg.cluster.device_spec), args.rate_scale)
        engines = res.controller.engines.values()
        row = summarize(res.requests, slo, res.end_time, system.name)
        print(
            f"{system.name:<20}{res.wall_seconds:>9.1f}{res.end_time:>9.0f}"
            f"{res.end_time / res.wall_seconds:>14.0f}{len(records) / res.wall_seconds:>12.0f}"
            f"{sum(e.iterations for e in engines):>12}{sum(e.steps for e in engines):>9}"
            f"{row.completed:>8}"
        )


if __name__ == "__main__":
    main()
