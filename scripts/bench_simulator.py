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

import argparse
import time

from seallm.costmodel import CostModel
from seallm.metrics import summarize
from seallm.presets import get_preset
from seallm.runtime.sim import simulate
from seallm.systems import resolve_systems
from seallm.workload import generate


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
        cfg.workload,
        [(s.name, s.weight) for s in cfg.services],
        cfg.duration_s,
        cfg.seed,
        args.rate_scale,
    )
    gen = time.perf_counter() - t0
    print(
        f"{cfg.name}: {len(records)} requests over {cfg.duration_s:.0f} s ({gen:.2f} s to generate)"
    )
    heads = ["wall s", "sim s", "sim s/wall s", "req/wall s", "iterations", "steps", "done"]
    print(f"{'system':<20}" + "".join(f"{h:>13}" for h in heads))
    slo = {s.name: s.slo_scale for s in cfg.services}
    for system in resolve_systems(args.system):
        res = simulate(cfg, system, records, CostModel(cfg.cluster.device_spec), args.rate_scale)
        engines = res.controller.engines.values()
        row = summarize(res.requests, slo, res.end_time, system.name)
        values = [
            f"{res.wall_seconds:.1f}",
            f"{res.end_time:.0f}",
            f"{res.end_time / res.wall_seconds:.0f}",
            f"{len(records) / res.wall_seconds:.0f}",
            sum(e.iterations for e in engines),
            sum(e.steps for e in engines),
            row.completed,
        ]
        print(f"{system.name:<20}" + "".join(f"{v:>13}" for v in values))


if __name__ == "__main__":
    main()
