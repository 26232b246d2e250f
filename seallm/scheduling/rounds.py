"""Rounds: after a policy picks its batch (the round's highest-priority job), the running
requests of the group's other models may join the step, each model's batch one more job of
the round (`colocation.py` prices it).

A model joins while the round stays within (1 + `round_join_slowdown`) of the time of the
first job alone, so the highest-priority work is slowed by at most that fraction. The default
bound is inf (every running model joins, measured best: docs/results.md); with a finite bound
a memory-bound decode on a GPU joins another job almost for free, while on a CPU (jobs one
after another) only a job much shorter than the first one joins. Joining jobs only decode
requests that already run: they admit nobody, evict nobody and take only free pages, so a join
never changes what the policy decided for its own batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from seallm.colocation import JobCost, RoundPricer
from seallm.request import Request
from seallm.scheduling.base import Decision, EngineState


def decision_jobs(pricer: RoundPricer, d: Decision) -> list[JobCost]:
    """The jobs of a decision, one per model."""
    by_service: dict[str, tuple[list[int], list[Request]]] = {}
    for r in d.prefill:
        by_service.setdefault(r.service, ([], []))[0].append(r.context_tokens)
    for r in (*d.decode, *d.swap_in):
        by_service.setdefault(r.service, ([], []))[1].append(r)
    return [
        pricer.job(s, lens, len(dec), sum(r.context_tokens for r in dec))
        for s, (lens, dec) in by_service.items()
    ]


def join_round(
    d: Decision,
    state: EngineState,
    pricer: RoundPricer,
    slowdown: float,
    candidates: Iterable[tuple[str, Iterable[Request]]],
) -> list[Request]:
    """Add to `d.decode` the running requests of other models that may join its round;
    `candidates` are (service, its running requests in priority order), best service first.
    Returns the requests that joined."""
    if d.empty:
        return []
    bounded = slowdown != math.inf  # an unbounded join needs no pricing
    jobs = decision_jobs(pricer, d) if bounded else []
    limit = (1.0 + slowdown) * pricer.time(jobs[:1]) if bounded else math.inf
    kv = state.kv
    taken = {r.id for r in (*d.prefill, *d.decode, *d.swap_in)}
    # Free pages per pool after the decision's own allocations and preemptions.
    free: dict[int, int] = {}

    def pool_free(service: str) -> int:
        pool = id(kv.pool_of(service))
        if pool not in free:
            n = kv.free_pages(service)
            for r in d.preempt:
                if id(kv.pool_of(r.service)) == pool:
                    n += len(kv.page_tables.get(r.id, ()))
            for r in (*d.prefill, *d.decode, *d.swap_in):
                if id(kv.pool_of(r.service)) == pool:
                    n -= kv.extra_pages(r, r.context_tokens + 1)
            free[pool] = n
        return free[pool]

    joined: list[Request] = []
    seen = {r.service for r in (*d.prefill, *d.decode, *d.swap_in)}
    skip = taken | {r.id for r in d.preempt}
    tables, max_batch = kv.page_tables, state.limits.max_batch_size
    for service, running in candidates:
        if service in seen:
            continue
        seen.add(service)
        room = pool_free(service)
        tpp = kv.tokens_per_page[service]
        batch: list[Request] = []
        # Every running request of every co-located model passes here at each step: the
        # page count is inlined (a running request holds a page table: `extra_pages`).
        for r in running:
            if len(batch) >= max_batch:
                break
            if r.id in skip:
                continue
            need = -(-(r.prompt_tokens + r.generated + 1) // tpp) - len(tables[r.id])
            if need > room:
                break  # keep priority order: the rest wait for this one
            if need > 0:
                room -= need
            batch.append(r)
        if not batch:
            continue
        if bounded:
            job = pricer.job(service, [], len(batch), sum(r.context_tokens for r in batch))
            if pricer.time([*jobs, job]) > limit:
                continue
            jobs.append(job)
        free[id(kv.pool_of(service))] = room
        d.decode.extend(batch)
        joined.extend(batch)
    return joined
