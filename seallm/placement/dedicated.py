"""Dedicated placement (the `vllm` baseline): every service on GPU groups of its own.

Each service gets the smallest power-of-two group that holds its weights and a KV reserve;
the remaining GPUs go, one replica at a time, to the service with the highest estimated
busy fraction per replica, so groups are sized to load as an operator of one vLLM
deployment per model would size them.
"""

from __future__ import annotations

from seallm.config import Config, ConfigError
from seallm.costmodel import CostModel
from seallm.placement.demand import ServiceLoad, busy_fraction, min_group_size
from seallm.placement.plan import Plan, pack_groups


def place_dedicated(config: Config, cost: CostModel, loads: dict[str, ServiceLoad]) -> Plan:
    cluster = config.cluster
    size: dict[str, int] = {}
    for i, s in enumerate(config.services):
        g = min_group_size(s.model_spec, config)
        if g is None:
            raise ConfigError(
                f"services[{i}].model: {s.model} ({s.model_spec.weight_bytes / 1e9:.0f} GB of "
                f"weights) does not fit a node of {cluster.gpus_per_node} x {cluster.device} "
                f"with a {config.engine.min_kv_fraction:.0%} KV reserve"
            )
        size[s.name] = g
    need = sum(size.values())
    if need > cluster.num_gpus:
        raise ConfigError(
            f"cluster: dedicated placement needs {need} GPUs for one group per service, "
            f"the cluster has {cluster.num_gpus}"
        )
    demand = {n: busy_fraction(loads[n], cost, size[n], config.engine) for n in size}
    replicas = {n: 1 for n in size}
    while True:
        for n in sorted(size, key=lambda n: -demand[n] / replicas[n]):
            trial = {**replicas, n: replicas[n] + 1}
            if _pack(size, trial, config) is not None:
                replicas = trial
                break
        else:
            break
    plan = _pack(size, replicas, config)
    assert plan is not None
    return plan.validate(cluster)


def _pack(size: dict[str, int], replicas: dict[str, int], config: Config) -> Plan | None:
    groups = [(size[n], (n,)) for n in size for _ in range(replicas[n])]
    if sum(g for g, _ in groups) > config.cluster.num_gpus:
        return None
    return pack_groups(groups, config.cluster)
