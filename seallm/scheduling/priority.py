"""Preemptive priority scheduling over the co-located models of a group.

The shared mechanism of the doubling-budget scheduler and its ablations: every ready request
(queued, running or swapped) sits in a per-model index sorted by its priority key (smaller
runs first). Each iteration runs one model, the model of the highest-priority request; its
batch is that model's ready requests in priority order within the batch, token and memory
limits. A request that needs memory may take it from lower-priority requests holding device KV
(the engine swaps or drops them). A request that has not run for `ageing_s` goes first, so
none starves. Subclasses define the key and how attained service changes it.

Keys only change when a request runs (`account`), so the index is kept sorted incrementally
and a decision costs O(batch + models), not O(queue).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections.abc import Sequence

from seallm.config import EngineSpec
from seallm.profile import ServiceProfile
from seallm.request import Request, Status
from seallm.scheduling.base import Decision, EngineState

Entry = tuple  # (*key, arrival, id)


class PriorityScheduler:
    name = "priority"

    def __init__(self, profiles: dict[str, ServiceProfile], limits: EngineSpec) -> None:
        self.profiles = profiles
        self.ageing_s = limits.ageing_s
        self.index: dict[str, list[Entry]] = {s: [] for s in profiles}
        self.entry: dict[int, Entry] = {}
        self.reqs: dict[int, Request] = {}
        self._ages: list[tuple[float, int]] = []  # (last_run, id), stale entries skipped

    # -- policy-specific ----------------------------------------------------------------
    def init(self, req: Request) -> None:
        """Set the request's scheduling state on arrival."""

    def key(self, req: Request) -> tuple[float, ...]:
        raise NotImplementedError

    def charge(self, req: Request, duration: float) -> None:
        req.attained += duration

    def valid_for(self, req: Request) -> float:
        """Seconds of further service after which `req`'s key may change (inf: never)."""
        return math.inf

    # -- lifecycle hooks ------------------------------------------------------------------
    def admit(self, req: Request, now: float) -> None:
        self.init(req)
        self._insert(req)

    def account(self, reqs: Sequence[Request], duration: float, now: float) -> None:
        for r in reqs:
            self._remove(r)
            if now - duration - r.last_run >= self.ageing_s:
                self.on_aged(r)
            self.charge(r, duration)
            r.last_run = now
            self._insert(r)

    def on_aged(self, req: Request) -> None:
        """An aged request is running again (a policy may reset its level)."""

    def release(self, req: Request) -> None:
        if req.id in self.entry:
            self._remove(req)
        self.reqs.pop(req.id, None)

    def _insert(self, r: Request) -> None:
        e = (*self.key(r), r.arrival, r.id)
        insort(self.index[r.service], e)
        self.entry[r.id] = e
        self.reqs[r.id] = r
        heapq.heappush(self._ages, (r.last_run, r.id))

    def _remove(self, r: Request) -> None:
        e = self.entry.pop(r.id)
        lst = self.index[r.service]
        del lst[bisect_left(lst, e)]

    def _oldest(self) -> Request | None:
        """The ready request that has waited longest since it last ran."""
        while self._ages:
            last, rid = self._ages[0]
            r = self.reqs.get(rid)
            if r is not None and r.last_run == last and rid in self.entry:
                return r
            heapq.heappop(self._ages)
        return None

    # -- the decision -----------------------------------------------------------------------
    def schedule(self, state: EngineState, now: float) -> Decision:
        oldest = self._oldest()
        aged = oldest if oldest is not None and now - oldest.last_run >= self.ageing_s else None
        if aged is not None:
            service = aged.service
        else:
            heads = [(lst[0], s) for s, lst in self.index.items() if lst]
            if not heads:
                return Decision()
            service = min(heads)[1]
        d = self._fill(state, service, aged)
        if d.empty:
            return d
        deadline = oldest.last_run + self.ageing_s if oldest is not None else math.inf
        if aged is not None:
            deadline = now  # one iteration: the aged request's key changes as it runs
        budget = min((self.valid_for(r) for r in d.decode), default=math.inf)
        d.stop_at = min(deadline, now + budget)
        return d

    def _fill(self, state: EngineState, service: str, aged: Request | None) -> Decision:
        kv, lim = state.kv, state.limits
        d = Decision(service)
        running_left = sum(1 for r in state.running if r.service == service)
        order = [self.entry[aged.id]] if aged is not None else []
        order += self.index[service]
        taken: set[int] = set()
        evicted: set[int] = set()
        tokens = pages = 0
        free = kv.free_pages(service)
        victims: list[Request] | None = None
        blocked = False
        for e in order:
            rid = e[-1]
            if rid in taken or rid in evicted:
                continue
            r = self.reqs[rid]
            running = r.status is Status.RUNNING
            running_left -= running
            if len(taken) >= lim.max_batch_size or (blocked and running_left <= 0 and not running):
                break
            if blocked and not running:
                continue
            ctx = r.context_tokens
            need_tokens = ctx if r.status is Status.QUEUED else 1
            need_pages = kv.extra_pages(r, ctx + 1)
            if taken and tokens + need_tokens > lim.max_batched_tokens:
                blocked = True
                continue
            if pages + need_pages > free:
                if victims is None:
                    victims = self._victims(state, service)
                key = e if r is not aged else ()
                while pages + need_pages > free and victims and self.entry[victims[-1].id] > key:
                    v = victims.pop()
                    d.preempt.append(v)
                    evicted.add(v.id)
                    free += len(kv.page_tables.get(v.id, ()))
                if pages + need_pages > free:
                    blocked = True
                    continue
            taken.add(rid)
            tokens += need_tokens
            pages += need_pages
            if r.status is Status.QUEUED:
                d.prefill.append(r)
            elif r.status is Status.SWAPPED:
                d.swap_in.append(r)
            else:
                d.decode.append(r)
        return d

    def _victims(self, state: EngineState, service: str) -> list[Request]:
        """Requests holding device KV in `service`'s pool, highest priority first (victims are
        popped from the end)."""
        pool = state.kv.pool_of(service)
        held = [r for r in state.running if state.kv.pool_of(r.service) is pool]
        return sorted(held, key=lambda r: self.entry[r.id])
