"""How well does the placement estimator predict the simulator? (one group, rising load)

    python scripts/check_estimator.py [--duration 600] [--cv 2]

For single-service and shared groups on A100s, at rising request rates, this prints the
estimator's utilization and mean normalized latency next to what the simulator measures for
`seallm` on that group. The estimator only has to rank plans, but a group it calls
comfortable must not be saturated in simulation.
"""

from __future__ import annotations

import argparse

from seallm.config import ClusterSpec, Config, ServiceSpec
from seallm.costmodel import CostModel
from seallm.metrics import summarize
from seallm.placement import service_loads
from seallm.placement.colocate import place_colocated
from seallm.placement.estimator import Estimator
from seallm.runtime.sim import simulate
from seallm.systems import get_system
from seallm.workload import WorkloadSpec

CASES = [
    ("70b on 4", 4, ("llama-2-70b",), (0.8, 1.4, 2.0, 2.8)),
    ("7b on 1", 1, ("llama-2-7b",), (1.0, 2.0, 3.0, 4.0)),
    ("13b on 2", 2, ("llama-2-13b",), (1.0, 2.0, 3.0, 4.0)),
    ("7b+13b on 2", 2, ("llama-2-7b", "llama-2-13b"), (1.0, 2.0, 3.0, 4.0)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--cv", type=float, default=2.0)
    args = ap.parse_args()
    print(
        f"{'case':<12} {'req/s':>6} {'est util':>8} {'est norm':>9} {'sim norm':>9} "
        f"{'sim/est':>8} {'sim SLO':>8} {'est SLO':>8}"
    )
    for name, gpus, models, rates in CASES:
        for rate in rates:
            cfg = Config(
                name=name,
                cluster=ClusterSpec(device="a100-80gb", num_nodes=1, gpus_per_node=gpus),
                services=[ServiceSpec(f"s{i}-{m}", m) for i, m in enumerate(models)],
                workload=WorkloadSpec(arrival="gamma", rate=rate, cv=args.cv, alpha=0.0),
                duration_s=args.duration,
            ).validate()
            cost = CostModel(cfg.cluster.device_spec)
            loads = service_loads(cfg)
            est = Estimator(cfg, cost, loads).group(gpus, [(n, ld.rate) for n, ld in loads.items()])
            w = sum(ld.rate for ld in loads.values())
            est_norm = sum(e.normalized_latency * e.rate for e in est.services) / w
            est_slo = sum(e.slo_attainment * e.rate for e in est.services) / w
            plan = place_colocated(cfg, cost, loads)
            res = simulate(cfg, get_system("seallm"), cfg.records(), cost, plan=plan)
            slo = {s.name: s.slo_scale for s in cfg.services}
            row = summarize(res.requests, slo, res.end_time, "seallm", res.wall_seconds)
            print(
                f"{name:<12} {rate:>6.2f} {est.utilization:>8.2f} {est_norm:>9.4f} "
                f"{row.mean_normalized_latency:>9.4f} "
                f"{row.mean_normalized_latency / est_norm:>8.2f} "
                f"{row.slo_attainment:>8.3f} {est_slo:>8.3f}"
            )


if __name__ == "__main__":
    main()
