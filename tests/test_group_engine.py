"""GroupEngine on its own: add -> plan -> execute -> commit, aborts, preemption, fusion and
its counters, with the simulator's real parts (CostModel, SimExecutor, schedulers, KV caches
from `runtime.sim.sim_engine_factory`) and no controller or event loop around it."""

from __future__ import annotations

import dataclasses

import pytest

from seallm.config import ClusterSpec, Config, EngineSpec, ServiceSpec
from seallm.costmodel import CostModel
from seallm.engine import GroupEngine
from seallm.placement.plan import GroupPlan
from seallm.request import Request, Status
from seallm.runtime.sim import sim_engine_factory
from seallm.systems import get_system
from seallm.workload import WorkloadSpec

MB = 2**20
# vllm: one model per step, FCFS, static KV; seallm: rounds, slack scheduling, unified KV.
SYSTEMS = ["vllm", "seallm"]


def deployment(pool_mb: float = 64) -> Config:
    """Two Llama-2-7B services on one A100; a KV pool of `pool_mb` (64 MiB holds 128 tokens
    of one model unified, or 64 per model in static partitions)."""
    return Config(
        name="t",
        cluster=ClusterSpec("a100-80gb", 1, 1),
        services=[ServiceSpec("a", "llama-2-7b"), ServiceSpec("b", "llama-2-7b")],
        workload=WorkloadSpec(rate=1.0),
        engine=EngineSpec(kv_pool_bytes=pool_mb * MB),
        duration_s=10.0,
    ).validate()


def engine_for(system: str = "vllm", pool_mb: float = 64, fuse: bool = True) -> GroupEngine:
    cfg = deployment(pool_mb)
    spec = get_system(system)
    return sim_engine_factory(cfg, spec, CostModel(cfg.cluster.device_spec), fuse)(
        GroupPlan(0, 0, 0, 1, ("a", "b"))
    )


def step(engine: GroupEngine, now: float, horizon: float = float("inf")):
    """One step; returns (batch, outcome, finished, end time)."""
    batch = engine.plan(now, horizon)
    assert batch is not None, "the engine has work but planned nothing"
    out = engine.execute(batch, now)
    end = now + out.duration
    return batch, out, engine.commit(batch, out, end), end


def run_until_idle(engine: GroupEngine, now: float = 0.0) -> float:
    while engine.has_work:
        *_, now = step(engine, now)
    return now


def assert_pool_empty(engine: GroupEngine) -> None:
    kv = engine.kv.stats()
    assert kv.used_bytes == 0 and kv.token_bytes == 0
    assert kv.free_pages * min(engine.kv.page_bytes.values()) == pytest.approx(kv.total_bytes)
    assert engine.kv.page_tables == {}


@pytest.mark.parametrize("system", SYSTEMS)
def test_requests_run_to_completion_and_give_back_every_page(system):
    engine = engine_for(system)
    reqs = [Request(i, "ab"[i % 2], 20, 5 + i, arrival=0.1 * i) for i in range(4)]
    for r in reqs:
        engine.add(r, r.arrival)
    assert engine.load == 4 and engine.has_work
    ends: dict[int, float] = {}
    now = 0.4
    while engine.has_work:
        *_, finished, now = step(engine, now)
        ends.update((r.id, now) for r in finished)
    for r in reqs:
        assert r.status is Status.FINISHED and r.generated == r.output_tokens
        assert r.finish_time == ends[r.id]  # stamped with the end of the step that ended it
        assert r.arrival <= r.first_token_time < r.finish_time
    assert engine.load == 0 and not engine.busy
    assert engine.running_count == {"a": 0, "b": 0}
    assert_pool_empty(engine)


