"""The shared-group experiment: services of different sizes co-located on one GPU group.

Four services of different sizes and request shapes share one 4xA100 group under bursty
(Gamma CV 3) load, swept over the request rate: a 7B chat service (Azure conversation
lengths), an 8B completion service (short answers), a 13B writing service (short prompts,
long answers) and a 34B code service (half-length answers); `vllm` gets the same four GPUs as
one dedicated GPU per service. Two more sweeps: the same services with identical (Azure
conversation) lengths, where no service information distinguishes them; and long-context
services (three times longer prompts, as retrieval-augmented or summarization requests have)
on half the GPUs (one 2xA100 group), where KV memory is what limits the batch, to compare the
unified cache with static per-model partitions. Every system sees the same arrivals (several
seeds, averaged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from seallm.config import ClusterSpec, Config, ServiceSpec
from seallm.costmodel import CostModel
from seallm.metrics import GroupRow, ResultRow, group_rows, summarize
from seallm.placement import service_loads
from seallm.placement.colocate import place_colocated
from seallm.runtime.sim import simulate
from seallm.systems import get_system
from seallm.workload import WorkloadSpec

SYSTEMS = [
    "seallm",
    "seallm-db",
    "seallm-slack-keep-late",
    "seallm-slack-budget-prefill",
    "seallm-fcfs",
    "seallm-nodoubling",
    "seallm-lhat-request",
    "seallm-no-prefill-first",
    "seallm-static-kv",
    "seallm-oracle",
    "vllm",
]
# (service, model, lengths): distinct request shapes, scaled from the Azure conversation fit.
Services = tuple[tuple[str, str, str | None], ...]
DISTINCT: Services = (
    ("chat-7b", "llama-2-7b", "azure-conv"),
    ("complete-8b", "llama-3-8b", "azure-conv:output=0.2"),
    ("write-13b", "llama-2-13b", "azure-conv:prompt=0.3,output=3"),
    ("code-34b", "codellama-34b", "azure-conv:output=0.5"),
)
SAME_LENGTHS: Services = tuple((n, m, None) for n, m, _ in DISTINCT)
LONG_CONTEXT: Services = (
    ("chat-7b", "llama-2-7b", "azure-conv:prompt=3"),
    ("complete-8b", "llama-3-8b", "azure-conv:prompt=3,output=0.2"),
    ("write-13b", "llama-2-13b", "azure-conv:output=3"),
    ("code-34b", "codellama-34b", "azure-conv:prompt=3,output=0.5"),
)
METRICS = ["mean_normalized_latency", "p99_latency", "slo_attainment", "mean_ttft", "mean_slowdown"]


def shared_group_config(
    gpus: int = 4, rate: float = 1.0, duration_s: float = 600.0, services: Services = DISTINCT
) -> Config:
    return Config(
        name=f"shared-group-{gpus}gpu",
        cluster=ClusterSpec(device="a100-80gb", num_nodes=1, gpus_per_node=gpus),
        services=[ServiceSpec(name, model, lengths=lengths) for name, model, lengths in services],
        workload=WorkloadSpec(arrival="gamma", rate=rate, cv=3.0, alpha=0.7),
        duration_s=duration_s,
    ).validate()


@dataclass(frozen=True)
class Scenario:
    name: str
    gpus: int
    services: Services
    rates: tuple[float, ...]
    systems: tuple[str, ...]


@dataclass
class SweepPoint:
    scenario: Scenario
    rate: float
    rows: dict[str, ResultRow] = field(default_factory=dict)  # averaged over seeds
    kv_utilization: dict[str, float] = field(default_factory=dict)  # mean over groups, seeds
    preemptions: dict[str, float] = field(default_factory=dict)  # per run, mean over seeds


def run_point(sc: Scenario, rate: float, duration_s: float, seeds: Sequence[int]) -> SweepPoint:
    point = SweepPoint(sc, rate)
    per_seed: dict[str, list[ResultRow]] = {s: [] for s in sc.systems}
    groups: dict[str, list[GroupRow]] = {s: [] for s in sc.systems}
    for seed in seeds:
        cfg = shared_group_config(sc.gpus, rate, duration_s, sc.services)
        cfg.seed = seed
        records = cfg.records()
        cost = CostModel(cfg.cluster.device_spec)
        slo = {s.name: s.slo_scale for s in cfg.services}
        one_group = place_colocated(cfg, cost, service_loads(cfg))
        for name in sc.systems:
            system = get_system(name)
            # The experiment is about sharing one group: every co-locating system gets the
            # single-group plan; vllm keeps its dedicated one.
            plan = None if system.placement == "dedicated" else one_group
            res = simulate(cfg, system, records, cost, plan=plan)
            per_seed[name].append(
                summarize(res.requests, slo, res.end_time, name, res.wall_seconds)
            )
            groups[name] += group_rows(name, res.controller.engines.values(), res.end_time)
    for name, rows in per_seed.items():
        point.rows[name] = average_rows(rows)
        point.kv_utilization[name] = float(np.mean([g.kv_utilization for g in groups[name]]))
        point.preemptions[name] = sum(g.preemptions for g in groups[name]) / len(seeds)
    return point


def average_rows(rows: Sequence[ResultRow]) -> ResultRow:
    """Mean of each metric over seeds (counts summed)."""
    first = rows[0]
    values = {
        k: float(np.mean([getattr(r, k) for r in rows]))
        for k in first.to_dict()
        if isinstance(getattr(first, k), float)
    }
    counts = {k: sum(getattr(r, k) for r in rows) for k in ("requests", "completed", "rejected")}
    return ResultRow(system=first.system, service=first.service, **counts, **values)


def run_sweep(
    scenarios: Sequence[Scenario],
    duration_s: float,
    seeds: Sequence[int],
    on_point: Callable[[SweepPoint], None] | None = None,
) -> list[SweepPoint]:
    points = []
    for sc in scenarios:
        for rate in sc.rates:
            p = run_point(sc, rate, duration_s, seeds)
            points.append(p)
            if on_point:
                on_point(p)
    return points


def default_scenarios(quick: bool = False) -> list[Scenario]:
    kv = ("seallm", "seallm-db", "seallm-static-kv", "seallm-fcfs", "seallm-oracle")
    if quick:
        return [
            Scenario("distinct", 4, DISTINCT, (2.0,), tuple(SYSTEMS)),
            Scenario("memory-limited", 2, LONG_CONTEXT, (1.0,), kv),
        ]
    return [
        Scenario("distinct", 4, DISTINCT, (1.0, 2.0, 3.0, 4.0), tuple(SYSTEMS)),
        Scenario("same-lengths", 4, SAME_LENGTHS, (2.0, 4.0, 6.0), tuple(SYSTEMS)),
        Scenario("memory-limited", 2, LONG_CONTEXT, (0.5, 1.0, 1.5), kv),
    ]
