"""Preemptive priority scheduling over the co-located models of a group.

The shared mechanism of the doubling-budget scheduler and its ablations: every ready request
(queued, running or swapped) sits in a per-model index sorted by its priority key (smaller
runs first). Each iteration runs one model, the model of the highest-priority request; its
batch is that model's ready requests in priority order within the batch, token and memory
limits. A request that needs memory may take it from lower-priority requests holding device KV
(the engine swaps or drops them). A request that has not run for `ageing_s` goes first, so
none starves. Subclasses define the key and how attained service changes it.

Keys only change when a request runs (`account`), so the index is kept sorted incrementally,
in two lists per model (requests on the device, and the rest) so that a batch whose
admissions are blocked goes straight on with the running requests: a decision costs
O(batch + models), not O(queue).
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Iterator

from seallm.colocation import RoundPricer
from seallm.config import EngineSpec
from seallm.executor.base import Batch, StepOutcome
from seallm.profile import ServiceProfile
from seallm.request import Request, Status
from seallm.scheduling.base import Decision, EngineState
from seallm.scheduling.rounds import join_round

Entry = tuple  # (*key, arrival, id)


class PriorityScheduler:
    name = "priority"
    supports_rounds = True

    def __init__(self, profiles: dict[str, ServiceProfile], limits: EngineSpec) -> None:
        self.profiles = profiles
        self.ageing_s = limits.ageing_s
        # Rounds (`rounds.py`): set by the engine builder for systems that run them.
        self.rounds: RoundPricer | None = None
        self.join_slowdown = limits.round_join_slowdown
        # Per service: entries of requests not on the device (queued, swapped), and running.
        self.index: dict[str, list[Entry]] = {s: [] for s in profiles}
        self.running_index: dict[str, list[Entry]] = {s: [] for s in profiles}
        self.entry: dict[int, Entry] = {}
        self._list_of: dict[int, list[Entry]] = {}
        self.reqs: dict[int, Request] = {}
        # Ready requests by last_run, oldest first: a request that runs moves to the end
        # (last_run only ever becomes "now"), so the oldest is always the first.
        self._by_last_run: OrderedDict[int, None] = OrderedDict()

    # -- policy-specific ----------------------------------------------------------------
    def init(self, req: Request) -> None:
        """Set the request's scheduling state on arrival."""

    def key(self, req: Request) -> tuple[float, ...]:
        raise NotImplementedError

    def charge(self, req: Request, duration: float) -> None:
        req.attained += duration

    # Whether a key changes when attained service reaches the budget (a decode batch then
    # stays valid for min(budget - attained) seconds); otherwise keys only improve as a
    # request runs, which keeps the decision valid.
    budgeted = False

    def may_evict(self, candidate: Request, victim: Request) -> bool:
        """Whether admitting `candidate` may take `victim`'s device KV. Not by default:
        measured under memory pressure (docs/results.md), evicting for admissions, even only
        victims of a lower level, makes evicted requests recompute and come back to evict in
        turn, and throughput collapses. Memory is still taken from the lowest-priority
        holders when the batch's highest-priority running request needs it (`_fill`)."""
        return False

    # -- lifecycle hooks ------------------------------------------------------------------
    def admit(self, req: Request, now: float) -> None:
        self.init(req)
        self._insert(req)
        self._by_last_run[req.id] = None

    def account(self, batch: Batch, outcome: StepOutcome, now: float) -> None:
        start = now - outcome.duration
        # Most requests stay in their list (a running one keeps running), and in rounds a
        # list's requests all run together: a list with many new keys is rebuilt and sorted
        # at once (nearly sorted, so linear), the others take one delete and insert each.
        rekeyed: dict[int, tuple[list[Entry], dict[int, Entry]]] = {}
        running = Status.RUNNING
        for r in batch.requests:
            if start - r.last_run >= self.ageing_s:
                self.on_aged(r)
            self.charge(r, outcome.duration)
            r.last_run = now
            self._by_last_run.move_to_end(r.id)
            lst = self._list_of[r.id]
            if lst is not (self.running_index if r.status is running else self.index)[r.service]:
                self._remove(r)
                self._insert(r)
                continue
            slot = rekeyed.get(id(lst))
            if slot is None:
                slot = rekeyed[id(lst)] = (lst, {})
            slot[1][r.id] = (*self.key(r), r.arrival, r.id)
        entry = self.entry
        for lst, new in rekeyed.values():
            if 4 * len(new) >= len(lst):
                lst[:] = sorted([new.get(e[-1], e) for e in lst])
            else:
                for rid in new:
                    del lst[bisect_left(lst, entry[rid])]
                for e in new.values():
                    insort(lst, e)
            entry.update(new)

    def preempted(self, req: Request) -> None:
        """`req` lost its device KV: it moves to the not-running list."""
        self._remove(req)
        self._insert(req)

    def on_aged(self, req: Request) -> None:
        """An aged request is running again (a policy may reset its level)."""

    def holds_line(self, req: Request) -> bool:
        """Whether `req`, the highest-priority request and off the device, keeps the other
        models from admitting while it waits for memory (an aged request always does)."""
        return False

    def rekey_due(self, now: float) -> float:
        """Re-key the requests whose key changes with time alone, as of `now` (a policy
        whose keys depend on the clock, e.g. slack to a deadline); returns when the next such
        change is due, so a fused run of iterations stops there."""
        return math.inf

    def release(self, req: Request) -> None:
        if req.id in self.entry:
            self._remove(req)
        self.reqs.pop(req.id, None)
        self._by_last_run.pop(req.id, None)

    def _insert(self, r: Request) -> None:
        e = (*self.key(r), r.arrival, r.id)
        lst = (self.running_index if r.status is Status.RUNNING else self.index)[r.service]
        insort(lst, e)
        self._list_of[r.id] = lst
        self.entry[r.id] = e
        self.reqs[r.id] = r

    def _remove(self, r: Request) -> None:
        e = self.entry.pop(r.id)
        lst = self._list_of.pop(r.id)
        del lst[bisect_left(lst, e)]

    def _oldest(self) -> Request | None:
        """The ready request that has waited longest since it last ran."""
        return self.reqs[next(iter(self._by_last_run))] if self._by_last_run else None

    # -- the decision -----------------------------------------------------------------------
    def schedule(self, state: EngineState, now: float) -> Decision:
        rekey_at = self.rekey_due(now)
        oldest = self._oldest()
        aged = oldest if oldest is not None and now - oldest.last_run >= self.ageing_s else None
        heads = sorted(
            (lst[0], s)
            for index in (self.index, self.running_index)
            for s, lst in index.items()
            if lst
        )
        # The model of the highest-priority request runs; if it can do nothing (memory held
        # by others it may not evict), the next model's turn comes, so the group never stalls.
        services = list(dict.fromkeys(s for _, s in heads))
        if aged is not None:
            services.insert(0, aged.service)
        first = aged or (self.reqs[heads[0][0][-1]] if heads else None)
        holds = first is not None and first.status is not Status.RUNNING
        holds = holds and (first is aged or self.holds_line(first))
        d, budget_left = Decision(), math.inf
        for i, service in enumerate(services):
            # While an aged (or, by the policy, urgent) request waits for memory, the other
            # models only decode: their admissions would take the pages it is first in line for.
            admit = i == 0 or not holds
            d, budget_left = self._fill(state, service, aged if i == 0 else None, admit)
            if not d.empty:
                break
        if d.empty:
            return Decision()
        if self.rounds is not None:
            reqs = self.reqs
            candidates = ((s, (reqs[e[-1]] for e in self.running_index[s])) for s in services)
            joined = join_round(d, state, self.rounds, self.join_slowdown, candidates)
            if self.budgeted and joined:
                budget_left = min(budget_left, min(r.budget - r.attained for r in joined))
                budget_left = min(budget_left, self._overtake_in(d.service, joined))
        deadline = oldest.last_run + self.ageing_s if oldest is not None else math.inf
        if aged is not None:
            deadline = now  # one iteration: the aged request's key changes as it runs
        d.stop_at = min(deadline, now + budget_left, rekey_at)
        return d

    def _overtake_in(self, lead: str | None, joined: list[Request]) -> float:
        """Seconds of running together until a joined model's best request ranks above the
        lead model's best one (then the lead changes; a fused run of rounds must stop there,
        so that it equals the same rounds decided one by one). A budgeted key (level, (b - a)
        / L̂) falls at 1 / L̂ per second of service within a level; levels change only at a
        budget crossing, which ends the run anyway."""
        if lead is None:
            return math.inf
        tops = [lst[0] for lst in (self.index[lead], self.running_index[lead]) if lst]
        best = min(tops)
        lead_req = self.reqs[best[-1]]
        lead_rate = 1 / lead_req.estimate if lead_req.status is Status.RUNNING else 0.0
        out = math.inf
        for service in {r.service for r in joined}:
            top = self.running_index[service][0]
            if top[0] != best[0]:
                continue  # a worse level: not before a budget crossing
            rate = 1 / self.reqs[top[-1]].estimate
            if rate > lead_rate:
                out = min(out, max(0.0, (top[1] - best[1]) / (rate - lead_rate)))
        return out

    def _fill(
        self, state: EngineState, service: str, aged: Request | None, admit: bool = True
    ) -> tuple[Decision, float]:
        """The batch of `service`, and the service its decoding requests may still attain
        before one of them crosses its budget (inf unless the policy is budgeted)."""
        # The hot path of every live iteration: plain locals, no per-request method calls.
        kv, lim = state.kv, state.limits
        d = Decision(service)
        counts = state.running_count
        # Pages kept free for the growth of running requests when admitting new ones (one
        # each, like vLLM's watermark), so admitting does not force evictions next iteration.
        headroom = sum(counts.values()) if kv.shared else counts.get(service, 0)
        tpp = kv.tokens_per_page[service]
        tables = kv.page_tables
        free = kv.free_pages(service)
        max_batch, max_tokens = lim.max_batch_size, lim.max_batched_tokens
        max_prefill = lim.round_prefill_tokens if self.rounds is not None else max_tokens
        prefill_tokens = 0
        waiting, running_entries = self.index[service], self.running_index[service]
        i = j = 0
        n_waiting, n_running = len(waiting), len(running_entries)
        first = self.entry[aged.id] if aged is not None else None
        reqs, budgeted = self.reqs, self.budgeted
        running_status, queued_status = Status.RUNNING, Status.QUEUED
        taken: set[int] = set()
        evicted: set[int] = set()
        victims: Iterator[Entry] | None = None
        victim: Entry | None = None
        n = tokens = pages = 0
        blocked = not admit
        min_left = math.inf
        while n < max_batch:
            # Merge the two sorted lists; once admissions are blocked, only running ones.
            if first is not None:
                e, first = first, None
            elif blocked or i >= n_waiting:
                if j >= n_running:
                    break
                e = running_entries[j]
                j += 1
            elif j >= n_running or waiting[i] < running_entries[j]:
                e = waiting[i]
                i += 1
            else:
                e = running_entries[j]
                j += 1
            rid = e[-1]
            if rid in taken or rid in evicted:
                continue
            r = reqs[rid]
            status = r.status
            running = status is running_status
            ctx = r.prompt_tokens + r.generated
            if running:
                need_tokens, reserve = 1, 0
                need_pages = -(-(ctx + 1) // tpp) - len(tables[rid])
            else:
                need_tokens = ctx if status is queued_status else 1
                need_pages, reserve = -(-(ctx + 1) // tpp), headroom
            if n and tokens + need_tokens > max_tokens:
                blocked = True
                continue
            # (the first prefill of a round may be longer: it then runs alone among prefills)
            if (
                status is queued_status
                and prefill_tokens
                and prefill_tokens + need_tokens > max_prefill
            ):
                blocked = True
                continue
            if pages + need_pages + reserve > free:
                if victims is None:
                    victims = self._holders(service, kv.shared)
                    victim = next(victims, None)
                while pages + need_pages + reserve > free and victim is not None:
                    v = reqs[victim[-1]]
                    # The batch's first running request may take pages from any lower-priority
                    # holder, so decoding never deadlocks; other running requests wait for
                    # pages (evicting at every page boundary thrashes). Admissions respect
                    # `may_evict`; an aged request does not evict (under overload that
                    # thrashes): it is first in line, so newer admissions wait behind it
                    # until memory frees.
                    stall = running and n == 0 and victim > e
                    allowed = stall or (r is not aged and self.may_evict(r, v))
                    if v.id in taken or not allowed:
                        break
                    d.preempt.append(v)
                    evicted.add(v.id)
                    free += len(tables.get(v.id, ()))
                    headroom -= 1
                    reserve = 0 if running else headroom
                    victim = next(victims, None)
                if pages + need_pages + reserve > free:
                    blocked = True
                    continue
            taken.add(rid)
            n += 1
            tokens += need_tokens
            pages += need_pages
            if running:
                d.decode.append(r)
                if budgeted and r.budget - r.attained < min_left:
                    min_left = r.budget - r.attained
            elif status is queued_status:
                d.prefill.append(r)
                prefill_tokens += need_tokens
            else:
                d.swap_in.append(r)
        return d, min_left

    def _holders(self, service: str, shared: bool) -> Iterator[Entry]:
        """Entries of the requests holding device KV in `service`'s pool, lowest priority
        first (the running lists are sorted, so this is a lazy merge of their tails)."""
        lists = self.running_index.values() if shared else [self.running_index[service]]
        return heapq.merge(*(reversed(lst) for lst in lists), reverse=True)
