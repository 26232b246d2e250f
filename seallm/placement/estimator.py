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
- bursts: the load a request sees over its lifetime varies around ρ (more for burstier and
  sparser traffic), and latency is convex in it, so both are averaged over that spread;
- SLO attainment treats the wait as exponential: P(L <= slo x T_ref), averaged over sampled
  request lengths (short requests have the tightest SLOs; the mean request hides them).

With `rounds` (seallm's engines), the services of a group decode together in each round
(`scheduling/rounds.py`): a round's fixed part is then what the co-location physics charges
for a batch-1 job of every service at once (`colocation.py`), less their per-request parts,
instead of the sum of each service's fixed part.

`seallm experiment shared-group` and the simulator measure what this only estimates; the
estimator's job is to rank plans, fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from seallm.colocation import JobCoster, mode_for, round_time
from seallm.config import Config
from seallm.costmodel import CostModel
from seallm.placement.demand import ServiceLoad, kv_bytes, reference_cost

SATURATED = 0.95  # utilization beyond which a group is treated as overloaded
# Nodes and weights of a 5-point Gauss-Hermite rule for a standard normal variable.
GAUSS_HERMITE = (
    (0.0, 0.5333),
    (1.3556, 0.2221),
    (-1.3556, 0.2221),
    (2.857, 0.0113),
    (-2.857, 0.0113),
)


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
    def __init__(
        self,
        config: Config,
        cost: CostModel,
        loads: Mapping[str, ServiceLoad],
        rounds: bool = False,
    ):
        self.config = config
        self.rounds = rounds
        self._costers: dict[tuple[str, int], JobCoster] = {}
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
        self._slo_terms: dict[tuple[str, int], list[tuple[float, int, float]]] = {}

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
        if self.rounds and len(rows) > 1:
            fixed = self._round_fixed(size, shares) - sum(b for *_, b in rows)
        total_rate = max(1e-9, sum(rate for _, rate, *_ in rows))
        mean_prefill = prefill / total_rate
        period = fixed / (1 - min(rho, SATURATED))
        overloaded = rho >= SATURATED or any(
            rate * o * period > eng.max_batch_size for _, rate, o, *_ in rows
        )
        # Bursts: over a request's lifetime T the group sees a local load whose relative
        # spread is cv / sqrt(rate x T) (a renewal process's count over a window); average
        # latency and attainment over that spread (5-point Gauss-Hermite).
        lifetime = sum(rate * (pre + o * period) for _, rate, o, pre, *_ in rows) / total_rate
        spread = math.sqrt(self.cv2 / max(1e-9, total_rate * lifetime))
        out = []
        for n, rate, o, pre, _a, _b in rows:
            latency = attain = 0.0
            for x, w in GAUSS_HERMITE:
                load = min(SATURATED, max(0.0, rho * (1 + spread * x)))
                period_k = fixed / (1 - load)
                wait = (1 + self.cv2) / 2 * load / (1 - load) * mean_prefill + period_k / 2
                latency += w * (pre + o * period_k + wait)
                if load < SATURATED:
                    attain += w * self._attainment(n, size, period_k, wait)
            if overloaded:
                latency *= 10 * max(1.0, rho / SATURATED)  # queues grow without bound
                attain = 0.0
            norm = latency / max(1.0, self.loads[n].mean_output)
            out.append(ServiceEstimate(n, rate, norm, attain))
        return GroupEstimate(True, rho, tuple(out))

    def _round_fixed(self, size: int, shares: Sequence[tuple[str, float]]) -> float:
        """A round of batch-1 decodes of every service, priced by the co-location physics."""
        jobs = []
        for n, _ in shares:
            ld = self.loads[n]
            coster = self._costers.get((n, size))
            if coster is None:
                coster = self._costers[(n, size)] = JobCoster(self.cost, ld.model, size)
            ctx = int(ld.mean_prompt) + max(1, int(ld.mean_output)) // 2
            jobs.append(coster.iteration(0, 0.0, 1, ctx))
        return float(round_time(jobs, mode_for(self.cost.device.name)))

    def _attainment(self, n: str, size: int, period: float, wait: float) -> float:
        """P(latency <= slo x standalone) over the service's sampled request lengths."""
        terms = self._slo_terms.get((n, size))
        if terms is None:
            ld = self.loads[n]
            mc = self.cost.for_model(ld.model, size)
            ref = reference_cost(ld.model, self.config, self.cost)
            samples = ld.samples or ((int(ld.mean_prompt), max(1, int(ld.mean_output))),)
            terms = self._slo_terms[(n, size)] = [
                (mc.prefill_time(p), o, self.slo[n] * ref.standalone_latency(p, o))
                for p, o in samples
            ]
        total = 0.0
        for prefill, o, limit in terms:
            bound = limit - prefill - o * period
            if bound > 0:
                total += 1.0 - math.exp(-bound / wait)
        return total / len(terms)
