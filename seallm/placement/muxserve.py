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
  increases the estimated throughput most, subject to memory (weights plus the KV reserve)
  and to the mesh's decode-share budget (below).
  Ties (common at light load, where every mesh serves its whole rate) go to the smaller
  mesh, then to the mesh with the least computation per GPU so far, then the most free
  memory (MuxServe's mesh order). Each LLM is placed once; MuxServe does not replicate.
- *Objective*: the rate-weighted estimated throughput, sum_i rate_i x served_i / sum rate
  (MuxServe's `total_tpt`); the partition with the highest wins (the first on ties).

The throughput estimate of a mesh is MuxServe's (`muxserve/muxsched/placement.py` in
github.com/hao-ai-lab/MuxServe, `CostEstimator`), rebuilt on seallm's cost model and SM-share
slowdowns (`colocation.py`, the physics the `muxserve` executor runs, `executor/spatial.py`):
- *Decode latency* of LLM i at batch B under SM share d: the decode iteration's host and
  launch time plus its kernels slowed by d (`sm_slowdown`, MuxServe's profile), plus MuxServe's
  schedule overhead of 70-100 us per sequence (`get_latency`); a line in B through batch 1 and
  BATCH_PROBE for each part. *Prefill latency* of B mean prompts at full SMs (the estimate
  prices prefill at `prefill_mps=100`; the runtime caps it at 80/90/100%).
- *Throughput* at batch B: B / (t_dec(B, d) x mean output + prefill time), where the prefill
  time is the sum over every LLM of the mesh of its batch's prefill (`estimate_mesh_throughput`:
  every co-located prefill stalls every decode). An LLM meets its rate r when throughput +
  min(0.5, 10%) > r (`estimate_throughput`'s `can_satisfy`), and then counts as serving r.
- *Decode share* of an LLM on a mesh size (`estimate_mps`): the smallest of 30..90% (the
  profiled MPS shares of `examples/placement/llama.json`, less the prefill's 100%) at which it
  meets its rate alone on the mesh, with the smallest batch that meets it (bisection);
  else the share with the highest throughput. A mesh holds LLMs while their decode shares
  sum to at most 120% (`MeshGroup.can_place`: 100% plus the 20% overload threshold). The
  chosen shares go on the plan (`GroupPlan.decode_shares`) for the executor.
- *A mesh's throughput*: the mesh's KV memory is split in proportion to rate x per-token KV
  size, which caps each LLM's batch; each starts at the batch that meets its rate alone with
  its share of KV, then the LLM furthest below its rate gets one more sequence at a time
  until every LLM meets its rate or is at its cap; the best sum of rate x served seen wins.
  (Where MuxServe's loop stops before evaluating once, when every batch starts at its cap,
  this evaluates once.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seallm.colocation import JobCoster, sm_slowdown
from seallm.config import Config, ConfigError
from seallm.costmodel import CostModel
from seallm.executor.spatial import DECODE_BUDGET, DECODE_SHARES, schedule_overhead
from seallm.placement.demand import ServiceLoad, kv_bytes, min_group_size
from seallm.placement.plan import GroupPlan, Plan
from seallm.placement.two_stage import cluster_splits

BATCH_PROBE = 64  # the second batch size the linear costs are fitted at
TIE = 1e-9  # relative difference below which two throughputs are equal
Line = tuple[float, float]  # a + b x B


@dataclass(frozen=True)
class LLMCost:
    """What one LLM asks of a mesh of a given size: latencies as lines in the batch size B."""

    rate: float
    out: float  # mean output tokens
    kv_per_request: float  # bytes at the mean context (prompt + output)
    kv_per_token: float
    fixed: Line  # host + launch time of a decode iteration
    kernel: Line  # its kernel time at full SMs (slowed down under a share)
    overhead: float  # MuxServe's schedule overhead per sequence and iteration
    prefill: Line  # a prefill of B mean prompts at full SMs

    def t_decode(self, b: int, share: float) -> float:
        slow = sm_slowdown(share, prefill=False, batch=b)
        return _at(self.fixed, b) + _at(self.kernel, b) * slow + self.overhead * b

    def t_prefill(self, b: int) -> float:
        return _at(self.prefill, b) if b > 0 else 0.0

    def tpt(self, b: int, share: float, prefills: float) -> float:
        """Requests/s at batch b when `prefills` seconds of prefill stall each batch."""
        return b / (self.t_decode(b, share) * self.out + prefills) if b > 0 else 0.0


def _at(line: Line, b: float) -> float:
    return line[0] + line[1] * b


def _line(one: float, wide: float) -> Line:
    slope = (wide - one) / (BATCH_PROBE - 1)
    return one - slope, slope


def served(tpt: float, rate: float) -> float:
    """placement.py's can_satisfy: within min(0.5, 10%) of the rate counts as the rate."""
    return rate if tpt + min(0.5, 0.1 * tpt) > rate else tpt


class MeshEstimator:
    def __init__(self, config: Config, cost: CostModel, loads: dict[str, ServiceLoad]):
        self.config = config
        self.cost = cost
        self.loads = loads
        self.max_batch = config.engine.max_batch_size
        self._llm: dict[tuple[str, int], LLMCost] = {}
        self._share: dict[tuple[str, int], float] = {}
        self._mesh: dict[tuple[int, tuple[str, ...]], float] = {}

    def llm(self, service: str, size: int) -> LLMCost:
        key = (service, size)
        if key not in self._llm:
            ld = self.loads[service]
            jc = JobCoster(self.cost, ld.model, size)
            p, o = max(1, int(ld.mean_prompt)), max(1.0, ld.mean_output)
            ctx = p + int(o / 2)
            one = jc.iteration(0, 0.0, 1, ctx)
            wide = jc.iteration(0, 0.0, BATCH_PROBE, BATCH_PROBE * ctx)
            pre = [jc.alone.iteration_time(b * p, float(b * p * p), 0, 0) for b in (1, BATCH_PROBE)]
            kvt = ld.model.kv_bytes_per_token
            self._llm[key] = LLMCost(
                ld.rate,
                o,
                kvt * (p + o),
                kvt,
                _line(one.host + one.launch, wide.host + wide.launch),
                _line(one.kernel, wide.kernel),
                schedule_overhead(ld.model),
                _line(*pre),
            )
        return self._llm[key]

    def fits(self, size: int, services: list[str]) -> bool:
        """Weights plus the minimum KV reserve fit the mesh's memory."""
        mem = size * self.config.cluster.device_spec.memory_bytes
        pool = kv_bytes([self.loads[s].model for s in services], size, self.config)
        return pool >= self.config.engine.min_kv_fraction * mem

    def alone(self, x: LLMCost, share: float, cache: float) -> tuple[bool, float, int]:
        """placement.py's estimate_throughput: the smallest batch (capped by `cache` bytes of
        KV and the batch limit) at which the LLM alone meets its rate, else the cap; whether
        it meets it, and its throughput."""
        cap = min(int(cache // x.kv_per_request), self.max_batch) if cache > 0 else 0
        if cap < 1:
            return False, 0.0, 0

        def tpt(b: int) -> float:
            return x.tpt(b, share, x.t_prefill(b))

        lo, hi = 1, cap
        if tpt(cap) >= x.rate:
            while lo < hi:  # throughput grows with the batch
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if tpt(mid) >= x.rate else (mid + 1, hi)
        else:
            lo = cap
        t = tpt(lo)
        return served(t, x.rate) == x.rate, t, lo

    def decode_share(self, service: str, size: int) -> float:
        """placement.py's estimate_mps: the smallest decode share at which the LLM meets its
        rate alone on the mesh, else the one with the highest throughput."""
        key = (service, size)
        if key not in self._share:
            x = self.llm(service, size)
            cache = kv_bytes([self.loads[service].model], size, self.config)
            best, best_tpt = DECODE_SHARES[0], -1.0
            for share in DECODE_SHARES:
                ok, t, _ = self.alone(x, share, cache)
                if ok:
                    best = share
                    break
                if t > best_tpt:
                    best, best_tpt = share, t
            self._share[key] = best
        return self._share[key]

    def throughput(self, size: int, services: list[str]) -> float:
        """placement.py's estimate_mesh_throughput, as sum_i rate_i x served_i (MuxServe's
        objective before its normalization by the mesh's rates)."""
        key = (size, tuple(services))
        if key not in self._mesh:
            self._mesh[key] = self._estimate(size, services)
        return self._mesh[key]

    def _estimate(self, size: int, services: list[str]) -> float:
        llms = [self.llm(s, size) for s in services]
        shares = [self.decode_share(s, size) for s in services]
        pool = kv_bytes([self.loads[s].model for s in services], size, self.config)
        base = sum(x.rate * x.kv_per_token for x in llms)
        batch, cap = [], []
        for x, d in zip(llms, shares, strict=True):
            cache = pool * x.rate * x.kv_per_token / base if base > 0 else 0.0
            batch.append(self.alone(x, d, cache)[2])
            cap.append(min(int(cache // x.kv_per_request), self.max_batch) if cache > 0 else 0)
        prefills = sum(x.t_prefill(b) for x, b in zip(llms, batch, strict=True))
        best = 0.0
        while True:
            tpts = [x.tpt(b, d, prefills) for x, b, d in zip(llms, batch, shares, strict=True)]
            value = sum(x.rate * served(t, x.rate) for x, t in zip(llms, tpts, strict=True))
            best = max(best, value)
            # The LLM furthest below its rate, among those below it with room, grows by one.
            lagging = [
                (t / x.rate, i)
                for i, (x, t) in enumerate(zip(llms, tpts, strict=True))
                if x.rate > 0 and served(t, x.rate) < x.rate and batch[i] < cap[i]
            ]
            if not lagging:
                return best
            i = min(lagging)[1]
            prefills += llms[i].t_prefill(batch[i] + 1) - llms[i].t_prefill(batch[i])
            batch[i] += 1


@dataclass
class Mesh:
    node: int
    size: int
    services: list[str] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)  # decode SM share of each service
    demand: float = 0.0  # computation placed so far (FLOP/s)
    throughput: float = 0.0


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
            share = est.decode_share(s, m.size)
            if sum(m.shares) + share > DECODE_BUDGET + 1e-9 or not est.fits(m.size, trial):
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
        m.shares.append(est.decode_share(s, m.size))
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
        groups.append(
            GroupPlan(
                len(groups),
                m.node,
                first,
                m.size,
                tuple(m.services),
                decode_shares=tuple(m.shares),
            )
        )
    return Plan(groups).validate(config.cluster)
