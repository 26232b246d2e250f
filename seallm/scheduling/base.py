"""The scheduling interface: a policy reads a group engine's state and returns a decision.

A policy never changes the engine; the engine applies the decision (preempt, swap in,
allocate, run). `account` is the one hook through which a policy keeps per-request state
(budgets, levels) up to date after an iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from seallm.colocation import RoundPricer
from seallm.config import EngineSpec
from seallm.executor.base import Batch, StepOutcome
from seallm.kvcache import PagedKVCache
from seallm.profile import ServiceProfile
from seallm.request import Request


@dataclass
class Decision:
    """What the next iteration (or fused run of identical iterations) does."""

    service: str | None = None
    prefill: list[Request] = field(default_factory=list)  # queued -> prefill (or recompute)
    decode: list[Request] = field(default_factory=list)  # running -> one token each
    swap_in: list[Request] = field(default_factory=list)  # swapped -> back on device, then decode
    preempt: list[Request] = field(default_factory=list)  # running -> lose their device KV
    stop_at: float = math.inf  # the decision stays valid until this time (budget, ageing)

    @property
    def empty(self) -> bool:
        return not (self.prefill or self.decode or self.swap_in)


@dataclass
class EngineState:
    """What a policy may look at. Lists are ordered by (arrival, id)."""

    waiting: Sequence[Request]
    running: Sequence[Request]
    swapped: Sequence[Request]
    kv: PagedKVCache
    limits: EngineSpec
    running_count: Mapping[str, int]  # running requests per service


class Scheduler(Protocol):
    name: str
    # Whether the policy forms rounds (`rounds.py`) when given a pricer in `rounds`.
    supports_rounds: bool
    rounds: RoundPricer | None

    def admit(self, req: Request, now: float) -> None:
        """Initialise the policy's per-request state when the request reaches the engine."""

    def schedule(self, state: EngineState, now: float) -> Decision: ...

    def account(self, batch: Batch, outcome: StepOutcome, now: float) -> None:
        """Charge the step's service to the batch's requests (it ended at `now`, after the
        engine advanced their token counts)."""

    def preempted(self, req: Request) -> None:
        """`req` lost its device KV (it is queued to recompute, or swapped)."""

    def release(self, req: Request) -> None:
        """`req` left the engine (finished, aborted or drained)."""


class StatelessHooks:
    """The hooks of a policy that keeps no per-request state (FCFS, ADBS): requests are only
    charged the service they attained and stamped with when they last ran."""

    supports_rounds = False
    rounds: RoundPricer | None = None

    def admit(self, req: Request, now: float) -> None:
        pass

    def preempted(self, req: Request) -> None:
        pass

    def release(self, req: Request) -> None:
        pass

    def account(self, batch: Batch, outcome: StepOutcome, now: float) -> None:
        for r in batch.requests:
            r.attained += outcome.duration
            r.last_run = now


# A factory gets the group's service profiles and engine limits.
SchedulerFactory = Callable[[dict[str, ServiceProfile], EngineSpec], Scheduler]
SCHEDULERS: dict[str, SchedulerFactory] = {}


def register(name: str) -> Callable[[SchedulerFactory], SchedulerFactory]:
    def deco(factory: SchedulerFactory) -> SchedulerFactory:
        SCHEDULERS[name] = factory
        return factory

    return deco


def make_scheduler(
    name: str,
    profiles: dict[str, ServiceProfile],
    limits: EngineSpec,
    rounds: RoundPricer | None = None,
) -> Scheduler:
    """The named policy; with `rounds`, one that forms rounds priced by it."""
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler: {name!r} is not one of {', '.join(sorted(SCHEDULERS))}")
    scheduler = SCHEDULERS[name](profiles, limits)
    if rounds is not None:
        if not scheduler.supports_rounds:
            raise ValueError(f"scheduler {name!r} does not form rounds (engine: rounds)")
        scheduler.rounds = rounds
    return scheduler


def fit_decode(state: EngineState, decode: list[Request]) -> list[Request]:
    """Drop requests from the end of `decode` until all can grow by one token; returns the
    dropped ones (they must be preempted to make room)."""
    dropped: list[Request] = []
    while decode and not state.kv.can_hold(((r, r.context_tokens + 1) for r in decode), dropped):
        dropped.append(decode.pop())
    return dropped
