"""Do the baselines reproduce their own papers' qualitative claims? (no straw men)

    python scripts/check_baselines.py [--duration 300]

AlpaServe (OSDI'23) claims that model-parallel groups shared by several models (statistical
multiplexing) beat dedicated per-model GPUs when traffic is bursty, and that the gain shrinks
as load rises and bursts flatten. This runs `alpaserve` and dedicated `vllm` (and `seallm`
for reference) on the same arrivals over burstiness (Gamma CV) and load, and prints each
system's mean normalized latency and SLO attainment.

    python scripts/check_baselines.py --drop [--duration 300] [--rates 1,2,4]

AlpaServe also drops a request it predicts will miss its SLO (placement/alpaserve_admission.py).
`--drop` measures what that is worth: on paper32 (seed 5) at each rate, alpaserve's plan served
with every request admitted, with the rule (median output, what alpaserve runs), and with
the rule told the true output lengths (a clairvoyant ceiling); SLO attainment (a dropped
request counts as a miss), the requests dropped and those left unfinished.
"""

from __future__ import annotations

import argparse
import dataclasses

import seallm.controller as controller
from seallm.costmodel import CostModel
from seallm.metrics import summarize
from seallm.placement import get_placement, service_loads
from seallm.placement.alpaserve_admission import SLODrop
from seallm.presets import get_preset
from seallm.runtime.sim import simulate
from seallm.systems import get_system

POINTS = [("h100x8", 8.0, 0.5), ("paper32", 8.0, 0.5), ("h100x8", 4.0, 1.0), ("paper32", 4.0, 2.0)]


def check_drop(duration: float, rates: list[float]) -> None:
    cfg = get_preset("paper32")
    cfg.duration_s, cfg.seed = duration, 5
    slo = {s.name: s.slo_scale for s in cfg.services}
    cost = CostModel(cfg.cluster.device_spec)
    system = get_system("alpaserve")
    rules = [("admit all", "all", None), ("slo-drop", "slo-drop", None)]
    rules.append(("clairvoyant", "slo-drop", "true"))
    print(f"{'rate':>5} {'admission':<12}{'SLO':>7}{'dropped':>9}{'unfinished':>11}")
    for rate in rates:
        records = cfg.records(rate)
        plan = get_placement("alpaserve")(cfg, cost, service_loads(cfg, rate))
        for label, admission, lengths in rules:
            get_admission = controller.get_admission
            if lengths is not None:
                controller.get_admission = lambda n, c, ld, r: SLODrop(c, ld, r, lengths="true")
            try:
                spec = dataclasses.replace(system, admission=admission)
                res = simulate(cfg, spec, records, cost, rate_scale=rate, plan=plan)
            finally:
                controller.get_admission = get_admission
            row = summarize(res.requests, slo, res.end_time, label)
            left = row.requests - row.completed - row.rejected
            print(
                f"{rate:>4g}x {label:<12}{row.slo_attainment:>7.3f}{row.rejected:>9}{left:>11}",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=300.0)
    ap.add_argument("--drop", action="store_true", help="what alpaserve's dropping is worth")
    ap.add_argument("--rates", default="1,2,4", help="rate scales for --drop")
    args = ap.parse_args()
    if args.drop:
        check_drop(args.duration, [float(r) for r in args.rates.split(",")])
        return
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
