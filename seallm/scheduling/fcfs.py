"""First-come-first-served continuous batching, as vLLM (v0) schedules.

vLLM's scheduler (Kwon et al., SOSP'23, §4.5 and its `Scheduler._schedule`): waiting
requests are admitted in arrival order while the batch, token and KV limits allow; an
iteration that admits requests runs their prefill only; otherwise all running requests decode.
When a decode cannot get a KV block, the most recently arrived running request is preempted
and later recomputed (vLLM's default preemption mode). Co-located models (the AlpaServe
baseline) are served one model per iteration: the model of the oldest request.
"""

from __future__ import annotations

from seallm.colocation import RoundPricer
from seallm.config import EngineSpec
from seallm.profile import ServiceProfile
from seallm.request import Request
from seallm.scheduling.base import Decision, EngineState, StatelessHooks, fit_decode, register
from seallm.scheduling.rounds import join_round


class FCFSScheduler(StatelessHooks):
    name = "fcfs"
    supports_rounds = True

    def __init__(
        self, profiles: dict[str, ServiceProfile] | None = None, limits: EngineSpec | None = None
    ) -> None:
        # Rounds (`rounds.py`): set by the engine builder for systems that run them.
        self.rounds: RoundPricer | None = None
        self.join_slowdown = limits.round_join_slowdown if limits else 0.0

    def schedule(self, state: EngineState, now: float) -> Decision:
        order = services_by_age(state)
        d = self._first(state, order)
        if self.rounds is not None and not d.empty:  # the next-oldest models may join
            by_service: dict[str, list[Request]] = {}
            for r in state.running:
                by_service.setdefault(r.service, []).append(r)
            candidates = ((s, by_service.get(s, ())) for s in order)
            join_round(d, state, self.rounds, self.join_slowdown, candidates)
        return d

    def _first(self, state: EngineState, order: list[str]) -> Decision:
        # The model of the oldest request runs; if it can do nothing (its memory is held by
        # another model's running requests), the next-oldest model runs instead.
        for service in order:
            running = [r for r in state.running if r.service == service]
            limit = state.limits.max_batched_tokens
            if self.rounds is not None:  # a long prefill would stall every joined decode
                limit = min(limit, state.limits.round_prefill_tokens)
            prefill = admit_fcfs(state, service, len(running), limit)
            if prefill:
                return Decision(service, prefill=prefill)
            decode = running[: state.limits.max_batch_size]
            preempt = fit_decode(state, decode)
            if decode:
                return Decision(service, decode=decode, preempt=preempt)
        return Decision()


def services_by_age(state: EngineState) -> list[str]:
    """Services with ready requests, ordered by their oldest request."""
    oldest: dict[str, tuple[float, int]] = {}
    for q in (state.waiting, state.running):
        for r in q:
            key = (r.arrival, r.id)
            if r.service not in oldest or key < oldest[r.service]:
                oldest[r.service] = key
    return sorted(oldest, key=oldest.__getitem__)


def admit_fcfs(
    state: EngineState, service: str, num_running: int, max_tokens: int | None = None
) -> list[Request]:
    """Waiting requests of `service` in arrival order while limits allow (head-of-line
    blocking, as in vLLM): at most `max_tokens` prompt tokens (default: the engine's batch
    limit). Keeps one free page per running request as growth headroom."""
    limits, kv = state.limits, state.kv
    max_tokens = limits.max_batched_tokens if max_tokens is None else max_tokens
    prefill: list[Request] = []
    wants: list[tuple[Request, int]] = []
    tokens = 0
    for r in state.waiting:
        if r.service != service:
            continue
        n = r.context_tokens
        if num_running + len(prefill) >= limits.max_batch_size:
            break
        if prefill and tokens + n > max_tokens:
            break
        # the engine allocates the context plus the token this prefill produces
        need = sum(kv.extra_pages(q, t) for q, t in wants) + kv.extra_pages(r, n + 1)
        if need + num_running > kv.free_pages(service):
            break
        prefill.append(r)
        wants.append((r, n + 1))
        tokens += n
    return prefill


register("fcfs")(FCFSScheduler)
