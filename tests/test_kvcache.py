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
