"""Slack-aware doubling budget: DB's order, and a request about to miss its SLO goes first.

DB (`doubling_budget.py`) serves the requests it estimates shortest first, which wins the mean
and loses the tail: a long request demoted below a stream of short ones waits for the fixed
ageing bound whatever its SLO. This policy keeps DB's order and adds each request's deadline,
D_r = arrival + slo_scale x Ŝ_r, with Ŝ_r its standalone-time estimate (its known prompt and
the larger of the service's mean output and the tokens it already has; the true length is
unknown to a scheduler):

- **Urgency.** A request waiting off the device (queued or preempted) becomes urgent when
  its slack to D_r falls to `margin` x its estimated remaining standalone time, i.e. when it
  would just make its deadline if served at `margin` times its standalone speed. Urgent
  requests rank above everything else, earliest deadline first. The promotion time is fixed
  while the request waits, so it is an event (a heap), not a per-step scan, and the keys stay
  sorted incrementally. A request loses its urgency when it runs: once on the device it
  decodes in every round, where its order no longer decides whether it runs.
- **Prefill order.** New requests still skip ahead of decodes (DB's prefill first), ordered
  among themselves by deadline (`prefill_order = "deadline"`) rather than by DB's per-service
  budget, which always admits the service of shortest requests first and leaves a service of
  long ones waiting for ageing.
- **Late requests** (past D_r while still waiting): `late = "demote"` (default) returns them
  to DB's order, as a request that can no longer meet its SLO should not take a turn from one
  that still can (earliest deadline first collapses under overload otherwise: every late
  request goes first and makes the next one late); `"keep"` keeps them urgent. Ageing
  (`ageing_s`) still bounds every wait.

The variants are named ablations (`systems.py`); measured in docs/results.md.
"""

from __future__ import annotations

import heapq
import math

from seallm.config import EngineSpec
from seallm.executor.base import Batch, StepOutcome
from seallm.profile import ServiceProfile
from seallm.request import Request, Status
from seallm.scheduling.base import Decision, EngineState, register
from seallm.scheduling.doubling_budget import DoublingBudgetScheduler

URGENT, LATE = 0, 1  # what a due event does: make the request urgent, or past its deadline


class SlackScheduler(DoublingBudgetScheduler):
    name = "slack"
    margin = 2.0  # urgent once slack <= margin x remaining standalone time
    prefill_order = "deadline"  # or "budget" (DB's)
    late = "demote"  # or "keep"

    def __init__(self, profiles: dict[str, ServiceProfile], limits: EngineSpec) -> None:
        super().__init__(profiles, limits)
        self.deadline: dict[int, float] = {}
        self.urgent: set[int] = set()
        # (due time, request id, stamp, URGENT | LATE); a stale stamp marks a dead event.
        self._due: list[tuple[float, int, int, int]] = []
        self._stamp: dict[int, int] = {}

    def init(self, req: Request) -> None:
        super().init(req)
        self._plan(req)

    def _times(self, req: Request) -> tuple[float, float]:
        """The request's deadline and when it becomes urgent, from what it has generated."""
        profile = self.profiles[req.service]
        cost = profile.cost
        total = cost.standalone_latency(
            req.prompt_tokens, max(round(profile.mean_output), req.generated + 1)
        )
        done = cost.standalone_latency(req.prompt_tokens, req.generated) if req.generated else 0
        deadline = req.arrival + profile.slo_scale * total
        return deadline, deadline - self.margin * (total - done)

    def _plan(self, req: Request) -> None:
        """Set the request's deadline and push its promotion event."""
        deadline, urgent_at = self._times(req)
        self.deadline[req.id] = deadline
        stamp = self._stamp.get(req.id, 0) + 1
        self._stamp[req.id] = stamp
        heapq.heappush(self._due, (urgent_at, req.id, stamp, URGENT))

    def schedule(self, state: EngineState, now: float) -> Decision:
        d = super().schedule(state, now)
        # A request this decision preempts gets its promotion event only when the engine
        # applies the decision; a fused run must still stop there.
        for r in d.preempt:
            d.stop_at = min(d.stop_at, max(now, self._times(r)[1]))
        # An urgent request swapped back in loses its urgency as it runs: its key changes
        # after one iteration, so the decision holds for one (as for an aged request).
        if any(r.id in self.urgent for r in d.swap_in):
            d.stop_at = now
        return d

    def key(self, req: Request) -> tuple[float, ...]:
        if req.id in self.urgent:
            return (-2, self.deadline[req.id])
        if self.prefill_first and req.generated == 0 and self.prefill_order == "deadline":
            return (-1, self.deadline[req.id])
        return super().key(req)

    def holds_line(self, req: Request) -> bool:
        return req.id in self.urgent

    def account(self, batch: Batch, outcome: StepOutcome, now: float) -> None:
        for r in batch.requests:
            if r.id in self.urgent:
                self.urgent.discard(r.id)
                self._stamp[r.id] += 1  # its pending LATE event dies with the urgency
        super().account(batch, outcome, now)

    def preempted(self, req: Request) -> None:
        self._plan(req)  # off the device again: a new deadline estimate and promotion
        super().preempted(req)

    def release(self, req: Request) -> None:
        super().release(req)
        self.deadline.pop(req.id, None)
        self.urgent.discard(req.id)
        self._stamp.pop(req.id, None)

    def _live(self, event: tuple[float, int, int, int]) -> Request | None:
        _, rid, stamp, _ = event
        r = self.reqs.get(rid)
        if r is None or self._stamp.get(rid) != stamp or r.status is Status.RUNNING:
            return None
        return r

    def rekey_due(self, now: float) -> float:
        due = self._due
        while due and (due[0][0] <= now or self._live(due[0]) is None):
            event = heapq.heappop(due)
            r = self._live(event)
            if r is None:
                continue
            self._remove(r)
            if event[3] == URGENT:
                self.urgent.add(r.id)
                if self.late == "demote":
                    deadline = self.deadline[r.id]
                    heapq.heappush(due, (max(deadline, now), r.id, event[2], LATE))
            else:
                self.urgent.discard(r.id)
            self._insert(r)
        return due[0][0] if due else math.inf


class SlackKeepLateScheduler(SlackScheduler):
    """Ablation: a request past its deadline stays urgent."""

    name = "slack-keep-late"
    late = "keep"


class SlackBudgetPrefillScheduler(SlackScheduler):
    """Ablation: new requests ordered by DB's per-service budget, as DB orders them."""

    name = "slack-budget-prefill"
    prefill_order = "budget"


for _cls in (SlackScheduler, SlackKeepLateScheduler, SlackBudgetPrefillScheduler):
    register(_cls.name)(_cls)
