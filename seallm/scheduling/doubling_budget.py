"""SeaLLM's doubling-budget (DB) scheduler, and its fixed-budget ablation.

As DESIGN.md reads the paper: a new request of service s gets budget b = μ_s + σ_s (its
profiled standalone-time mean plus one standard deviation), level 0 and attained service
a = 0. Each iteration it takes part in adds its duration to a; when a >= b the budget doubles
and the level rises (demotion). Priority, smaller first: level, then O_r = (b - a) / L̂_r, the
estimated remaining time over the request's standalone estimate, then arrival. The mechanics
(one model per iteration, batch filling, preemption, ageing) are in `priority.py`.
"""

from __future__ import annotations

from seallm.request import Request
from seallm.scheduling.base import register
from seallm.scheduling.priority import PriorityScheduler


class DoublingBudgetScheduler(PriorityScheduler):
    name = "doubling-budget"

    def init(self, req: Request) -> None:
        profile = self.profiles[req.service]
        req.estimate = profile.estimate(req)
        req.budget = profile.budget
        req.level = 0
        req.attained = 0.0

    def key(self, req: Request) -> tuple[float, ...]:
        return (req.level, (req.budget - req.attained) / req.estimate)

    def charge(self, req: Request, duration: float) -> None:
        req.attained += duration
        while req.attained >= req.budget:
            self.demote(req)

    def demote(self, req: Request) -> None:
        req.budget *= 2
        req.level += 1

    def valid_for(self, req: Request) -> float:
        return req.budget - req.attained

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


register("doubling-budget")(DoublingBudgetScheduler)
register("fixed-budget")(FixedBudgetScheduler)
