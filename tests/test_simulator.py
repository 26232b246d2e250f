"""The simulator drives Controller + GroupEngine: accounting, determinism, fusion, limits."""

from __future__ import annotations

import dataclasses

import pytest

from seallm.config import EngineSpec
from seallm.costmodel import CostModel
from seallm.metrics import summarize
from seallm.request import Status
from seallm.runtime.sim import simulate
from seallm.systems import get_system
from seallm.workload import TraceRecord, generate

VLLM = get_system("vllm")


def records_for(cfg, seed=None, rate_scale=1.0):
    services = [(s.name, s.weight) for s in cfg.services]
    return generate(
        cfg.workload, services, cfg.duration_s, cfg.seed if seed is None else seed, rate_scale
    )


def test_every_request_is_accounted_for(small_config):
    recs = records_for(small_config, rate_scale=3.0)
    res = simulate(small_config, VLLM, recs)
    assert len(res.requests) == len(recs) > 100
    assert {r.id for r in res.requests} == set(range(len(recs)))
    for r in res.requests:
        if r.status is Status.FINISHED:
            assert r.generated == r.output_tokens
            assert r.arrival <= r.first_token_time <= r.finish_time <= res.end_time + 1e-9
        else:
            assert r.status is Status.REJECTED or res.end_time >= small_config.duration_s
    row = summarize(
        res.requests, {s.name: 5.0 for s in small_config.services}, res.end_time, "vllm"
    )
    assert row.completed + row.rejected <= row.requests == len(recs)


def test_same_seed_same_result_different_seed_different(small_config):
    a = simulate(small_config, VLLM, records_for(small_config, seed=1))
    b = simulate(small_config, VLLM, records_for(small_config, seed=1))
    c = simulate(small_config, VLLM, records_for(small_config, seed=2))
    fa = [(r.id, r.finish_time) for r in a.requests]
    assert fa == [(r.id, r.finish_time) for r in b.requests]
    assert fa != [(r.id, r.finish_time) for r in c.requests]


def test_fused_iterations_equal_one_by_one(small_config):
    small_config.engine = EngineSpec(max_batch_size=8)
    small_config.drain_s = 1e5  # every request finishes: no run-end cut to compare
    recs = records_for(small_config, rate_scale=4.0)
    fused = simulate(small_config, VLLM, recs, fuse=True)
    single = simulate(small_config, VLLM, recs, fuse=False)
    assert sum(e.iterations for e in fused.controller.engines.values()) == sum(
        e.iterations for e in single.controller.engines.values()
    )
    assert sum(e.steps for e in fused.controller.engines.values()) < sum(
        e.steps for e in single.controller.engines.values()
    )
    for f, s in zip(fused.requests, single.requests, strict=True):
        assert f.status == s.status
        assert f.finish_time == pytest.approx(s.finish_time, rel=1e-9, abs=1e-9)
        assert f.first_token_time == pytest.approx(s.first_token_time, rel=1e-9, abs=1e-9)


def test_a_request_alone_takes_its_standalone_latency(small_config):
    rec = [TraceRecord(1.0, "code-13b", 500, 40)]
    res = simulate(small_config, VLLM, rec)
    (r,) = res.requests
    assert r.status is Status.FINISHED
    assert r.finish_time - r.arrival == pytest.approx(r.standalone, rel=1e-9)
    cost = CostModel(small_config.cluster.device_spec)
    mc = cost.for_model(
        small_config.service("code-13b").model_spec, res.controller.engines[r.group].tp
    )
    assert r.first_token_time - r.arrival == pytest.approx(mc.prefill_time(500), rel=1e-9)


def test_fcfs_serves_in_arrival_order_with_batch_one(small_config):
    small_config.engine = EngineSpec(max_batch_size=1)
    recs = [TraceRecord(0.01 * i, "chat-7b", 100 + 50 * (i % 3), 20 + 7 * i) for i in range(8)]
    res = simulate(small_config, VLLM, recs)
    finish = [r.finish_time for r in res.requests if r.group == res.requests[0].group]
    assert finish == sorted(finish)


def test_memory_pressure_preempts_and_still_completes(small_config):
    # A KV pool of ~4k tokens of a 7B model: long requests must preempt and recompute.
    small_config.services = small_config.services[:1]
    small_config.cluster.gpus_per_node = 1
    small_config.engine = EngineSpec(memory_utilization=0.182, min_kv_fraction=0.01)
    recs = [TraceRecord(0.0, "chat-7b", 900, 1000) for _ in range(8)]
    res = simulate(small_config, VLLM, recs)
    engines = res.controller.engines.values()
    assert sum(e.preemptions for e in engines) > 0
    assert all(r.status is Status.FINISHED and r.generated == 1000 for r in res.requests)
    assert all(e.kv.stats().used_bytes == 0 for e in engines)


def test_too_long_and_unknown_requests_are_rejected_with_a_reason(small_config):
    recs = [
        TraceRecord(0.0, "chat-7b", 4000, 500),  # 4500 > llama-2's 4096 context
        TraceRecord(0.1, "nope", 10, 10),
        TraceRecord(0.2, "chat-7b", 10, 10),
    ]
    res = simulate(small_config, VLLM, recs)
    too_long, unknown, ok = res.requests
    assert too_long.status is Status.REJECTED and "context of 4096" in too_long.error
    assert unknown.status is Status.REJECTED and "unknown service" in unknown.error
    assert ok.status is Status.FINISHED


def test_overload_leaves_unfinished_requests_reported(small_config):
    cfg = dataclasses.replace(small_config, duration_s=20.0, drain_s=1.0)
    res = simulate(cfg, VLLM, records_for(cfg, rate_scale=30.0))
    unfinished = [r for r in res.requests if not r.done]
    assert unfinished and res.end_time == pytest.approx(21.0)
    row = summarize(res.requests, {s.name: 5.0 for s in cfg.services}, res.end_time, "vllm")
    assert row.completed < row.requests
