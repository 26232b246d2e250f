"""MuxServe's adaptive batch scheduling (ADBS), for the `muxserve` baseline.

MuxServe (Duan et al., "MuxServe: Flexible Spatial-Temporal Multiplexing for Multiple LLM
Serving", ICML'24, §3.3 and Algorithm 2; its `MuxScheduler.adbs_schedule`) schedules the
prefill and decode jobs of the LLMs co-located on a GPU mesh:

- **Prefill first.** A prefill job runs whenever one can be formed, one at a time per mesh;
  the LLMs take their prefill turns round-robin (the turn passes to the next LLM with a
  prefill that fits). A prefill batch is the LLM's oldest waiting requests, first-come
  first-served with head-of-line blocking, up to the token and batch limits.
- **Decode jobs fill the rest.** Every LLM with running requests decodes, its batch capped
  at `max_batch_size`; their processes run concurrently, one iteration per round. Which of
  them get their SM parts beside the prefill (tried round-robin, MuxServe's
  `switch_decoding_model`) is the executor's gate (`executor/spatial.py`): the others wait
  for the next step.
- **Token-block quotas.** The LLMs share one KV space (the unified cache); to keep one LLM
  from taking it all, each has a quota of KV blocks (pages), initially in proportion to its
  per-token KV size (every LLM gets the same number of tokens, MuxServe's `fix` initial
  quota: the engine does not know rates in advance). A prefill is admitted only within the
  LLM's quota. Every `ADAPT_S` seconds (MuxServe: 8 s) quotas are adapted: an LLM using under
  90% of its quota gives up to (95% - its use) of it; an LLM using 90% or more, or blocked by
  its quota, while requests wait, takes max(10% of its use, what its oldest waiting request
  lacks) from those, in proportion to what each gives up (`adapt_max_num_seqs`). An LLM with
  waiting requests gives nothing (it needs its quota). MuxServe counts quotas in sequences
  of the mean length; counting pages is the same rule, exact.
- **Preemption.** When decode growth finds no free page, the newest requests of the LLM
  furthest over its quota are preempted and recomputed later (MuxServe returns them to the
  waiting queue); no prefill runs in that step.

No starvation: prefill turns rotate over every LLM with waiting requests, every running
request decodes in every round, an LLM blocked by its quota while others leave theirs unused
gets quota at the next adaptation, and an LLM with nothing running may always admit one
request past its quota.
"""

from __future__ import annotations

import math

from seallm.config import EngineSpec
from seallm.kvcache import PagedKVCache
from seallm.profile import ServiceProfile
from seallm.request import Request
from seallm.scheduling.base import Decision, EngineState, StatelessHooks, fit_decode, register

ADAPT_S = 8.0  # seconds between quota adaptations (MuxServe's adapt_interval)
BUSY = 0.9  # an LLM using this share of its quota or more is utilized
KEEP = 0.95  # an under-utilized LLM keeps (its use + 5%) of its quota
GROW = 0.1  # a utilized LLM asks for this share of its use more


