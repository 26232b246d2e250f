"""A fast analytical estimate of how a group serves the services placed on it.

The placement search scores thousands of candidate groups, so this is closed-form, not a
simulation. A group time-shares its GPUs among its services (one model per iteration) with
continuous batching, so a service decodes its whole batch once per "round", and:

- an iteration of service s with batch B costs t_s(B) = a_s + b_s B (a fixed part: weights,
  overheads; a per-request part: KV reads, compute), fitted from the cost model;
- the utilization is ρ = Σ rate_s prefill_s + Σ rate_s o_s b_s, the share of time the group
  spends on work that grows with load (the fixed parts are shared by the whole batch);
- the round period is Σ a_s / (1 - ρ); each service's batch is rate_s o_s period (Little's
  law), which must fit under the engine's batch limit, or the group is overloaded;
- a request's latency is its prefill, o x period, half a round, and a queueing wait for its
  prefill scaled by the burstiness of arrivals (Kingman's (1 + cv²)/2):
  W = (1+cv²)/2 ρ/(1-ρ) x mean prefill; a group at ρ >= 0.95 is treated as overloaded;
- SLO attainment treats the wait as exponential: P(L <= slo x T_ref).

`seallm experiment shared-group` and the simulator measure what this only estimates; the
estimator's job is to rank plans, fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from seallm.config import Config
from seallm.costmodel import CostModel
from seallm.placement.demand import ServiceLoad, kv_bytes, reference_cost

SATURATED = 0.95  # utilization beyond which a group is treated as overloaded


@dataclass(frozen=True)
class ServiceEstimate:
    service: str
    rate: float  # requests/s this group receives
    normalized_latency: float  # s/token
    slo_attainment: float


@dataclass(frozen=True)
class GroupEstimate:
    feasible: bool  # memory fits
    utilization: float
    services: tuple[ServiceEstimate, ...]


class Estimator:
    def __init__(self, config: Config, cost: CostModel, loads: Mapping[str, ServiceLoad]):
        self.config = config
        self.cost = cost
        self.loads = loads
        self.cv2 = config.workload.cv**2 if config.workload.arrival != "poisson" else 1.0
        slo = {s.name: s.slo_scale for s in config.services}
        self.slo = slo
        # Reference standalone latency (smallest group that holds the model), as metrics use.
        self.ref = {
            n: reference_cost(ld.model, config, cost).standalone_latency(
                int(ld.mean_prompt), max(1, int(ld.mean_output))
            )
            for n, ld in loads.items()
        }
        self._cache: dict[tuple, GroupEstimate] = {}

    def group(self, size: int, shares: Sequence[tuple[str, float]]) -> GroupEstimate:
        """Estimate a group of `size` GPUs hosting services with (name, rate) each."""
        key = (size, tuple(sorted((n, round(r, 6)) for n, r in shares)))
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = self._group(size, shares)
        return hit

    def _group(self, size: int, shares: Sequence[tuple[str, float]]) -> GroupEstimate:
        models = [self.loads[n].model for n, _ in shares]
        eng = self.config.engine
        mem = size * self.config.cluster.device_spec.memory_bytes
        if kv_bytes(models, size, self.config) < eng.min_kv_fraction * mem:
            return GroupEstimate(False, math.inf, ())
        rows = []
        for n, rate in shares:
            ld = self.loads[n]
            mc = self.cost.for_model(ld.model, size)
            p, o = int(ld.mean_prompt), max(1, int(ld.mean_output))
            ctx = p + o // 2
            one, wide = mc.iteration_time(0, 0.0, 1, ctx), mc.iteration_time(0, 0.0, 64, 64 * ctx)
            b = (wide - one) / 63
            rows.append((n, rate, o, mc.prefill_time(p), one - b, b))
        prefill = sum(rate * pre for _, rate, _, pre, _, _ in rows)
        rho = prefill + sum(rate * o * b for _, rate, o, _, _, b in rows)
        fixed = sum(a for *_, a, _ in rows)
        load = min(rho, SATURATED)
        period = fixed / (1 - load)
        overloaded = rho >= SATURATED or any(
            rate * o * period > eng.max_batch_size for _, rate, o, *_ in rows
        )
        mean_prefill = prefill / max(1e-9, sum(rate for _, rate, *_ in rows))
        wait = (1 + self.cv2) / 2 * load / (1 - load) * mean_prefill + period / 2
        out = []
        for n, rate, o, pre, _a, _b in rows:
            service = pre + o * period
            latency = service + wait
            if overloaded:
                latency *= 10 * max(1.0, rho / SATURATED)  # queues grow without bound
            bound = self.slo[n] * self.ref[n] - service
            attain = 0.0 if bound <= 0 or overloaded else 1.0 - math.exp(-bound / wait)
            norm = latency / max(1.0, self.loads[n].mean_output)
            out.append(ServiceEstimate(n, rate, norm, attain))
        return GroupEstimate(True, rho, tuple(out))
