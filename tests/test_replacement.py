"""Adaptive replacement: the service monitor, the policies, plan moves, and moves in the
simulator (load time charged, no request lost)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from seallm.costmodel import CostModel
from seallm.metrics import summarize
from seallm.monitor import MIN_LENGTH_SAMPLES, Drift, ServiceMonitor
from seallm.placement import service_loads
from seallm.placement.migration import Occupancy, align, move_cost, plan_move
from seallm.placement.plan import GroupPlan, Plan
from seallm.placement.replacement import (
    POLICIES,
    CheckState,
    PlanContext,
    Replace,
    Wait,
    decide_adaptive,
    decide_fixed,
    decide_none,
    probe_adaptive,
)
from seallm.placement.two_stage import place_two_stage
from seallm.request import Status
from seallm.runtime.sim import simulate
from seallm.systems import get_system
from seallm.workload import TraceRecord

# -- service monitor --------------------------------------------------------------------------


def test_monitor_rates_and_lengths_over_a_sliding_window():
    m = ServiceMonitor(["a", "b"], window_s=10.0)
    for i in range(100):  # a: 5 req/s over [0, 20), prompts of 100
        m.arrived("a", i * 0.2, 100)
    for i in range(10):  # b: only in [0, 5)
        m.arrived("b", i * 0.5, 300)
    m.arrived("zz", 1.0, 1)  # unknown services are ignored
    w = m.windows(20.0)
    assert w["a"].rate == pytest.approx(5.0) and w["a"].mean_prompt == 100
    assert w["b"].arrivals == 0 and w["b"].rate == 0.0 and w["b"].mean_prompt is None
    early = ServiceMonitor(["a"], window_s=10.0)
    for i in range(8):
        early.arrived("a", i * 0.5, 50)
    assert early.windows(4.0)["a"].rate == pytest.approx(2.0)  # span is [0, now] early on
    # A shorter span looks at the latest seconds only.
    assert m.windows(20.0, span=2.0)["a"].arrivals == 10


def test_monitor_output_lengths_replace_the_prior_once_enough_finish():
    cfg_loads = {"a": _load("a", rate=1.0, prompt=500, output=300)}
    m = ServiceMonitor(["a"], window_s=60.0)
    for i in range(MIN_LENGTH_SAMPLES - 1):
        m.arrived("a", i, 80)
        m.finished("a", i + 0.5, 40)
    ld = m.loads(30.0, cfg_loads)["a"]
    assert ld.mean_prompt == 80 and ld.mean_output == 300  # too few finished: the prior's
    m.finished("a", 16.0, 40)
    ld = m.loads(30.0, cfg_loads)["a"]
    assert ld.mean_output == 40 and ld.rate == pytest.approx((MIN_LENGTH_SAMPLES - 1) / 30.0)
    assert ld.model == cfg_loads["a"].model


def test_monitor_drift_against_noise():
    m = ServiceMonitor(["a", "b"], window_s=100.0)
    for i in range(1000):  # a at 8 req/s, b at 2 req/s, evenly spaced (cv 0)
        m.arrived("a", i * 0.1, 10) if i % 5 else m.arrived("b", i * 0.1, 10)
    same = m.drift(100.0, {"a": 8.0, "b": 2.0})
    assert same.distance == pytest.approx(0.0, abs=1e-9)
    assert not same.significant(0.1)
    swapped = m.drift(100.0, {"a": 2.0, "b": 8.0})
    assert swapped.distance == pytest.approx(1.2)
    assert swapped.significant(0.1)
    # Noise shrinks with more arrivals: cv x sqrt(n) / n summed over services.
    assert 0 < same.noise < 0.05


# -- plans and moves -------------------------------------------------------------------------


def _load(name, rate, prompt=400, output=200, model="llama-2-7b"):
    from seallm.catalog import MODELS
    from seallm.placement.demand import ServiceLoad

    return ServiceLoad(name, MODELS[model], rate, prompt, output)


def _ctx(cfg):
    return PlanContext(cfg, CostModel(cfg.cluster.device_spec), place_two_stage)


def _state(cfg, plan, loads, since_plan=0.5, since_check=0.0, occupancy=None, interval=60.0):
    return CheckState(
        100.0,
        interval,
        plan,
        loads,
        loads,
        Drift(since_plan, 0.05),
        Drift(since_check, 0.05),
        occupancy or {},
        100,
    )


@pytest.fixture
def shift(small_config):
    """A plan made for chat-7b being hot, and observed loads where code-13b is."""
    cost = CostModel(small_config.cluster.device_spec)
    loads = service_loads(small_config, 3.0)
    plan = place_two_stage(small_config, cost, loads)
    rates = {"chat-7b": 1.0, "code-13b": 14.0, "assist-8b": 3.0}
    shifted = {s: dataclasses.replace(ld, rate=rates[s]) for s, ld in loads.items()}
    return plan, loads, shifted


def test_a_plan_aligned_to_itself_moves_nothing(small_config, shift):
    plan, _, loads = shift
    weight = {s.name: s.model_spec.weight_bytes for s in small_config.services}
    # The same groups in another order and at other offsets: nothing needs to move.
    shuffled = Plan(
        [dataclasses.replace(g, id=9 - g.id, first_gpu=3 - g.first_gpu) for g in plan.groups]
    )
    assert shuffled.groups != plan.groups
    aligned = align(plan, shuffled, small_config.cluster, weight.__getitem__)
    assert {(g.first_gpu, g.services) for g in aligned.groups} == {
        (g.first_gpu, g.services) for g in plan.groups
    }
    move = plan_move(
        plan,
        shuffled,
        small_config.cluster,
        50,
        lambda s, size: 1.0,
        weight.__getitem__,
        {s: ld.rate for s, ld in loads.items()},
    )
    assert move.empty and move.load_s == 0


def test_a_move_loads_only_missing_weights_and_costs_their_load_time(small_config):
    cost = CostModel(small_config.cluster.device_spec)
    model = {s.name: s.model_spec for s in small_config.services}
    current = Plan(
        [
            GroupPlan(0, 0, 0, 2, ("code-13b", "chat-7b")),
            GroupPlan(1, 0, 2, 1, ("assist-8b",)),
            GroupPlan(2, 0, 3, 1, ("chat-7b",)),
        ]
    )
    target = Plan(
        [
            GroupPlan(0, 0, 0, 2, ("assist-8b", "chat-7b")),
            GroupPlan(1, 0, 2, 1, ("code-13b",)),
            GroupPlan(2, 0, 3, 1, ("chat-7b",)),
        ]
    )
    move = plan_move(
        current,
        target,
        small_config.cluster,
        10,
        lambda s, size: cost.load_time(model[s], size, "disk"),
        lambda s: model[s].weight_bytes,
        {"chat-7b": 1.0, "code-13b": 1.0, "assist-8b": 1.0},
    )
    assert sorted(move.retired) == [0, 1]  # the chat-7b group on GPU 3 is left alone
    by_span = {(c.group.first_gpu, c.group.size): c for c in move.changes}
    pair = by_span[(0, 2)]
    assert pair.kept == ("chat-7b",)  # already on these two GPUs at tp 2
    assert pair.loads == (("assist-8b", cost.load_time(model["assist-8b"], 2, "disk")),)
    single = by_span[(2, 1)]
    assert single.replaces == (1,) and single.kept == ()
    assert move.load_s == pytest.approx(
        cost.load_time(model["assist-8b"], 2, "disk") + cost.load_time(model["code-13b"], 1, "disk")
    )
    assert {g.id for g in move.plan.groups} == {2, 10, 11}
    # Requests in flight on the retiring groups make the move dearer.
    idle = move_cost(move, {}, {"code-13b": 2.0}, lambda s, t: 0.1)
    busy = move_cost(
        move, {1: Occupancy((("assist-8b", 900),) * 20)}, {"code-13b": 2.0}, lambda s, t: 0.1
    )
    gap = cost.load_time(model["code-13b"], 1, "disk")
    assert idle.moved == 0 and idle.delay == pytest.approx(2.0 * gap**2 / 2)
    assert busy.moved == 20 and busy.delay > idle.delay + 20 * 0.1


# -- policies ------------------------------------------------------------------------------------


def test_adaptive_moves_when_traffic_shifts_enough(small_config, shift):
    plan, _, shifted = shift
    d = decide_adaptive(
        small_config.replacement, _ctx(small_config), _state(small_config, plan, shifted)
    )
    assert isinstance(d, Replace)
    assert not d.migration.empty and d.gain > d.cost.delay
    hosts = [g for g in d.migration.plan.groups if "code-13b" in g.services]
    assert len(hosts) > len(plan.hosts("code-13b"))  # the hot service gained a replica


def test_adaptive_does_not_move_when_the_gain_is_below_the_cost(small_config, shift):
    plan, _, shifted = shift
    crowded = {g.id: Occupancy((("code-13b", 2000),) * 1000) for g in plan.groups}
    d = decide_adaptive(
        small_config.replacement,
        _ctx(small_config),
        _state(small_config, plan, shifted, occupancy=crowded),
    )
    assert isinstance(d, Wait) and d.reason == "gain below the cost of moving"
    assert 0 < d.gain < d.cost.delay
    # With one request in flight the move is cheap: taken, unless the margin asks for more.
    light = {g.id: Occupancy((("code-13b", 2000),)) for g in plan.groups}
    st = _state(small_config, plan, shifted, occupancy=light)
    assert isinstance(decide_adaptive(small_config.replacement, _ctx(small_config), st), Replace)
    strict = dataclasses.replace(small_config.replacement, gain_margin=1e9)
    assert isinstance(decide_adaptive(strict, _ctx(small_config), st), Wait)


def test_adaptive_waits_without_searching_while_traffic_is_within_noise(small_config, shift):
    plan, loads, _ = shift

    def no_search(*args):
        raise AssertionError("a plan was searched")

    ctx = PlanContext(small_config, CostModel(small_config.cluster.device_spec), no_search)
    d = decide_adaptive(
        small_config.replacement, ctx, _state(small_config, plan, loads, since_plan=0.1)
    )
    assert isinstance(d, Wait) and d.reason == "traffic within noise of the plan's"


def test_the_interval_shrinks_under_drift_and_grows_while_stable(small_config, shift):
    plan, loads, shifted = shift
    spec, ctx = small_config.replacement, _ctx(small_config)
    stable = decide_adaptive(spec, ctx, _state(small_config, plan, loads, 0.0, 0.0, interval=100))
    assert stable.interval == 200
    drifting = decide_adaptive(spec, ctx, _state(small_config, plan, loads, 0.0, 0.6, interval=100))
    assert drifting.interval == 50
    moved = decide_adaptive(spec, ctx, _state(small_config, plan, shifted, interval=100))
    assert isinstance(moved, Replace) and moved.interval == 50
    # Bounded both ways.
    top = decide_adaptive(spec, ctx, _state(small_config, plan, loads, 0.0, 0.0, interval=900))
    assert top.interval == spec.max_interval_s
    low = decide_adaptive(spec, ctx, _state(small_config, plan, loads, 0.0, 0.6, interval=40))
    assert low.interval == spec.min_interval_s
    # Probes between checks call for a check only when the recent traffic moved.
    assert probe_adaptive(spec, Drift(0.6, 0.05)) and not probe_adaptive(spec, Drift(0.1, 0.05))


def test_fixed_moves_at_any_cost_and_none_never_checks(small_config, shift):
    plan, _, shifted = shift
    crowded = {g.id: Occupancy((("code-13b", 2000),) * 1000) for g in plan.groups}
    st = _state(small_config, plan, shifted, occupancy=crowded)
    every = dataclasses.replace(small_config.replacement, fixed_interval_s=30.0)
    d = decide_fixed(every, _ctx(small_config), st)
    assert isinstance(d, Replace) and d.interval == 30.0
    assert d.cost.delay > d.gain  # periodic re-placement ignores the cost
    assert decide_none(small_config.replacement, _ctx(small_config), st).interval == math.inf


# -- moves in the simulator --------------------------------------------------------------------

TARGET = Plan(
    [
        GroupPlan(0, 0, 0, 2, ("assist-8b", "chat-7b")),
        GroupPlan(1, 0, 2, 1, ("code-13b",)),
        GroupPlan(2, 0, 3, 1, ("chat-7b",)),
    ]
)
START = Plan(
    [
        GroupPlan(0, 0, 0, 2, ("code-13b", "chat-7b")),
        GroupPlan(1, 0, 2, 1, ("assist-8b",)),
        GroupPlan(2, 0, 3, 1, ("chat-7b",)),
    ]
)


def scripted(spec, ctx, st):
    """A policy that moves to TARGET at its first check and never checks again."""
    models = {s.name: s.model_spec for s in ctx.config.services}
    move = plan_move(
        st.plan,
        TARGET,
        ctx.config.cluster,
        st.next_group_id,
        lambda s, size: ctx.cost.load_time(models[s], size, spec.load_source),
        lambda s: models[s].weight_bytes,
        {s: 1.0 for s in models},
    )
    return Replace(move, math.inf, 1.0, ctx.move_cost(st, st.loads, move), "scripted", {})


@pytest.mark.parametrize("on_move", ["migrate", "drain"])
def test_a_move_charges_load_time_and_loses_no_request(small_config, monkeypatch, on_move):
    monkeypatch.setitem(POLICIES, "scripted", scripted)
    small_config.replacement = dataclasses.replace(
        small_config.replacement, fixed_interval_s=20.0, load_source="disk", on_move=on_move
    )
    small_config.drain_s = 1e5  # every accepted request must finish
    t_move = small_config.replacement.fixed_interval_s
    # Steady traffic to every service, long enough that requests are in flight at the move.
    recs = [
        TraceRecord(0.25 * i, s, 300 + 7 * (i % 11), 150 + 13 * (i % 17))
        for i in range(200)
        for s in ("chat-7b", "code-13b", "assist-8b")
        if (i + len(s)) % 2 == 0
    ]
    recs.append(TraceRecord(1.0, "nope", 10, 10))  # rejected at the door, with a reason
    recs.sort(key=lambda r: r.arrival_s)
    system = dataclasses.replace(get_system("seallm"), replacement="scripted")
    res = simulate(small_config, system, recs, plan=START)
    ctl = res.controller
    assert len(ctl.moves) == 1
    move = ctl.moves[0]
    cost = CostModel(small_config.cluster.device_spec)
    model = {s.name: s.model_spec for s in small_config.services}
    load_13b = cost.load_time(model["code-13b"], 1, "disk")
    assert move.load_s == pytest.approx(cost.load_time(model["assist-8b"], 2, "disk") + load_13b)
    assert move.moved > 0  # requests were in flight on the retiring groups
    # Not one request lost: each finished, or was rejected or aborted with a reason.
    assert len(res.requests) == len(recs)
    for r in res.requests:
        if r.status is Status.FINISHED:
            assert r.generated == r.output_tokens
        else:
            assert r.status in (Status.REJECTED, Status.ABORTED) and r.error, r
    assert sum(r.status is Status.REJECTED for r in res.requests) == 1
    # code-13b had no other host: nothing of it ran from the move until its weights loaded.
    new_host = next(e for e in ctl.engines.values() if "code-13b" in e.models)
    assert new_host.id not in (0, 1, 2)
    after = [r for r in res.requests if r.service == "code-13b" and r.arrival > t_move]
    assert after and all(r.group == new_host.id for r in after)
    assert min(r.first_token_time for r in after) >= t_move + load_13b
    moved = [
        r
        for r in res.requests
        if r.service == "code-13b" and r.arrival < t_move < r.finish_time and r.group == new_host.id
    ]
    if on_move == "migrate":
        assert moved  # requests that were in flight finished on the new host
    assert all(e.kv.stats().used_bytes == 0 for e in ctl.engines.values())


@pytest.mark.slow
def test_adaptive_replaces_on_a_shifting_workload_and_stays_put_on_a_stable_one(small_config):
    small_config.duration_s = 300.0
    seallm, slo = get_system("seallm"), {s.name: 5.0 for s in small_config.services}
    stable = simulate(small_config, seallm, small_config.records())
    assert stable.controller.checks and not stable.controller.moves
    # A plan for the first traffic mix (chat-7b busiest) that the shift at 120 s overloads:
    # code-13b becomes the busiest service, alone on one GPU.
    small_config.workload = dataclasses.replace(
        small_config.workload, alpha=2.0, shift_times=[120.0]
    )
    first = Plan(
        [
            GroupPlan(0, 0, 0, 2, ("chat-7b",)),
            GroupPlan(1, 0, 2, 1, ("code-13b",)),
            GroupPlan(2, 0, 3, 1, ("assist-8b",)),
        ]
    )
    recs = small_config.records()
    res = simulate(small_config, seallm, recs, plan=first)
    assert any(120 < m.time < 220 for m in res.controller.moves)
    assert all(r.status is Status.FINISHED for r in res.requests)
    fixed = simulate(small_config, get_system("seallm-noreplace"), recs, plan=first)
    assert not fixed.controller.checks and not fixed.controller.moves
    adaptive = summarize(res.requests, slo, res.end_time, "seallm")
    none = summarize(fixed.requests, slo, fixed.end_time, "seallm-noreplace")
    assert adaptive.mean_normalized_latency < none.mean_normalized_latency
