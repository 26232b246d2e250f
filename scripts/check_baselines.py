"""Do the baselines reproduce their own papers' qualitative claims? (no straw men)

    python scripts/check_baselines.py [--duration 300]

AlpaServe (OSDI'23) claims that model-parallel groups shared by several models (statistical
multiplexing) beat dedicated per-model GPUs when traffic is bursty, and that the gain shrinks
as load rises and bursts flatten. This runs `alpaserve` and dedicated `vllm` (and `seallm`
for reference) on the same arrivals over burstiness (Gamma CV) and load, and prints each
system's mean normalized latency and SLO attainment.
"""

from __future__ import annotations

import argparse
import dataclasses

from seallm.metrics import summarize
from seallm.presets import get_preset
from seallm.runtime.sim import simulate
from seallm.systems import get_system

POINTS = [("h100x8", 8.0, 0.5), ("paper32", 8.0, 0.5), ("h100x8", 4.0, 1.0), ("paper32", 4.0, 2.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=300.0)
    args = ap.parse_args()
    systems = ["vllm", "alpaserve", "seallm"]
    print(
        f"{'preset':<9}{'CV':>4}{'rate':>6}"
        + "".join(f"{s + ' norm':>16}{'SLO':>7}" for s in systems)
    )
    for preset, cv, rate_scale in POINTS:
        cfg = get_preset(preset)
        cfg.duration_s = args.duration
        cfg.workload = dataclasses.replace(cfg.workload, cv=cv)
        records = cfg.records(rate_scale)
        slo = {s.name: s.slo_scale for s in cfg.services}
        cells = []
        for name in systems:
            res = simulate(cfg, get_system(name), records, rate_scale=rate_scale)
            row = summarize(res.requests, slo, res.end_time, name)
            cells.append(f"{row.mean_normalized_latency:>16.4f}{row.slo_attainment:>7.3f}")
        print(f"{preset:<9}{cv:>4g}{rate_scale:>5g}x" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
