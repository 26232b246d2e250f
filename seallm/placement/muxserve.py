"""MuxServe's placement (Duan et al., "MuxServe: Flexible Spatial-Temporal Multiplexing for
Multiple LLM Serving", ICML'24, §3.2, Algorithm 1; its `PlacementOptimizer.optimize`), for the
`muxserve` baseline.

What the paper describes, and how it is followed here:
- *LLM parallel candidate generation*: the mesh sizes an LLM can run on are the power-of-two
  sizes that hold its weights with a KV reserve (memory decides here; MuxServe also drops
  sizes its profile lacks).
- *Enumeration*: every way to split each node into power-of-two meshes, combined over the
  nodes (`two_stage.cluster_splits`, the same family MuxServe enumerates), skipping
  partitions with more meshes than LLMs or without a mesh large enough for the largest LLM.
- *Greedy placement*: LLMs in decreasing order of computation demand (arrival rate x the
  FLOPs of a mean request, MuxServe's rate x model scale), each onto the mesh where it
  increases the estimated throughput most, subject to memory (weights plus the KV reserve).
  Ties (common at light load, where every mesh serves its whole rate) go to the smaller
  mesh, then to the mesh with the least computation per GPU so far, then the most free
  memory (MuxServe's mesh order). Each LLM is placed once; MuxServe does not replicate.
- *Objective*: the rate-weighted estimated throughput, sum_i rate_i x served_i / sum rate
  (MuxServe's `total_tpt`); the partition with the highest wins (the first on ties).

The throughput estimate of a mesh (MuxServe's `estimate_mesh_throughput`, rebuilt on seallm's
cost model and its spatial-sharing model, `executor/spatial.py`): each co-located LLM i gets a
share of the mesh's KV memory in proportion to rate_i x its per-token KV size (MuxServe's
split), which bounds its decode batch B_i. Serving a fraction a of every rate, with decode
rounds at r per second (B_i = a rate_i out_i / r), needs per second: compute a(sum rate_i
prefill_C,i + sum rate_i out_i c1_i) + r sum c0_i <= 1 and likewise for memory bandwidth
(decode costs c0 + c1 B per round, from the cost model); each LLM's decode stream
r (w0_i + w1_i B_i) <= 1; the one-at-a-time prefill stream a sum rate_i prefill_i <= 1.
All grow with r, so r is the smallest the batch caps allow, and the largest a <= 1 that
meets every bound has a closed form. The mesh serves a x rate_i of every LLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seallm.config import Config, ConfigError
from seallm.costmodel import CostModel
from seallm.executor.spatial import Demand, ResourceCost
from seallm.placement.demand import ServiceLoad, kv_bytes, min_group_size
from seallm.placement.plan import GroupPlan, Plan
from seallm.placement.two_stage import cluster_splits

BATCH_PROBE = 64  # the second batch size the linear decode cost is fitted at
TIE = 1e-9  # relative difference below which two throughputs are equal


@dataclass(frozen=True)
class LLMCost:
    """What one LLM asks of a mesh of a given size, per request and per decode round."""

    rate: float
    out: float  # mean output tokens
    kv_per_request: float  # bytes at the mean context (prompt + output)
    kv_per_token: float
    prefill: Demand  # one mean prompt's prefill
    round0: Demand  # a decode round of batch B costs round0 + B x round1 (time, compute,
    round1: Demand  # memory), a line through batch 1 and BATCH_PROBE


class MeshEstimator:
    def __init__(self, config: Config, cost: CostModel, loads: dict[str, ServiceLoad]):
        self.config = config
        self.cost = cost
        self.loads = loads
        self._llm: dict[tuple[str, int], LLMCost] = {}

    def llm(self, service: str, size: int) -> LLMCost:
        key = (service, size)
        if key not in self._llm:
            ld = self.loads[service]
            rc = ResourceCost(self.cost, ld.model, size)
            p, o = max(1, int(ld.mean_prompt)), max(1.0, ld.mean_output)
            ctx = p + int(o / 2)
            one = _fields(rc.decode_at(1, ctx))
            wide = _fields(rc.decode_at(BATCH_PROBE, BATCH_PROBE * ctx))
            slope = [(w - a) / (BATCH_PROBE - 1) for w, a in zip(wide, one, strict=True)]
            start = [a - b for a, b in zip(one, slope, strict=True)]
            kvt = ld.model.kv_bytes_per_token
            self._llm[key] = LLMCost(
                ld.rate, o, kvt * (p + o), kvt, rc.prefill([p]), Demand(*start), Demand(*slope)
            )
        return self._llm[key]

    def fits(self, size: int, services: list[str]) -> bool:
        """Weights plus the minimum KV reserve fit the mesh's memory."""
        mem = size * self.config.cluster.device_spec.memory_bytes
        pool = kv_bytes([self.loads[s].model for s in services], size, self.config)
        return pool >= self.config.engine.min_kv_fraction * mem

    def served(self, size: int, services: list[str]) -> float:
        """Fraction a of every co-located LLM's rate the mesh serves (1: all of it)."""
        llms = [self.llm(s, size) for s in services]
        active = [x for x in llms if x.rate > 0]
        if not active:
            return 1.0
        pool = kv_bytes([self.loads[s].model for s in services], size, self.config)
        base = sum(x.rate * x.kv_per_token for x in active)
        # Rounds per second at a = 1 when every decode batch is at its KV (or batch) cap.
        rho = 0.0
        for x in active:
            cap = min(
                pool * x.rate * x.kv_per_token / base / x.kv_per_request,
                self.config.engine.max_batch_size,
            )
            if cap < 1:
                return 0.0  # not one request of it fits its KV share
            rho = max(rho, x.rate * x.out / cap)
        need = max(
            sum(x.rate * (x.prefill.compute + x.out * x.round1.compute) for x in active)
            + rho * sum(x.round0.compute for x in active),
            sum(x.rate * (x.prefill.memory + x.out * x.round1.memory) for x in active)
            + rho * sum(x.round0.memory for x in active),
            max(rho * x.round0.time + x.rate * x.out * x.round1.time for x in active),
            sum(x.rate * x.prefill.time for x in active),
        )
        return min(1.0, 1.0 / need) if need > 0 else 1.0

    def throughput(self, size: int, services: list[str]) -> float:
        """sum_i rate_i x served_i (MuxServe's objective before its normalization)."""
        a = self.served(size, services)
        return sum(self.loads[s].rate ** 2 * a for s in services)


