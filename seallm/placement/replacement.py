"""Replacement policies: whether to re-place services now, and when to look again.

A policy is a pure function of what the controller observed at a check (`CheckState`: the
current plan, the service monitor's loads and drift, what each group holds) and returns a
decision: `Replace` (move to this aligned plan now) or `Wait`; either says when the next
check is. The controller and the simulator act on it.

- `adaptive` (seallm; measured in docs/results.md): a candidate plan is searched only when
  the observed rate mix has left the current plan's by more than drift_threshold beyond the
  window's counting noise (a plan made for the same loads would be the same plan), or when
  the latest recent_s seconds have moved away from what the previous check saw (traffic is
  drifting: the candidate is then planned for the recent loads, not for a window that still
  mixes the old traffic in). It is
  adopted only when its estimated gain over the coming interval, in request-seconds of
  latency (the estimator's latency of each plan under the observed loads, times rates, times
  the interval), exceeds gain_margin times the move's cost (`migration.move_cost`: weight
  loading, requests moved and recomputed, arrivals waiting for a host). The interval halves
  (down to min_interval_s) while traffic drifts between checks or after a move, and doubles
  (up to max_interval_s) while it is stable. Between checks the monitor is probed every
  min_interval_s (cheap: no plan is searched); traffic that has moved since the last check
  brings the next check forward, so a stable spell's long interval does not delay the
  reaction to a shift.
- `fixed`: every fixed_interval_s, re-place whenever the fresh plan is estimated better, at
  any cost (periodic re-placement, the ablation).
- `none`: the initial plan stays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from seallm.config import Config, ReplacementSpec
from seallm.costmodel import CostModel
from seallm.monitor import Drift
from seallm.placement.demand import ServiceLoad, reference_cost
from seallm.placement.estimator import Estimator
from seallm.placement.migration import (
    Migration,
    MoveCost,
    Occupancy,
    hosts_of,
    move_cost,
    plan_move,
)
from seallm.placement.plan import Plan, PlanEvaluator
from seallm.specs import ModelSpec

Placement = Callable[[Config, CostModel, dict[str, ServiceLoad]], Plan]


@dataclass(frozen=True)
class CheckState:
    now: float
    interval: float  # seconds since the previous check (the current pace)
    plan: Plan
    loads: Mapping[str, ServiceLoad]  # observed over the monitor's window
    recent: Mapping[str, ServiceLoad]  # observed over its latest recent_s seconds
    since_plan: Drift  # the window's rates against those the current plan was made for
    since_check: Drift  # the recent rates against those the previous check went by
    occupancy: Mapping[int, Occupancy]  # per current group
    next_group_id: int  # first id free for new groups


@dataclass(frozen=True)
class Replace:
    migration: Migration
    interval: float  # seconds to the next check
    gain: float  # estimated request-seconds saved over the interval
    cost: MoveCost
    reason: str
    basis: Mapping[str, float]  # the rates the decision went by (requests/s by service)


@dataclass(frozen=True)
class Wait:
    interval: float  # seconds to the next check (inf: never)
    reason: str
    gain: float = 0.0
    cost: MoveCost | None = None
    basis: Mapping[str, float] | None = None  # None: the monitor's window


Decision = Replace | Wait


@dataclass(frozen=True)
class PlanContext:
    """What policies read to build and judge candidate plans (no state of their own)."""

    config: Config
    cost: CostModel
    place: Placement
    rounds: bool = False  # the system's groups run rounds (the estimator prices them so)
    # Given, a move's gain comes from simulating the current and the candidate plan at the
    # observed rates (as the initial placement's finalists are checked), not the estimate.
    evaluate: PlanEvaluator | None = None

    def candidate(self, st: CheckState, loads: Mapping[str, ServiceLoad]) -> Migration:
        rp, models = self.config.replacement, self._models()
        plan = self.place(self.config, self.cost, dict(loads))
        return plan_move(
            st.plan,
            plan,
            self.config.cluster,
            st.next_group_id,
            lambda s, size: self.cost.load_time(models[s], size, rp.load_source),
            lambda s: models[s].weight_bytes,
            rates(loads),
        )

    def gain(
        self, st: CheckState, loads: Mapping[str, ServiceLoad], move: Migration, horizon: float
    ) -> float:
        """Request-seconds of latency the move saves over `horizon` seconds, estimated."""
        if self.evaluate is not None:
            observed = rates(loads)
            before = self.evaluate(st.plan, observed).latency_rate
            return horizon * (before - self.evaluate(move.plan, observed).latency_rate)
        est = Estimator(self.config, self.cost, loads, rounds=self.rounds)
        before = plan_latency(st.plan, loads, est, horizon)
        return horizon * (before - plan_latency(move.plan, loads, est, horizon))

    def move_cost(
        self, st: CheckState, loads: Mapping[str, ServiceLoad], move: Migration
    ) -> MoveCost:
        models = self._models()
        return move_cost(
            move,
            st.occupancy,
            rates(loads),
            lambda s, tokens: reference_cost(models[s], self.config, self.cost).prefill_time(
                tokens
            ),
        )

    def _models(self) -> dict[str, ModelSpec]:
        return {s.name: s.model_spec for s in self.config.services}


def rates(loads: Mapping[str, ServiceLoad]) -> dict[str, float]:
    return {s: ld.rate for s, ld in loads.items()}


def plan_latency(
    plan: Plan, loads: Mapping[str, ServiceLoad], est: Estimator, horizon: float = math.inf
) -> float:
    """Latency the plan accrues per second under `loads` (Σ rate x estimated latency), in
    request-seconds per second, over the next `horizon` seconds; replicas split their
    service's rate evenly. The estimator's latency is a steady state, and for an overloaded
    group a penalty; over a finite horizon a queue grows only so far, so a latency is capped
    at horizon x max(1, utilization): still larger the more overloaded the group is."""
    reps = hosts_of(plan)
    total = 0.0
    for g in plan.groups:
        e = est.group(g.size, [(s, loads[s].rate / reps[s]) for s in g.services])
        if not e.feasible:
            return math.inf
        for se in e.services:
            latency = se.normalized_latency * max(1.0, loads[se.service].mean_output)
            total += se.rate * min(latency, horizon * max(1.0, e.utilization))
    return total


def decide_none(spec: ReplacementSpec, ctx: PlanContext, st: CheckState) -> Decision:
    return Wait(math.inf, "no replacement")


def decide_fixed(spec: ReplacementSpec, ctx: PlanContext, st: CheckState) -> Decision:
    every, basis = spec.fixed_interval_s, rates(st.loads)
    move = ctx.candidate(st, st.loads)
    if move.empty:
        return Wait(every, "the fresh plan is the current one", basis=basis)
    gain = ctx.gain(st, st.loads, move, every)
    if gain <= 0:
        return Wait(every, "the fresh plan is no better", gain, basis=basis)
    return Replace(move, every, gain, ctx.move_cost(st, st.loads, move), "periodic", basis)


def decide_adaptive(spec: ReplacementSpec, ctx: PlanContext, st: CheckState) -> Decision:
    drifting = st.since_check.significant(spec.drift_threshold)
    shorter = max(spec.min_interval_s, st.interval / 2)
    longer = min(spec.max_interval_s, st.interval * 2)
    pace = shorter if drifting else longer
    loads = st.recent if drifting else st.loads
    basis = rates(loads)
    if not drifting and not st.since_plan.significant(spec.drift_threshold):
        return Wait(pace, "traffic within noise of the plan's", basis=basis)
    move = ctx.candidate(st, loads)
    if move.empty:
        return Wait(pace, "the fresh plan is the current one", basis=basis)
    gain = ctx.gain(st, loads, move, st.interval)
    cost = ctx.move_cost(st, loads, move)
    if gain > spec.gain_margin * cost.delay:
        why = "gain over the interval exceeds the cost"
        return Replace(move, shorter, gain, cost, why, basis)
    return Wait(pace, "gain below the cost of moving", gain, cost, basis)


Policy = Callable[[ReplacementSpec, PlanContext, CheckState], Decision]
POLICIES: dict[str, Policy] = {
    "none": decide_none,
    "fixed": decide_fixed,
    "adaptive": decide_adaptive,
}


def probe_adaptive(spec: ReplacementSpec, since_check: Drift) -> bool:
    """Whether a probe between checks calls for a check now."""
    return since_check.significant(spec.drift_threshold)


Probe = Callable[[ReplacementSpec, Drift], bool]
PROBES: dict[str, Probe] = {"adaptive": probe_adaptive}


def get_policy(name: str | None) -> Policy:
    name = name or "none"
    if name not in POLICIES:
        raise ValueError(f"replacement: {name!r} is not one of {', '.join(POLICIES)}")
    return POLICIES[name]


def first_check(name: str | None, spec: ReplacementSpec) -> float:
    """Seconds from the start to a policy's first check (inf: never); a policy other than
    adaptive and none checks first after fixed_interval_s."""
    name = name or "none"
    if name == "none":
        return math.inf
    return spec.first_check_s if name == "adaptive" else spec.fixed_interval_s
