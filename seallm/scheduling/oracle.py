"""Ablation `seallm-oracle`: shortest remaining true time first.

An upper bound, not a deployable policy: it reads each request's true output length, which
no real scheduler knows, and orders by the remaining standalone time (SRPT), with the same
batching, preemption and ageing as the doubling-budget scheduler.
"""

from __future__ import annotations

from seallm.request import Request
from seallm.scheduling.base import register
from seallm.scheduling.priority import PriorityScheduler


class OracleScheduler(PriorityScheduler):
    name = "oracle"

    def init(self, req: Request) -> None:
        req.estimate = self.profiles[req.service].cost.standalone_latency(
            req.prompt_tokens, req.output_tokens
        )

    def key(self, req: Request) -> tuple[float, ...]:
        cost = self.profiles[req.service].cost
        ctx = req.context_tokens
        left = (req.output_tokens - req.generated) * cost.iteration_time(0, 0.0, 1, ctx)
        if req.generated == 0:
            left += cost.prefill_time(req.prompt_tokens)
        return (0, left)

    def may_evict(self, candidate: Request, victim: Request) -> bool:
        # Exact SRPT: a shorter remaining request may evict a longer one.
        return self.entry[victim.id] > self.entry[candidate.id]


register("oracle")(OracleScheduler)
