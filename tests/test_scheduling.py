"""The doubling-budget scheduler family: budgets, levels, priorities, cross-model behaviour."""

from __future__ import annotations

import dataclasses
import math

import pytest

from seallm.config import ClusterSpec, Config, EngineSpec, ServiceSpec
from seallm.costmodel import CostModel
from seallm.executor.base import Batch, StepOutcome
from seallm.profile import offline_profile
from seallm.request import Request, Status
from seallm.runtime.sim import simulate
from seallm.scheduling import make_scheduler
from seallm.systems import get_system
from seallm.workload import TraceRecord, WorkloadSpec, get_length_distribution

A100 = CostModel(ClusterSpec().device_spec)


def on_one_group(name: str):
    """The system, with every service co-located on one group (what these tests are about)."""
    return dataclasses.replace(get_system(name), placement="colocate")


def profiles(*services: tuple[str, str]):
    from seallm.catalog import MODELS

    lengths = get_length_distribution("azure-conv")
    return {s: offline_profile(s, A100.for_model(MODELS[m], 1), lengths) for s, m in services}


def run(sched, reqs, duration, now):
    sched.account(Batch(reqs[0].service, decode=list(reqs)), StepOutcome(1, duration, []), now)


def test_budget_starts_at_mean_plus_std_and_doubles_on_demotion():
    prof = profiles(("a", "llama-2-7b"))
    s = make_scheduler("doubling-budget", prof, EngineSpec())
    r = Request(0, "a", 100, 50, 0.0, generated=1)
    s.admit(r, 0.0)
    b0 = prof["a"].mu + prof["a"].sigma
    assert (r.budget, r.level, r.attained) == (pytest.approx(b0), 0, 0.0)
    run(s, [r], 0.6 * b0, 1.0)
    assert (r.level, r.budget) == (0, pytest.approx(b0))
    run(s, [r], 0.6 * b0, 2.0)  # a = 1.2 b0 >= b0: doubled once
    assert (r.level, r.budget) == (1, pytest.approx(2 * b0))
    run(s, [r], 3 * b0, 3.0)  # a = 4.2 b0: 2b0 -> 4b0 -> 8b0
    assert (r.level, r.budget) == (3, pytest.approx(8 * b0))


def test_fixed_budget_adds_equal_quanta():
    prof = profiles(("a", "llama-2-7b"))
    s = make_scheduler("fixed-budget", prof, EngineSpec())
    r = Request(0, "a", 100, 50, 0.0, generated=1)
    s.admit(r, 0.0)
    b0 = r.budget
    run(s, [r], 3.5 * b0, 1.0)
    assert (r.level, r.budget) == (3, pytest.approx(4 * b0))


def test_priority_is_level_then_remaining_iterations_with_prefill_first():
    prof = profiles(("a", "llama-2-7b"), ("b", "llama-2-13b"))
    s = make_scheduler("doubling-budget", prof, EngineSpec())
    new = Request(0, "a", 100, 50, 0.0)
    started = Request(1, "a", 100, 50, 0.0, generated=5)
    demoted = Request(2, "b", 100, 50, 0.0, generated=5)
    for r in (new, started, demoted):
        s.admit(r, 0.0)
    demoted.level = 1
    assert s.key(new) < s.key(started) < s.key(demoted)
    # O_r = (b - a) / per-iteration time: more attained service, higher priority
    older = Request(3, "a", 100, 50, 0.0, generated=5)
    s.admit(older, 0.0)
    older.attained = started.budget / 2
    assert s.key(older) < s.key(started)
    assert s.key(started)[1] == pytest.approx(started.budget / prof["a"].token_time)


def shared(gpus: int = 2, **engine) -> Config:
    return Config(
        name="t",
        cluster=ClusterSpec("a100-80gb", 1, gpus),
        services=[ServiceSpec("a", "llama-2-7b"), ServiceSpec("b", "llama-2-13b")],
        workload=WorkloadSpec(rate=1.0),
        engine=EngineSpec(**engine),
        duration_s=120.0,
    ).validate()


def test_a_short_request_of_another_model_overtakes_long_ones():
    # Eight long requests of model a are decoding when a short request of model b arrives.
    recs = [TraceRecord(0.0, "a", 500, 1500) for _ in range(8)] + [TraceRecord(2.0, "b", 50, 10)]
    db = simulate(shared(), on_one_group("seallm"), recs)
    fcfs = simulate(shared(), on_one_group("seallm-fcfs"), recs)
    short_db, short_fcfs = db.requests[-1], fcfs.requests[-1]
    assert short_db.finish_time - short_db.arrival < 1.0
    assert short_db.finish_time < min(r.finish_time for r in db.requests[:-1])
    # FCFS serves model a's older requests first: the short one waits for all of them
    assert short_fcfs.finish_time - short_fcfs.arrival > 10 * (short_db.finish_time - 2.0)


@pytest.mark.slow
def test_no_request_starves_ageing_bounds_its_wait():
    # Model a gets a steady stream of short requests that keeps level 0 busy; one long request
    # of model b is demoted early. One model per step (temporal), ageing must bound how long
    # it waits between iterations; in rounds it joins a's steps and never waits.
    recs = [TraceRecord(0.0, "b", 200, 3000)]
    recs += [TraceRecord(0.05 + 0.05 * i, "a", 64, 16) for i in range(2400)]

    def long_request(ageing_s: float, system: str = "seallm-temporal") -> Request:
        cfg = shared(ageing_s=ageing_s)
        cfg.drain_s = 600.0
        return simulate(cfg, on_one_group(system), recs).requests[0]

    in_rounds = long_request(1e9, "seallm")
    assert in_rounds.status is Status.FINISHED and in_rounds.max_stall < 0.5

    long = long_request(2.0)
    assert long.level >= 1  # it was demoted, so only ageing lets it run while a is busy
    assert long.status is Status.FINISHED
    assert long.max_stall < 2.0 + 1.0  # the bound plus at most one iteration
    unbounded = long_request(1e9)
    assert unbounded.max_stall > 3 * long.max_stall  # without ageing it waits far longer