class ADBSScheduler(StatelessHooks):
    name = "adbs"

    def __init__(self, profiles: dict[str, ServiceProfile], limits: EngineSpec) -> None:
        self.services = list(profiles)
        self.limits = limits
        self.quota: dict[str, int] = {}  # pages; set at the first decision (needs the cache)
        self.next_adapt = ADAPT_S
        self.turn = len(self.services) - 1  # the LLM that prefilled last

    # -- quotas --------------------------------------------------------------------------------
    def init_quota(self, kv: PagedKVCache) -> None:
        if not kv.shared:  # static partitions are the quotas already
            self.quota = {s: _pool_pages(kv, s) for s in self.services}
            return
        total = _pool_pages(kv, self.services[0])
        # Pages per token: MuxServe's blocks per token (heads x layers), in this cache's pages.
        weight = {s: 1 / kv.tokens_per_page[s] for s in self.services}
        norm = sum(weight.values())
        self.quota = {s: int(total * weight[s] / norm) for s in self.services}

    def adapt(self, state: EngineState) -> None:
        """Move quota from LLMs that leave theirs unused to LLMs that need more."""
        if not state.kv.shared:
            return
        held = held_pages(state)
        head = head_need(state)
        give: dict[str, int] = {}
        want: dict[str, float] = {}
        for s in self.services:
            q = self.quota[s]
            use = held[s] / q if q > 0 else math.inf
            if s in head and (use >= BUSY or held[s] + head[s] > q):
                want[s] = max(GROW * held[s], held[s] + head[s] - q, 1)
            elif s not in head and use < BUSY:
                give[s] = int((KEEP - use) * q)
        spare = sum(give.values())
        if not want or spare <= 0:
            return
        share = {d: g / spare for d, g in give.items()}
        for s, w in sorted(want.items(), key=lambda item: (-item[1], item[0])):
            for d in share:
                take = min(math.ceil(w * share[d]), give[d])
                give[d] -= take
                self.quota[d] -= take
                self.quota[s] += take

    # -- the decision --------------------------------------------------------------------------
    def schedule(self, state: EngineState, now: float) -> Decision:
        if not self.quota:
            self.init_quota(state.kv)
        if now >= self.next_adapt:
            self.adapt(state)
            self.next_adapt = (math.floor(now / ADAPT_S) + 1) * ADAPT_S
        held = held_pages(state)
        decode, preempt = self._decode(state, held)
        prefill: list[Request] = []
        if not preempt:  # no page to spare: no prefill this step (MuxServe: wait for cache)
            n = len(self.services)
            for i in range(1, n + 1):
                s = self.services[(self.turn + i) % n]
                prefill = self._prefill(state, s, held[s])
                if prefill:
                    self.turn = (self.turn + i) % n
                    break
        if not prefill and not decode:
            return Decision()
        service = prefill[0].service if prefill else decode[0].service
        return Decision(service, prefill, decode, preempt=preempt, stop_at=self.next_adapt)

    def _decode(
        self, state: EngineState, held: dict[str, int]
    ) -> tuple[list[Request], list[Request]]:
        """Every LLM's running requests, oldest first, up to the batch limit per LLM; the LLM
        furthest over its quota last, so that a page shortage preempts its newest first."""
        by_service: dict[str, list[Request]] = {}
        for r in state.running:
            rs = by_service.setdefault(r.service, [])
            if len(rs) < self.limits.max_batch_size:
                rs.append(r)
        order = sorted(by_service, key=lambda s: held[s] - self.quota.get(s, 0))
        decode = [r for s in order for r in by_service[s]]
        return decode, fit_decode(state, decode)

    def _prefill(self, state: EngineState, service: str, held: int) -> list[Request]:
        """`service`'s oldest waiting requests that fit its quota, the free pages (keeping one
        per running request for its growth) and the batch and token limits."""
        kv, lim = state.kv, state.limits
        free = kv.free_pages(service) - (
            len(state.running) if kv.shared else state.running_count.get(service, 0)
        )
        room = min(free, self.quota[service] - held)
        running = state.running_count.get(service, 0)
        batch: list[Request] = []
        tokens = pages = 0
        for r in state.waiting:
            if r.service != service:
                continue
            need = kv.extra_pages(r, r.context_tokens + 1)
            if running + len(batch) >= lim.max_batch_size:
                break
            if batch and tokens + r.context_tokens > lim.max_batched_tokens:
                break
            # An LLM holding nothing may take one request past its quota (free pages allowing):
            # no LLM waits forever on a quota smaller than one request.
            if pages + need > room and (batch or held or need > free):
                break
            batch.append(r)
            tokens += r.context_tokens
            pages += need
        return batch


def _pool_pages(kv: PagedKVCache, service: str) -> int:
    return kv.capacity_tokens(service) // kv.tokens_per_page[service]


def held_pages(state: EngineState) -> dict[str, int]:
    """Pages held by each LLM's running requests."""
    held = dict.fromkeys(state.running_count, 0)
    for r in state.running:
        held[r.service] = held.get(r.service, 0) + len(state.kv.page_tables.get(r.id, ()))
    return held


def head_need(state: EngineState) -> dict[str, int]:
    """Pages the oldest waiting request of each LLM with waiting requests needs."""
    need: dict[str, int] = {}
    for r in state.waiting:
        if r.service not in need:
            need[r.service] = state.kv.extra_pages(r, r.context_tokens + 1)
    return need


register("adbs")(ADBSScheduler)
