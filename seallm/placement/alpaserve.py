"""AlpaServe's placement (Li et al., "AlpaServe: Statistical Multiplexing with Model
Parallelism for Deep Learning Serving", OSDI'23), for the `alpaserve` baseline.

What the paper describes, and how it is followed here:
- Algorithm 2 enumerates group partitions of the cluster with their parallel configurations;
  here, uniform partitions of every power-of-two group size (within a node), since AlpaServe
  partitions into equal groups per model bucket and paper32's models share one bucket.
- Algorithm 1 is a greedy, simulator-guided selective replication: starting from empty
  groups, repeatedly place the (model, group) replica that most increases the SLO attainment
  of the workload, until no replica fits or none increases it (ties, once every SLO looks
  met, are broken by estimated latency, so idle GPUs still get useful replicas). Here each
  greedy step is guided by seallm's analytical estimator (scoring every candidate by
  simulation would take minutes per step), and the simulator picks between the partitions:
  each candidate plan is simulated on the first minute of the workload and the highest SLO
  attainment wins. Models the greedy has not placed yet are placed first.
- Serving is FCFS across the models co-located on a group, with static per-model KV; the
  dispatcher sends a request to the least-loaded replica (`systems.py`).
"""

from __future__ import annotations

from dataclasses import replace

from seallm.config import Config, ConfigError
from seallm.costmodel import CostModel
from seallm.metrics import slo_met
from seallm.placement.demand import ServiceLoad
from seallm.placement.estimator import Estimator
from seallm.placement.plan import GroupPlan, Plan
from seallm.placement.two_stage import Assignment

GUIDE_SECONDS = 60.0  # workload simulated to choose between partitions


def _objective(a: Assignment, g: int | None = None, s: str | None = None) -> tuple[float, float]:
    """(rate-weighted estimated SLO attainment, unplaced services counting as 0; minus the
    estimated mean normalized latency). The latency breaks ties once the estimate sees every
    SLO met, so free GPUs still get the replicas that help most."""
    shortfall, norm = a.score_with(g, s)  # delta = 1: shortfall = Σ rate (1 - attainment)
    placed = {t for m in a.members for t in m} | ({s} if s else set())
    total = sum(ld.rate for ld in a.loads.values()) or 1.0
    return ((sum(a.loads[t].rate for t in placed) - shortfall) / total, -norm)


def greedy(sizes: list[int], est: Estimator, loads: dict[str, ServiceLoad]) -> Assignment:
    a = Assignment(sizes, est, loads, delta=1.0)
    current = _objective(a)
    while True:
        # Every model must be served: while some are unplaced, only they are candidates.
        unplaced = [s for s in loads if not any(s in m for m in a.members)]
        options = [
            (_objective(a, g, s), -g, s)
            for g in range(len(sizes))
            for s in unplaced or loads
            if a.fits(g, s)
        ]
        best = max(options, default=None)
        if best is None or (not unplaced and best[0] <= current):
            return a
        a.add(-best[1], best[2])
        current = best[0]


def uniform_plans(
    config: Config, cost: CostModel, loads: dict[str, ServiceLoad]
) -> list[tuple[int, Plan]]:
    """Algorithm 2's candidates: for every power-of-two group size (within a node), the
    uniform partition of the cluster with the greedy's replicas; those that hold every
    service."""
    est = Estimator(config, cost, loads)
    cluster = config.cluster
    plans = []
    size = 1
    while size <= cluster.gpus_per_node:
        per_node = cluster.gpus_per_node // size
        a = greedy([size] * (per_node * cluster.num_nodes), est, dict(loads))
        if all(any(s in m for m in a.members) for s in loads):
            groups = [
                GroupPlan(i, i // per_node, (i % per_node) * size, size, tuple(m))
                for i, m in enumerate(a.members)
                if m
            ]
            plans.append(
                (size, Plan([replace(g, id=k) for k, g in enumerate(groups)]).validate(cluster))
            )
        size *= 2
    return plans


def place_alpaserve(config: Config, cost: CostModel, loads: dict[str, ServiceLoad]) -> Plan:
    from seallm.runtime.sim import simulate  # the simulator drives this placement
    from seallm.systems import get_system

    guide = replace(config, duration_s=min(GUIDE_SECONDS, config.duration_s), drain_s=30.0)
    records = guide.records()
    slo = {s.name: s.slo_scale for s in config.services}
    best: tuple[float, Plan] | None = None
    for _, plan in uniform_plans(config, cost, loads):
        res = simulate(guide, get_system("alpaserve"), records, cost, plan=plan)
        met = sum(slo_met(r, slo[r.service]) for r in res.requests) / max(1, len(res.requests))
        if best is None or met > best[0]:
            best = (met, plan)
    if best is None:
        raise ConfigError("services: no uniform partition of the cluster holds every service")
    return best[1]
