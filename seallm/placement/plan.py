"""A placement plan: GPU groups (power-of-two, within one node) and the services on each."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from seallm.config import ClusterSpec


@dataclass(frozen=True)
class GroupPlan:
    id: int
    node: int
    first_gpu: int  # index within the node
    size: int  # GPUs = tensor-parallel degree
    services: tuple[str, ...]
    kv_shares: tuple[float, ...] = ()  # static KV: share of the pool per service (default equal)
    # MuxServe: each service's decode SM share, as its placement chose them (`muxserve.py`)
    decode_shares: tuple[float, ...] = ()


@dataclass
class Plan:
    groups: list[GroupPlan] = field(default_factory=list)

    def hosts(self, service: str) -> list[GroupPlan]:
        return [g for g in self.groups if service in g.services]

    def validate(self, cluster: ClusterSpec) -> Plan:
        used: set[tuple[int, int]] = set()
        for g in self.groups:
            if g.size & (g.size - 1) or not 1 <= g.size <= cluster.gpus_per_node:
                raise ValueError(f"group {g.id}: size {g.size} is not a power of two <= node size")
            if not 0 <= g.node < cluster.num_nodes:
                raise ValueError(f"group {g.id}: node {g.node} outside the cluster")
            gpus = {(g.node, g.first_gpu + i) for i in range(g.size)}
            if g.first_gpu + g.size > cluster.gpus_per_node or gpus & used:
                raise ValueError(f"group {g.id}: GPUs overlap or leave node {g.node}")
            used |= gpus
        return self


def pack_groups(sizes: list[tuple[int, tuple[str, ...]]], cluster: ClusterSpec) -> Plan | None:
    """Place groups of power-of-two sizes onto nodes, largest first (first-fit decreasing,
    which never fails while the total fits, since every size divides the node size).
    Returns None when they do not fit."""
    free = [0] * cluster.num_nodes  # next free GPU index per node (groups aligned)
    groups: list[GroupPlan] = []
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i][0])
    for i in order:
        size, services = sizes[i]
        node = next(
            (n for n in range(cluster.num_nodes) if free[n] + size <= cluster.gpus_per_node), None
        )
        if node is None:
            return None
        groups.append(GroupPlan(len(groups), node, free[node], size, services))
        free[node] += size
    return Plan(groups)


@dataclass(frozen=True)
class PlanScore:
    """How a plan served a short simulation: smaller is better in each field."""

    shortfall: float  # max(0, Δ - SLO attainment)
    normalized_latency: float  # mean, s/token
    latency_rate: float  # Σ latency per second of arrivals (request-seconds per second)

    @property
    def key(self) -> tuple[float, float]:
        return (self.shortfall, self.normalized_latency)


# Scores a plan by running it (a short simulation, as AlpaServe's placement does), under
# given per-service rates (requests/s), or the deployment's expected ones when None.
PlanEvaluator = Callable[[Plan, Mapping[str, float] | None], PlanScore]
