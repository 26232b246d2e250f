"""Static and unified paged KV caches: capacity, page tables, look-ahead, statistics."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seallm.catalog import MODELS
from seallm.kvcache import KVFull, StaticKVCache, UnifiedKVCache
from seallm.request import Request

M7, M13 = MODELS["llama-2-7b"], MODELS["llama-2-13b"]
GB = 1e9


def req(i, svc, prompt=100, generated=0):
    return Request(i, svc, prompt, 50, 0.0, generated=generated)


def test_static_partitions_are_separate():
    kv = StaticKVCache({"a": M7, "b": M13}, tp=1, kv_bytes=20 * GB, block_tokens=16)
    # equal shares: 10 GB each, 16-token blocks of each model's token size
    assert kv.free_pages("a") == int(10 * GB // (16 * M7.kv_bytes_per_token))
    assert kv.free_pages("b") == int(10 * GB // (16 * M13.kv_bytes_per_token))
    r = req(0, "a", prompt=kv.capacity_tokens("a"))
    kv.allocate(r, r.prompt_tokens)
    assert kv.free_pages("a") == 0 and kv.free_pages("b") > 0
    with pytest.raises(KVFull):
        kv.allocate(req(1, "a"), 1)


def test_unified_pool_is_shared_and_sized_in_bytes():
    page = 2 * 1024 * 1024
    kv = UnifiedKVCache({"a": M7, "b": M13}, tp=2, kv_bytes=10 * GB, page_bytes=page)
    assert kv.tokens_per_page["a"] == (2 * page) // M7.kv_bytes_per_token
    assert kv.tokens_per_page["b"] == (2 * page) // M13.kv_bytes_per_token
    total = kv.free_pages("a")
    assert total == int(10 * GB // (2 * page)) == kv.free_pages("b")
    r = req(0, "b", prompt=kv.capacity_tokens("b"))
    kv.allocate(r, r.prompt_tokens)
    assert kv.free_pages("a") == 0  # b took the whole pool, a has nothing left
    kv.release(r)
    assert kv.free_pages("a") == total


def test_unified_rejects_pages_smaller_than_a_token():
    with pytest.raises(ValueError, match="holds no token"):
        UnifiedKVCache({"a": M7}, tp=1, kv_bytes=GB, page_bytes=1024)


def test_stats_report_utilization_and_fragmentation():
    kv = StaticKVCache({"a": M7}, tp=1, kv_bytes=GB, block_tokens=16)
    r = req(0, "a", prompt=20)
    kv.allocate(r, 20)  # two blocks, 20 of 32 token slots used
    s = kv.stats()
    assert s.used_bytes == 32 * M7.kv_bytes_per_token
    assert s.fragmentation == pytest.approx(12 / 32)
    assert s.utilization == pytest.approx(s.used_bytes / s.total_bytes)


@settings(max_examples=60, deadline=None)
@given(
    ctx=st.lists(st.integers(1, 300), min_size=1, max_size=6),
    free_tokens=st.integers(0, 400),
    limit=st.integers(1, 64),
)
def test_max_decode_steps_matches_brute_force(ctx, free_tokens, limit):
    kv = StaticKVCache(
        {"a": M7}, tp=1, kv_bytes=(sum(ctx) + len(ctx) * 16 + free_tokens) * M7.kv_bytes_per_token
    )
    reqs = [req(i, "a", prompt=c) for i, c in enumerate(ctx)]
    for r in reqs:
        kv.allocate(r, r.prompt_tokens)
    k = kv.max_decode_steps(reqs, limit)
    assert 0 <= k <= limit
    assert kv.can_hold((r, r.prompt_tokens + k) for r in reqs)
    if k < limit:
        assert not kv.can_hold((r, r.prompt_tokens + k + 1) for r in reqs)


@settings(max_examples=60, deadline=None)
@given(
    reqs=st.lists(
        st.tuples(st.sampled_from("ab"), st.integers(1, 900), st.integers(0, 40)),
        min_size=1,
        max_size=8,
    ),
    spare_pages=st.integers(0, 6),
    limit=st.integers(1, 300),
)
def test_max_decode_steps_of_two_models_in_one_pool_matches_brute_force(reqs, spare_pages, limit):
    models = {"a": MODELS["llama-2-7b"], "b": MODELS["llama-2-13b"]}
    page = 2 * 1024 * 1024
    kv = UnifiedKVCache(models, tp=1, kv_bytes=64 * page, page_bytes=page)
    live = []
    for i, (service, prompt, ahead) in enumerate(reqs):
        r = req(i, service, prompt=prompt)
        if kv.free_pages(service) <= spare_pages or not kv.can_hold([(r, prompt + ahead)]):
            break
        kv.allocate(r, prompt + ahead)  # some requests hold pages ahead of their context
        live.append(r)
    if not live:
        return
    k = kv.max_decode_steps(live, limit)
    assert 0 <= k <= limit
    assert kv.can_hold((r, r.context_tokens + k) for r in live)
    if k < limit:
        assert not kv.can_hold((r, r.context_tokens + k + 1) for r in live)


MODELS3 = {"a": MODELS["llama-2-7b"], "b": MODELS["llama-2-13b"], "c": MODELS["smollm2-135m"]}


def make_cache(kind: str):
    if kind == "unified":
        return UnifiedKVCache(MODELS3, tp=1, kv_bytes=0.5 * GB, page_bytes=2 * 1024 * 1024)
    return StaticKVCache(MODELS3, tp=1, kv_bytes=0.5 * GB, block_tokens=16)


ops = st.lists(
    st.tuples(st.sampled_from("abc"), st.integers(0, 11), st.integers(1, 900), st.booleans()),
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(kind=st.sampled_from(["unified", "static"]), script=ops)
def test_page_ownership_invariants(kind, script):
    """Random grows and releases: no page is owned twice, used + free = total, capacity per
    model matches its tokens per page, and everything is free again when idle."""
    kv = make_cache(kind)
    pools = {id(kv.pool_of(s)): kv.pool_of(s) for s in MODELS3}
    total = sum(p.num_pages for p in pools.values())
    reqs: dict[int, Request] = {}
    for svc, rid, tokens, release in script:
        r = reqs.setdefault(rid, req(rid, svc))
        if release:
            kv.release(r)
            continue
        held = kv.held_tokens.get(r.id, 0)
        try:
            kv.allocate(r, held + tokens)
        except KVFull:
            assert not kv.can_hold([(r, held + tokens)])
        owned = [p for table in kv.page_tables.values() for p in table]
        assert len(owned) == len(set(owned))  # no page owned twice
        free = sum(len(p.free) for p in pools.values())
        assert len(owned) + free == total  # used + free = total
        assert not set(owned) & {p for pool in pools.values() for p in pool.free}
        used = 0.0
        for rid2, table in kv.page_tables.items():  # a table covers its tokens, no more
            svc2 = kv._service_of[rid2]
            assert len(table) == kv.pages_for(svc2, kv.held_tokens[rid2])
            used += len(table) * kv.page_bytes[svc2]
        assert kv.stats().used_bytes == pytest.approx(used)  # running totals stay exact
    for s, m in MODELS3.items():  # capacity per model matches its token size
        assert kv.tokens_per_page[s] == (
            (2 * 1024 * 1024) // m.kv_bytes_per_token if kind == "unified" else 16
        )
        assert kv.capacity_tokens(s) == kv.pool_of(s).num_pages * kv.tokens_per_page[s]
    for r in reqs.values():
        kv.release(r)
    assert sum(len(p.free) for p in pools.values()) == total  # all free when idle
    assert kv.stats().used_bytes == 0


def test_unified_capacity_is_never_below_a_static_partition():
    unified, static = make_cache("unified"), make_cache("static")
    for s in MODELS3:
        # page rounding costs at most one page's worth of tokens per pool
        assert unified.capacity_tokens(s) >= static.capacity_tokens(s)
