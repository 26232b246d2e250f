"""A simple shared placement: every node is one group, services spread over them.

Stand-in for seallm's two-stage placement until it lands: each node becomes one group of
tensor-parallel size = GPUs per node; services are assigned largest first to the group with
the least estimated load that still holds their weights and the KV reserve. Static KV shares
(for the static-partition ablation) follow each service's expected KV traffic.
"""

from __future__ import annotations

from seallm.config import Config, ConfigError
from seallm.costmodel import CostModel
from seallm.placement.demand import ServiceLoad, busy_fraction
from seallm.placement.plan import GroupPlan, Plan


def place_colocated(config: Config, cost: CostModel, loads: dict[str, ServiceLoad]) -> Plan:
    cluster, eng = config.cluster, config.engine
    size = cluster.gpus_per_node
    capacity = (
        size * cluster.device_spec.memory_bytes * (eng.memory_utilization - eng.min_kv_fraction)
    )
    weights = [0.0] * cluster.num_nodes
    busy = [0.0] * cluster.num_nodes
    members: list[list[str]] = [[] for _ in range(cluster.num_nodes)]
    for name in sorted(loads, key=lambda n: -loads[n].model.weight_bytes):
        load = loads[name]
        fits = [
            g for g in range(cluster.num_nodes) if weights[g] + load.model.weight_bytes <= capacity
        ]
        if not fits:
            raise ConfigError(
                f"services: {name} ({load.model.name}) does not fit any node's group next to "
                f"the services already placed; add nodes or remove services"
            )
        g = min(fits, key=lambda g: (busy[g], weights[g]))
        members[g].append(name)
        weights[g] += load.model.weight_bytes
        busy[g] += busy_fraction(load, cost, size, eng)
    groups = []
    for node, services in enumerate(members):
        if not services:
            continue
        demand = [
            loads[s].rate
            * loads[s].model.kv_bytes_per_token
            * (loads[s].mean_prompt + loads[s].mean_output)
            for s in services
        ]
        total = sum(demand) or 1.0
        shares = tuple(max(d / total, 0.02) for d in demand)
        groups.append(GroupPlan(len(groups), node, 0, size, tuple(services), shares))
    return Plan(groups).validate(cluster)