def test_plan_reserves_pages_and_commit_applies_the_step():
    engine = engine_for("vllm")
    first, second = Request(0, "a", 20, 3, 0.0), Request(1, "a", 20, 3, 0.5)
    engine.add(second, 0.5)
    engine.add(first, 0.0)  # queued in arrival order, whatever the order of adds
    assert engine.waiting == [first, second]
    batch = engine.plan(1.0)
    assert batch is not None and engine.busy
    assert batch.service == "a" and batch.prefill == [first, second] and batch.decode == []
    per_page = engine.kv.tokens_per_page["a"]
    for r in (first, second):  # the prompt and the token the prefill samples
        assert len(engine.kv.page_tables[r.id]) == -(-21 // per_page)
        assert r.status is Status.QUEUED and r.generated == 0  # nothing happens until commit
    out = engine.execute(batch, 1.0)
    assert out.iterations == 1 and out.duration > 0 and out.finished == []
    engine.commit(batch, out, 1.0 + out.duration)
    assert not engine.busy and engine.waiting == []
    assert engine.running == [first, second] and engine.running_count["a"] == 2
    for r in (first, second):
        assert r.status is Status.RUNNING and r.generated == 1
        assert r.first_token_time == 1.0 + out.duration


def test_a_request_added_while_a_step_runs_waits_for_the_next_plan():
    engine = engine_for("vllm")
    early = Request(0, "a", 20, 4, 0.0)
    engine.add(early, 0.0)
    batch = engine.plan(0.0)
    out = engine.execute(batch, 0.0)
    late = Request(1, "a", 20, 4, 0.001)
    engine.add(late, 0.001)  # the live runtime adds between plan and commit
    engine.commit(batch, out, out.duration)
    assert late not in batch.requests and engine.waiting == [late]
    end = run_until_idle(engine, out.duration)
    assert early.status is late.status is Status.FINISHED and end > out.duration
    assert late.first_token_time > out.duration  # its first token came from a later step


def test_counters_add_up_over_the_steps():
    engine = engine_for("seallm")
    for i in range(6):
        engine.add(Request(i, "ab"[i % 2], 30, 8, 0.0), 0.0)
    steps = iterations = batched = 0
    busy = 0.0
    now = 0.0
    while engine.has_work:
        batch, out, _, now = step(engine, now)
        steps += 1
        iterations += out.iterations
        batched += out.iterations * len(batch.requests)
        busy += out.duration
    assert (engine.steps, engine.iterations, engine.batched) == (steps, iterations, batched)
    assert engine.busy_time == pytest.approx(busy)
    assert 0 < engine.kv_used_time <= engine.busy_time
    assert engine.preemptions == engine.swaps == 0


def test_aborting_a_queued_request_takes_it_out_and_the_rest_go_on():
    engine = engine_for("vllm")
    keep, drop = Request(0, "a", 20, 3, 0.0), Request(1, "b", 20, 3, 0.0)
    engine.add(keep, 0.0)
    engine.add(drop, 0.0)
    assert engine.abort(drop, "client gone")
    assert drop.status is Status.ABORTED and drop.error == "client gone"
    assert drop not in engine.waiting and engine.load == 1
    assert not engine.abort(drop, "again")  # no longer in the engine
    run_until_idle(engine)
    assert keep.status is Status.FINISHED and drop.generated == 0
    assert_pool_empty(engine)


@pytest.mark.parametrize("system", SYSTEMS)
def test_aborting_a_running_request_frees_its_pages(system):
    engine = engine_for(system)
    keep, drop = Request(0, "a", 20, 6, 0.0), Request(1, "a", 20, 6, 0.0)
    engine.add(keep, 0.0)
    engine.add(drop, 0.0)
    *_, now = step(engine, 0.0)
    assert drop.status is Status.RUNNING
    held = len(engine.kv.page_tables[drop.id])
    free = engine.kv.stats().free_pages
    assert engine.abort(drop, "client gone")
    assert drop.status is Status.ABORTED and drop not in engine.running
    assert drop.id not in engine.kv.page_tables
    assert engine.kv.stats().free_pages == free + held
    assert engine.running_count["a"] == 1
    run_until_idle(engine, now)
    assert keep.status is Status.FINISHED and drop.generated == 1
    assert_pool_empty(engine)


def test_aborting_a_finished_request_changes_nothing():
    engine = engine_for("vllm")
    r = Request(0, "a", 20, 2, 0.0)
    engine.add(r, 0.0)
    run_until_idle(engine)
    assert not engine.abort(r, "too late")
    assert r.status is Status.FINISHED and r.error is None


@pytest.mark.parametrize("system", SYSTEMS)
def test_a_full_pool_preempts_and_every_request_still_finishes(system):
    # Three requests that grow to 60 tokens each: more than the 64 tokens a static partition
    # holds, or the 128 of the unified pool, so some must give their pages back and recompute.
    engine = engine_for(system)
    reqs = [Request(i, "a", 20, 40, 0.0) for i in range(3)]
    for r in reqs:
        engine.add(r, 0.0)
    run_until_idle(engine)
    assert engine.preemptions > 0 and sum(r.preemptions for r in reqs) == engine.preemptions
    assert all(r.status is Status.FINISHED and r.generated == 40 for r in reqs)
    assert_pool_empty(engine)


def test_fused_decode_steps_stop_at_the_horizon():
    fused, single = engine_for("vllm"), engine_for("vllm", fuse=False)
    for engine in (fused, single):
        engine.add(Request(0, "a", 20, 30, 0.0), 0.0)
    *_, now = step(fused, 0.0)
    *_, now1 = step(single, 0.0)
    assert now == now1
    horizon = now + 0.05  # another arrival could come then
    batch, out, _, end = step(fused, now, horizon)
    assert batch.prefill == [] and batch.max_iters > 1 and batch.stop_at == horizon
    assert 1 < out.iterations < batch.max_iters and end >= horizon
    # The same as one iteration per step until one ends at or past the horizon.
    count, t = 0, now1
    while t < horizon:
        b, _, _, t = step(single, t, horizon)
        assert b.max_iters == 1  # fuse=False: one iteration per step
        count += 1
    assert count == out.iterations and t == pytest.approx(end)


def test_an_unknown_preemption_mode_is_refused():
    cfg = deployment()
    bad = dataclasses.replace(get_system("vllm"), preemption="swap-always")
    build = sim_engine_factory(cfg, bad, CostModel(cfg.cluster.device_spec))
    with pytest.raises(ValueError, match="preemption: 'swap-always' is not one of"):
        build(GroupPlan(0, 0, 0, 1, ("a",)))
