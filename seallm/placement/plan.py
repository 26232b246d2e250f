"""A placement plan: GPU groups (power-of-two, within one node) and the services on each."""

from __future__ import annotations

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