def test_swap_or_recompute_is_chosen_by_cost_and_host_space():
    cfg = shared()
    res = simulate(cfg, on_one_group("seallm"), [TraceRecord(0.0, "a", 10, 2)])
    engine = res.controller.engines[0]
    cost = engine.profiles["a"].cost
    long = Request(1, "a", 3000, 100, 0.0, generated=5)
    short = Request(2, "a", 20, 100, 0.0, generated=5)
    for r in (long, short):
        engine.add(r, 0.0)
        engine.waiting.remove(r)
        engine.kv.allocate(r, r.context_tokens)
        engine._start_running(r)

    def recompute(r: Request) -> float:
        return cost.prefill_time(r.context_tokens) - cost.prefill_time(1)

    assert 2 * engine.swap_time(long) < recompute(long)
    assert 2 * engine.swap_time(short) > recompute(short)
    engine._preempt(long)
    engine._preempt(short)
    assert long.status is Status.SWAPPED and long in engine.swapped
    assert short.status is Status.QUEUED and short in engine.waiting
    assert engine.host_used == long.context_tokens * engine.models["a"].kv_bytes_per_token
    # no host space: recompute even where swapping is cheaper
    other = Request(3, "a", 3000, 100, 0.0, generated=5)
    engine.add(other, 0.0)
    engine.waiting.remove(other)
    engine.kv.allocate(other, other.context_tokens)
    engine._start_running(other)
    engine.host_capacity = engine.host_used
    engine._preempt(other)
    assert other.status is Status.QUEUED


def test_oracle_runs_shortest_remaining_first():
    cfg = shared(max_batch_size=1)
    lengths = [300, 20, 150, 60, 5]
    recs = [TraceRecord(0.0, "a", 50, n) for n in lengths]
    res = simulate(cfg, on_one_group("seallm-oracle"), recs)
    order = sorted(res.requests, key=lambda r: r.finish_time)
    assert [r.output_tokens for r in order] == sorted(lengths)


@pytest.mark.parametrize(
    ("system", "join"),
    [
        ("seallm-temporal", 0.5),
        ("seallm", math.inf),  # rounds: every model joins
        ("seallm-db", math.inf),  # DB's order without slack
        ("seallm-slack-keep-late", math.inf),
        ("seallm", 0.0),  # rounds: a model joins only when it is free
        ("seallm-static-kv", math.inf),  # a partial bound is approximate (next test)
        ("seallm-oracle", 0.5),
        ("seallm-fcfs", 0.5),
    ],
)
def test_fused_equals_one_by_one_under_memory_pressure(system, join):
    from seallm.bench.shared_group import shared_group_config

    cfg = shared_group_config(gpus=2, rate=3.0, duration_s=60.0)
    cfg.engine = dataclasses.replace(cfg.engine, memory_utilization=0.85, round_join_slowdown=join)
    cfg.drain_s = 1e5
    recs = cfg.records()
    fused = simulate(cfg, on_one_group(system), recs, fuse=True)
    single = simulate(cfg, on_one_group(system), recs, fuse=False)
    ef, es = fused.controller.engines[0], single.controller.engines[0]
    assert ef.preemptions == es.preemptions
    assert ef.iterations == es.iterations and ef.steps < es.steps
    for f, s in zip(fused.requests, single.requests, strict=True):
        assert f.status is s.status
        if f.finish_time is not None:
            assert f.finish_time == pytest.approx(s.finish_time, rel=1e-9, abs=1e-9)
    assert ef.kv.stats().used_bytes == 0 and ef.host_used == 0


def test_fused_rounds_stay_close_to_one_by_one_at_a_partial_join_bound():
    """With a join bound between 0 and inf, whether a model joins can flip inside a fused
    run of rounds (contexts grow); fusion then keeps the join set for the run. Measured here:
    0.3% on the mean normalized latency; the test bounds it at 2%."""
    from seallm.bench.shared_group import shared_group_config

    cfg = shared_group_config(gpus=2, rate=3.0, duration_s=60.0)
    cfg.engine = dataclasses.replace(cfg.engine, memory_utilization=0.85)
    cfg.drain_s = 1e5
    recs = cfg.records()
    runs = [simulate(cfg, on_one_group("seallm"), recs, fuse=f).requests for f in (True, False)]
    means = [
        sum((r.finish_time - r.arrival) / r.output_tokens for r in reqs) / len(reqs)
        for reqs in runs
    ]
    assert all(r.finish_time is not None for reqs in runs for r in reqs)
    assert means[0] == pytest.approx(means[1], rel=0.02)


def test_a_long_prompt_is_admitted_beside_running_decodes_in_rounds():
    # Rounds cap the prompt tokens prefilled per round; a prompt longer than the cap still
    # runs as the round's first prefill, even when running decodes rank above it (the
    # oracle: their remaining work is shorter).
    recs = [TraceRecord(0.0, "a", 100, 500) for _ in range(8)] + [TraceRecord(1.0, "a", 3000, 1000)]
    res = simulate(shared(), on_one_group("seallm-oracle"), recs)
    long = res.requests[-1]
    assert long.first_token_time - long.arrival < 1.0
    assert long.first_token_time < min(r.finish_time for r in res.requests[:-1])
