"""SeaLLM's doubling-budget (DB) scheduler, and its ablations.

As we read the paper: a new request of service s gets budget b = μ_s + σ_s (its
profiled standalone-time mean plus one standard deviation), level 0 and attained service
a = 0. Each iteration it takes part in adds its duration to a; when a >= b the budget doubles
and the level rises (demotion). Priority, smaller first: level, then O_r = T'_r / L̂_r with
T'_r = b - a the estimated remaining time, then arrival. The mechanics (one model per
iteration, batch filling, preemption, ageing) are in `priority.py`.

Two choices the paper leaves open are configurable and were measured (`seallm experiment
shared-group`, docs/results.md):

- What L̂_r is. The paper's summaries say only "the execution time of request r on a single
  GPU". `iteration` (default): the per-iteration time of r's service alone on the group, so
  O_r is the estimated remaining number of iterations (tokens): shortest remaining first, in
  the unit normalized latency is measured in, and comparable across a fast 7B and a slow 34B.
  `request` (ablation `seallm-lhat-request`): r's own standalone-time estimate, so O_r is the
  remaining fraction of its budget; it is scale-free, so a service of short requests gains
  nothing over one of long requests, and it measured several times worse.
- Prefill first (default on): a request that has not yet produced its first token ranks
  above level 0 (a skip-join, as FastServe does), so a new request's cheap prefill is not
  queued behind long decodes; it then competes by budget like any other (ablation
  `seallm-no-prefill-first`).
"""

from __future__ import annotations

from seallm.request import Request
from seallm.scheduling.base import register
from seallm.scheduling.priority import PriorityScheduler


class DoublingBudgetScheduler(PriorityScheduler):
    name = "doubling-budget"
    lhat = "iteration"  # or "request" (see the module docstring)
    prefill_first = True
    budgeted = True

    def init(self, req: Request) -> None:
        profile = self.profiles[req.service]
        req.estimate = profile.estimate(req) if self.lhat == "request" else profile.token_time
        req.budget = profile.budget
        req.level = 0
        req.attained = 0.0

    def key(self, req: Request) -> tuple[float, ...]:
        level = -1 if self.prefill_first and req.generated == 0 else req.level
        return (level, (req.budget - req.attained) / req.estimate)

    def charge(self, req: Request, duration: float) -> None:
        req.attained += duration
        req.budget = max(req.budget, 1e-6)  # a budget must be positive to double
        while req.attained >= req.budget:
            self.demote(req)

    def demote(self, req: Request) -> None:
        req.budget *= 2
        req.level += 1

    def on_aged(self, req: Request) -> None:
        # Priority boost (MLFQ-style): back to level 0 with a fresh budget, so an aged request
        # gets a full quantum of service, not one iteration.
        req.level = 0
        req.budget = req.attained + self.profiles[req.service].budget


class FixedBudgetScheduler(DoublingBudgetScheduler):
    """Ablation `seallm-nodoubling`: each level adds the same budget μ_s + σ_s instead of
    doubling it (multi-level feedback with fixed quanta)."""

    name = "fixed-budget"

    def demote(self, req: Request) -> None:
        req.budget += self.profiles[req.service].budget
        req.level += 1


class RequestLhatScheduler(DoublingBudgetScheduler):
    """Ablation `seallm-lhat-request`: L̂_r is the request's standalone-time estimate."""

    name = "doubling-budget-lhat-request"
    lhat = "request"


class NoPrefillFirstScheduler(DoublingBudgetScheduler):
    """Ablation `seallm-no-prefill-first`: new requests start at level 0 like the rest."""

    name = "doubling-budget-no-prefill-first"
    prefill_first = False


for _cls in (
    DoublingBudgetScheduler,
    FixedBudgetScheduler,
    RequestLhatScheduler,
    NoPrefillFirstScheduler,
):
    register(_cls.name)(_cls)
