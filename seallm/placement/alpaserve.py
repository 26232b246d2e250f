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
  dispatcher sends a request to the least-loaded replica (`systems.py`), and the group
  drops a request it predicts will miss its SLO, as AlpaServe's controller does
  (`alpaserve_admission.py`, which gives what that is worth).

Pipeline parallelism is left out, on these figures. AlpaServe also splits each group of g
GPUs as pp stages x g/pp-way intra-op parallelism (`enumerate_group_configs` in
alpa_serve/placement_policy/model_parallelism.py: every factor pp of g) and keeps the split
with the highest simulated SLO attainment. Here groups are tensor-parallel only;
`python scripts/check_alpaserve_pp.py [--simulate]` prices pp x tp from the cost model (a
stage = num_layers / pp layers on tp GPUs, + a step overhead and the activations' NVLink
transfer per extra stage; an iteration runs as up to pp micro-batches in flight):
- Decode is slower per token, at every batch up to 64: a token crosses the stages one after
  another, each streaming its layers' weights with g/pp GPUs. ms per token at batch 1 and
  64, TP vs the best split: llama-2-7b on 4 GPUs 5.2 / 9.9 (TP4) vs 8.4 / 12.9 (2 x 2); on
  8 GPUs 4.1 / 7.0 (TP8) vs 6.2 / 8.9 (2 x 4); codellama-34b on 8 9.6 / 12.3 vs 15.9 /
  17.8; llama-2-70b on 8 17.3 / 21.5 vs 29.2 / 32.0. Prefill of 512 tokens: 15 vs 25 ms
  (7B, 4 GPUs), 69 vs 115 ms (70B, 8 GPUs).
- Throughput with the pipeline full is a little higher, as pp x tp avoids TP's all-reduces:
  the requests/s one group serves within the SLO (AlpaServe's `compute_capability`, with
  batching), best split / TP: 0.98-1.00 on 2 GPUs, 0.93 (70B) to 1.06 on 4, 1.09-1.12 on 8.
- AlpaServe's own selection (each uniform partition's greedy plan, every split, simulated on
  paper32, seed 5, 300 s; SLO attainment) picks pure TP at every rate, even when PP is priced
  as an ideal pipeline (every iteration split into pp equal micro-batches, no transfers):
  x1: 4 GPUs TP 0.932, 2 x 2 0.793 (ideal 0.808), 4 x 1 0.504 (0.534); 8 GPUs TP 0.856,
  2 x 4 0.661 (0.694), 4 x 2 0.291 (0.377), 8 x 1 0.115 (0.243). x2: 4 GPUs TP 0.914, 2 x 2
  0.608 (0.831), 4 x 1 0.303 (0.628); 8 GPUs TP 0.763, 2 x 4 0.644 (0.682), 4 x 2 0.365
  (0.549), 8 x 1 0.099 (0.394). Requests of the co-located models queue behind each other
  (one model per step), so a group's SLO attainment follows its per-token latency more than
  its peak throughput.
So leaving PP out does not make alpaserve pessimistic here: with the weights streamed once
per decode token, only intra-op (tensor) parallelism shortens a token; pipelining adds only
throughput (at most 12%, what TP's all-reduces cost), which does not turn into attainment.
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
