"""Paged KV caches of a group: per-model static partitions, or one unified pool.

`StaticKVCache` is vLLM's layout applied per model: each co-located model gets its own
partition of fixed-size token blocks, and memory free in one partition cannot serve another.
`UnifiedKVCache` is seallm's: one pool of fixed-size *byte* pages; a page holds all layers' K
and V of `page_bytes // bytes_per_token(model)` tokens, so any model can take any free page.
Both keep a real page table (page ids) per request, which the torch executor indexes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from seallm.request import Request
from seallm.specs import ModelSpec


class KVFull(RuntimeError):
    """Not enough free pages; the engine must preempt before allocating."""


@dataclass(frozen=True)
class KVStats:
    total_bytes: float
    used_bytes: float  # bytes of pages held by requests
    token_bytes: float  # bytes actually holding K/V of tokens
    free_pages: int

    @property
    def utilization(self) -> float:
        return self.used_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def fragmentation(self) -> float:
        """Share of held page bytes that hold no token (internal fragmentation)."""
        return 1.0 - self.token_bytes / self.used_bytes if self.used_bytes else 0.0


class _Pool:
    """Free list of page ids [first, first + num_pages)."""

    def __init__(self, first: int, num_pages: int) -> None:
        self.first = first  # executors map page ids to their pool's pages from here
        self.num_pages = num_pages
        self.free = list(range(first + num_pages - 1, first - 1, -1))

    def take(self, n: int) -> list[int]:
        if n > len(self.free):
            raise KVFull(f"need {n} pages, {len(self.free)} free")
        taken = self.free[-n:] if n else []
        del self.free[len(self.free) - n :]
        return taken


class PagedKVCache:
    """Shared mechanics: page tables, growth, release, decode look-ahead, statistics.

    Subclasses say which pool serves a service and how many tokens one of its pages holds.
    """

    shared: bool  # one pool for every model (True) or one per model (False)

    def __init__(self, models: dict[str, ModelSpec], tp: int) -> None:
        self.models = models
        self.tp = tp
        self.page_tables: dict[int, list[int]] = {}
        self.held_tokens: dict[int, int] = {}
        self._service_of: dict[int, str] = {}
        self.tokens_per_page: dict[str, int] = {}
        self.page_bytes: dict[str, float] = {}  # bytes of one page for the service (whole group)
        self._token_size = {s: m.kv_bytes_per_token for s, m in models.items()}
        self._pool_of: dict[str, _Pool] = {}
        # Running totals, so that statistics cost O(1) on the engine's step path.
        self._used_bytes = 0.0
        self._token_bytes = 0.0

    # -- queries ------------------------------------------------------------------------
    def pages_for(self, service: str, tokens: int) -> int:
        return -(-tokens // self.tokens_per_page[service])

    def pool_of(self, service: str) -> object:
        """An identity for the pool serving `service` (shared by all in a unified cache)."""
        return self._pool_of[service]

    def free_pages(self, service: str) -> int:
        return len(self._pool_of[service].free)

    def capacity_tokens(self, service: str) -> int:
        """Tokens of this service the cache could hold if it held nothing else."""
        return self._pool_of[service].num_pages * self.tokens_per_page[service]

    def extra_pages(self, req: Request, tokens: int) -> int:
        """Pages `req` must gain to hold `tokens` tokens in total."""
        # On every scheduler's path for every request: pages_for inlined.
        need = -(-tokens // self.tokens_per_page[req.service])
        table = self.page_tables.get(req.id)
        if table is not None:
            need -= len(table)
        return need if need > 0 else 0

    def can_hold(
        self, wants: Iterable[tuple[Request, int]], releasing: Iterable[Request] = ()
    ) -> bool:
        """Whether every (request, total tokens) can be satisfied at once, after the pages of
        `releasing` (requests about to be preempted) are freed."""
        need: dict[int, int] = {}
        for req, tokens in wants:
            pool = id(self._pool_of[req.service])
            need[pool] = need.get(pool, 0) + self.extra_pages(req, tokens)
        for req in releasing:
            pool = id(self._pool_of[req.service])
            need[pool] = need.get(pool, 0) - len(self.page_tables.get(req.id, ()))
        pools = {id(p): p for p in self._pool_of.values()}
        return all(n <= len(pools[p].free) for p, n in need.items())

    def max_decode_steps(self, reqs: Sequence[Request], limit: int) -> int:
        """Largest k <= limit such that every request can grow by k tokens at once.

        A request holding h pages of t tokens each, with context c, needs its (j+1)-th new
        page once it grows by (h + j) t - c + 1 tokens: the growths at which each pool's
        requests need pages, sorted, say how far the pool's free pages last."""
        if not reqs:
            return limit
        # Usually every pool can serve all `limit` growths: count the pages (no list) first,
        # per service, then per pool.
        need: dict[str, int] = {}
        tables, tokens_per_page = self.page_tables, self.tokens_per_page
        for r in reqs:
            service = r.service
            tpp = tokens_per_page[service]
            k = len(tables.get(r.id, ())) * tpp - (r.prompt_tokens + r.generated) + 1
            if k <= limit:
                need[service] = need.get(service, 0) + (limit - k) // tpp + 1
        pool_need: dict[int, int] = {}
        for service, n in need.items():
            key = id(self._pool_of[service])
            pool_need[key] = pool_need.get(key, 0) + n
        pools = {id(p): p for p in self._pool_of.values()}
        if all(n <= len(pools[key].free) for key, n in pool_need.items()):
            return max(0, limit)
        return self._steps_until_full(reqs, limit)

    def _steps_until_full(self, reqs: Sequence[Request], limit: int) -> int:
        """`max_decode_steps` when some pool runs out within `limit` growths: every growth at
        which a page is needed, per pool, sorted."""
        need: dict[int, list[int]] = {}
        pools: dict[int, _Pool] = {}
        tables = self.page_tables
        for r in reqs:
            pool = self._pool_of[r.service]
            tpp = self.tokens_per_page[r.service]
            at = need.setdefault(id(pool), [])
            pools[id(pool)] = pool
            k = len(tables.get(r.id, ())) * tpp - (r.prompt_tokens + r.generated) + 1
            while k <= limit:
                at.append(k)
                k += tpp
        best = limit
        for key, at in need.items():
            free = len(pools[key].free)
            if len(at) > free:
                at.sort()
                best = min(best, at[free] - 1)
        return max(0, best)

    # -- changes ------------------------------------------------------------------------
    def allocate(self, req: Request, tokens: int) -> None:
        """Grow `req`'s page table to cover `tokens` tokens (raises KVFull, changing nothing)."""
        extra = self.extra_pages(req, tokens)
        taken = self._pool_of[req.service].take(extra) if extra else []
        self.page_tables.setdefault(req.id, []).extend(taken)
        self._service_of[req.id] = req.service
        held = self.held_tokens.get(req.id, 0)
        if tokens > held:
            self.held_tokens[req.id] = tokens
            self._token_bytes += (tokens - held) * self._token_size[req.service]
        self._used_bytes += extra * self.page_bytes[req.service]

    def grow(self, reqs: Iterable[Request]) -> None:
        """`allocate(r, r.context_tokens)` for each request in turn: a decode step's growth,
        on the engine's path for every request of every step, so written out flat. Raises
        KVFull as `allocate` does (the requests before keep what they got)."""
        tables, held_tokens = self.page_tables, self.held_tokens
        tokens_per_page, token_size = self.tokens_per_page, self._token_size
        for r in reqs:
            rid, service, tokens = r.id, r.service, r.prompt_tokens + r.generated
            table = tables.get(rid)
            if table is None:  # no pages yet: the general case
                self.allocate(r, tokens)
                continue
            extra = -(-tokens // tokens_per_page[service]) - len(table)
            if extra > 0:
                table.extend(self._pool_of[service].take(extra))
                self._used_bytes += extra * self.page_bytes[service]
            held = held_tokens.get(rid, 0)
            if tokens > held:
                held_tokens[rid] = tokens
                self._token_bytes += (tokens - held) * token_size[service]

    def release(self, req: Request) -> int:
        """Free all of `req`'s pages; returns how many."""
        table = self.page_tables.pop(req.id, [])
        held = self.held_tokens.pop(req.id, 0)
        service = self._service_of.pop(req.id, req.service)
        self._pool_of[service].free.extend(reversed(table))
        self._used_bytes -= len(table) * self.page_bytes[service]
        self._token_bytes -= held * self._token_size[service]
        return len(table)

    def stats(self) -> KVStats:
        free = sum(len(p.free) for p in self._pools)
        return KVStats(self.total_bytes, self._used_bytes, self._token_bytes, free)

    # The pools never change once a subclass has built them: the engine reads its statistics
    # every step, so what depends only on the pools is computed once.
    @functools.cached_property
    def _pools(self) -> list[_Pool]:
        """Each pool once (a unified cache's one pool serves every service)."""
        return list({id(p): p for p in self._pool_of.values()}.values())

    @functools.cached_property
    def total_bytes(self) -> float:
        seen: dict[int, float] = {}
        for s, p in self._pool_of.items():
            seen[id(p)] = p.num_pages * self.page_bytes[s]
        return sum(seen.values())


class StaticKVCache(PagedKVCache):
    shared = False

    """Per-model partitions of `block_tokens`-token blocks (vLLM's PagedAttention layout).

    `shares` splits `kv_bytes` among the models (equal shares by default).
    """

    def __init__(
        self,
        models: dict[str, ModelSpec],
        tp: int,
        kv_bytes: float,
        block_tokens: int = 16,
        shares: dict[str, float] | None = None,
    ) -> None:
        super().__init__(models, tp)
        shares = shares or {s: 1.0 for s in models}
        total_share = sum(shares[s] for s in models)
        first = 0
        for s, m in models.items():
            self.tokens_per_page[s] = block_tokens
            self.page_bytes[s] = block_tokens * m.kv_bytes_per_token
            n = int(kv_bytes * shares[s] / total_share // self.page_bytes[s])
            self._pool_of[s] = _Pool(first, n)
            first += n


class UnifiedKVCache(PagedKVCache):
    shared = True

    """One pool of `page_bytes`-per-device pages shared by every model of the group."""

    def __init__(
        self, models: dict[str, ModelSpec], tp: int, kv_bytes: float, page_bytes: int
    ) -> None:
        super().__init__(models, tp)
        group_page = page_bytes * tp
        pool = _Pool(0, int(kv_bytes // group_page))
        for s, m in models.items():
            if m.kv_bytes_per_token > group_page:
                raise ValueError(
                    f"page_bytes {page_bytes} holds no token of {m.name} "
                    f"({m.kv_bytes_per_token // tp} bytes per token per device)"
                )
            self.tokens_per_page[s] = int(group_page // m.kv_bytes_per_token)
            self.page_bytes[s] = group_page
            self._pool_of[s] = pool
