"""Two-stage placement solve time as the cluster and the number of services grow.

    python scripts/bench_placement.py [--sizes 2:6,4:12,8:24,12:36,16:48] [--no-check]

Each size is NODES:SERVICES, with 8 A100-80GB GPUs per node and services cycling through
paper32's models at 2 req/s each (power-law popularity, Gamma CV 2). The solve includes
what the simulator's placement does: the finalists' short simulation check
(`placement_check_s` of seallm on the expected workload); `--no-check` times the estimator
stages alone.
Targets (issue 4): at most 10 s for paper32 (4:12), at most 60 s at 128 GPUs and 48 services.
"""

from __future__ import annotations

import argparse
import time

from seallm.config import ClusterSpec, Config, ServiceSpec
from seallm.costmodel import CostModel
from seallm.placement import service_loads
from seallm.placement.two_stage import cluster_splits, place_two_stage
from seallm.presets import PAPER32_MODELS
from seallm.runtime.sim import simulation_evaluator
from seallm.systems import get_system
from seallm.workload import WorkloadSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="2:6,4:12,8:24,12:36,16:48")
    ap.add_argument("--no-check", action="store_true", help="time the estimator stages only")
    args = ap.parse_args()
    print(f"{'GPUs':>6}{'services':>10}{'splits':>8}{'solve s':>9}{'groups':>8}")
    for size in args.sizes.split(","):
        nodes, n = (int(x) for x in size.split(":"))
        models = [PAPER32_MODELS[i % len(PAPER32_MODELS)] for i in range(n)]
        cfg = Config(
            name="scale",
            cluster=ClusterSpec("a100-80gb", nodes, 8),
            services=[ServiceSpec(f"s{i:02d}-{m}", m) for i, m in enumerate(models)],
            workload=WorkloadSpec(arrival="gamma", rate=2.0 * n, cv=2.0, alpha=0.9),
        ).validate()
        cost = CostModel(cfg.cluster.device_spec)
        t0 = time.perf_counter()
        check = None if args.no_check else simulation_evaluator(cfg, get_system("seallm"), cost)
        plan = place_two_stage(cfg, cost, service_loads(cfg), evaluate=check)
        solve = time.perf_counter() - t0
        splits = sum(1 for _ in cluster_splits(cfg.cluster))
        print(f"{nodes * 8:>6}{n:>10}{splits:>8}{solve:>9.1f}{len(plan.groups):>8}", flush=True)


if __name__ == "__main__":
    main()