@dataclass
class Mesh:
    node: int
    size: int
    services: list[str] = field(default_factory=list)
    demand: float = 0.0  # computation placed so far (FLOP/s)
    throughput: float = 0.0


def _fields(d: Demand) -> tuple[float, float, float]:
    return float(d.time), float(d.compute), float(d.memory)


def computation_demand(load: ServiceLoad) -> float:
    """FLOP/s the LLM's traffic asks for: rate x 2 x parameters x tokens of a mean request."""
    return load.rate * 2 * load.model.num_params * (load.mean_prompt + load.mean_output)


def placement_order(loads: dict[str, ServiceLoad]) -> list[str]:
    """LLMs in decreasing order of computation demand (MuxServe places these first)."""
    return sorted(loads, key=lambda s: (-computation_demand(loads[s]), s))


def greedy(
    split: tuple[tuple[int, ...], ...], est: MeshEstimator, order: list[str]
) -> list[Mesh] | None:
    """Place every LLM (in `order`) on the mesh of `split` it raises the throughput most."""
    meshes = [Mesh(node, size) for node, sizes in enumerate(split) for size in sizes]
    mem = est.config.cluster.device_spec.memory_bytes
    for s in order:
        best: tuple[tuple[float, ...], Mesh, float] | None = None
        for m in meshes:
            trial = [*m.services, s]
            if not est.fits(m.size, trial):
                continue
            tpt = est.throughput(m.size, trial)
            gain = tpt - m.throughput
            free = m.size * mem - sum(est.loads[t].model.weight_bytes for t in trial)
            key = (_rounded(gain), -m.size, -m.demand / m.size, free)
            if best is None or key > best[0]:
                best = (key, m, tpt)
        if best is None:
            return None
        _, m, tpt = best
        m.services.append(s)
        m.throughput = tpt
        m.demand += computation_demand(est.loads[s])
    return meshes


def _rounded(x: float) -> float:
    """x with its last bits dropped, so that equal gains computed differently tie."""
    return float(f"{x:.9e}")


def place_muxserve(config: Config, cost: CostModel, loads: dict[str, ServiceLoad]) -> Plan:
    est = MeshEstimator(config, cost, loads)
    order = placement_order(loads)
    smallest = {s: min_group_size(ld.model, config) for s, ld in loads.items()}
    for s, size in smallest.items():
        if size is None:
            raise ConfigError(f"services: {s} ({loads[s].model.name}) fits no mesh of a node")
    largest = max(size or 0 for size in smallest.values())
    total = sum(ld.rate for ld in loads.values()) or 1.0
    best: tuple[float, list[Mesh]] | None = None
    for split in cluster_splits(config.cluster):
        sizes = [size for node in split for size in node]
        if len(sizes) > len(loads) or max(sizes) < largest:
            continue
        meshes = greedy(split, est, order)
        if meshes is None:
            continue
        tpt = sum(m.throughput for m in meshes) / total
        if best is None or tpt > best[0] * (1 + TIE):
            best = (tpt, meshes)
    if best is None:
        raise ConfigError(
            "services: no split of the cluster into meshes holds every LLM with its KV "
            "reserve; add GPUs or remove services"
        )
    groups, next_gpu = [], {}
    for m in best[1]:
        if not m.services:
            continue  # an empty mesh's GPUs stay idle (MuxServe does not replicate)
        first = next_gpu.get(m.node, 0)
        next_gpu[m.node] = first + m.size
        groups.append(GroupPlan(len(groups), m.node, first, m.size, tuple(m.services)))
    return Plan(groups).validate(config.cluster)
