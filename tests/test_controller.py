"""Controller on its own: admission and dispatch (`submit`), and a re-placement applied by
hand (`apply`, `advance`, `step_done`) or by its policy's check, with real group engines
(`runtime.sim.sim_engine_factory`: SimExecutor, schedulers, KV caches) stepped by the test
instead of the simulator's event loop."""

from __future__ import annotations

import dataclasses
import math

import pytest

from seallm.config import ClusterSpec, Config, EngineSpec, ReplacementSpec, ServiceSpec
from seallm.controller import Controller
from seallm.costmodel import CostModel
from seallm.engine import GroupEngine
from seallm.monitor import MIN_LENGTH_SAMPLES
from seallm.placement.migration import GroupChange, Migration
from seallm.placement.plan import GroupPlan, Plan
from seallm.request import Request, Status
from seallm.runtime.sim import sim_engine_factory
from seallm.systems import get_system
from seallm.workload import WorkloadSpec

MB = 2**20
VLLM = get_system("vllm")
# Two services each on its own GPU: group 0 hosts a, group 1 hosts b.
SPLIT = Plan([GroupPlan(0, 0, 0, 1, ("a",)), GroupPlan(1, 0, 1, 1, ("b",))])
LOAD_S = 2.0  # seconds the moves below take to load a's weights


def deployment(pool_mb: float = 64, **replacement) -> Config:
    return Config(
        name="t",
        cluster=ClusterSpec("a100-80gb", 1, 2),
        services=[ServiceSpec("a", "llama-2-7b"), ServiceSpec("b", "llama-2-7b")],
        workload=WorkloadSpec(rate=1.0),
        engine=EngineSpec(kv_pool_bytes=pool_mb * MB),
        duration_s=600.0,
        replacement=ReplacementSpec(**replacement),
    ).validate()


def controller(cfg: Config | None = None, plan: Plan | None = SPLIT, system=VLLM, **kw):
    cfg = cfg or deployment()
    cost = CostModel(cfg.cluster.device_spec)
    return Controller(cfg, system, cost, sim_engine_factory(cfg, system, cost), plan=plan, **kw)


def step(engine: GroupEngine, now: float) -> tuple[list[Request], float]:
    batch = engine.plan(now)
    assert batch is not None
    out = engine.execute(batch, now)
    end = now + out.duration
    return engine.commit(batch, out, end), end


def run_until_idle(engine: GroupEngine, now: float) -> float:
    while engine.has_work:
        _, now = step(engine, now)
    return now


def move_a(ctl: Controller) -> Migration:
    """Re-place service a: group 0 retires, a new group 2 on the same GPU loads a's weights
    (LOAD_S) once group 0 has given the GPU back; group 1 (b) stays as it is."""
    new = GroupPlan(2, 0, 0, 1, ("a",))
    change = GroupChange(new, replaces=(0,), kept=(), loads=(("a", LOAD_S),))
    return Migration(Plan([new, ctl.plan.groups[1]]), (change,), retired=(0,))


# -- submit: admission and dispatch ------------------------------------------------------------


def test_submit_dispatches_to_a_host_of_the_service():
    ctl = controller()
    a, b = Request(0, "a", 100, 10, 1.0), Request(1, "b", 100, 10, 1.0)
    assert ctl.submit(a, 1.0) is ctl.engines[0]
    assert ctl.submit(b, 1.0) is ctl.engines[1]
    for r, gid in ((a, 0), (b, 1)):
        assert r.group == gid and r.status is Status.QUEUED and r in ctl.engines[gid].waiting
        assert r.standalone > 0  # its SLO reference, set at the door
    assert ctl.requests == [a, b]
    assert ctl.hosts == {"a": [ctl.engines[0]], "b": [ctl.engines[1]]}


def test_an_unknown_service_is_rejected_and_recorded():
    ctl = controller()
    r = Request(0, "nope", 100, 10, 0.0)
    assert ctl.submit(r, 0.0) is None
    assert r.status is Status.REJECTED and r.error == "unknown service 'nope'"
    assert ctl.requests == [r]  # every submitted request is in the results
    assert all(e.load == 0 for e in ctl.engines.values())


def test_a_service_no_group_hosts_is_rejected():
    ctl = controller(plan=Plan([GroupPlan(0, 0, 0, 1, ("a",))]))
    r = Request(0, "b", 100, 10, 0.0)
    assert ctl.submit(r, 0.0) is None
    assert r.status is Status.REJECTED and "'b' is not placed on any group" in r.error


def test_a_request_beyond_the_models_context_is_rejected():
    ctl = controller(deployment(pool_mb=4096))
    r = Request(0, "a", 4000, 200, 0.0)  # llama-2-7b holds 4096 tokens
    assert ctl.submit(r, 0.0) is None
    assert r.status is Status.REJECTED
    assert r.error == "4200 tokens exceed llama-2-7b's context of 4096"


def test_a_request_beyond_the_groups_kv_pool_is_rejected_at_the_door():
    # An engine never plans a request its pool cannot hold (an FCFS queue would stall
    # behind it), so the controller refuses it; one that just fits is accepted.
    ctl = controller()
    capacity = ctl.engines[0].kv.capacity_tokens("a")
    assert 0 < capacity < 4096
    big = Request(0, "a", capacity - 9, 10, 0.0)
    assert ctl.submit(big, 0.0) is None
    assert big.status is Status.REJECTED
    assert big.error == f"{capacity + 1} tokens exceed the group's KV capacity"
    assert ctl.engines[0].load == 0
    fits = Request(1, "a", capacity - 10, 10, 0.0)
    assert ctl.submit(fits, 0.0) is ctl.engines[0]


def test_replicas_of_a_service_share_its_requests():
    both = Plan([GroupPlan(0, 0, 0, 1, ("a", "b")), GroupPlan(1, 0, 1, 1, ("a",))])
    ctl = controller(plan=both)
    assert ctl.hosts["a"] == [ctl.engines[0], ctl.engines[1]]
    for i in range(10):
        ctl.submit(Request(i, "a", 50, 5, 0.0), 0.0)
    assert ctl.engines[0].load == ctl.engines[1].load == 5
    # The least-loaded host gets the next one: group 0 also holds b's requests now.
    for i in range(10, 13):
        ctl.submit(Request(i, "b", 50, 5, 0.0), 0.0)
    r = Request(13, "a", 50, 5, 0.0)
    assert ctl.submit(r, 0.0) is ctl.engines[1] and r.group == 1


def test_without_record_the_controller_keeps_no_requests():
    ctl = controller(record=False)
    ctl.submit(Request(0, "a", 50, 5, 0.0), 0.0)
    ctl.submit(Request(1, "nope", 50, 5, 0.0), 0.0)
    assert ctl.requests == []


def test_without_a_plan_the_systems_placement_places_every_service():
    ctl = controller(plan=None)
    assert set(ctl.engines) == {g.id for g in ctl.plan.groups}
    ctl.plan.validate(ctl.config.cluster)
    assert all(ctl.hosts[s] for s in ("a", "b"))


# -- re-placement: apply, advance, step_done -----------------------------------------------------


def test_a_move_migrates_requests_to_the_new_group_once_its_weights_are_loaded():
    ctl = controller()
    old = ctl.engines[0]
    reqs = [Request(i, "a", 20, 6, 0.0) for i in range(3)]
    for r in reqs:
        ctl.submit(r, 0.0)
    _, now = step(old, 0.0)  # prefilled: each holds pages and one token
    assert all(r.status is Status.RUNNING and r.generated == 1 for r in reqs)

    assert ctl.apply(move_a(ctl), now) == []
    # Group 0 was between steps: it handed every request over, gave its pages and GPU back.
    assert ctl.retired == [old] and not old.has_work and old.kv.page_tables == {}
    assert [r.id for r in ctl.pending["a"]] == [0, 1, 2]
    assert all(r.status is Status.QUEUED and r.group is None for r in reqs)
    assert all(r.generated == 1 for r in reqs)  # progress kept (its KV is recomputed)
    assert ctl.hosts["a"] == [] and ctl.next_event == pytest.approx(now + LOAD_S)
    late = Request(3, "a", 20, 6, now)  # a's new host is loading: it waits, not rejected
    assert ctl.submit(late, now) is None and late.status is Status.QUEUED
    assert ctl.advance(now + LOAD_S / 2) == [] and ctl.pending["a"]

    touched = ctl.advance(now + LOAD_S)
    new = ctl.engines[2]
    assert set(touched) == {new} and ctl.hosts["a"] == [new] and not ctl.pending
    assert new.waiting == [*reqs, late] and all(r.group == 2 for r in new.waiting)
    run_until_idle(new, now + LOAD_S)
    assert all(r.status is Status.FINISHED and r.generated == 6 for r in [*reqs, late])
    (move,) = ctl.moves
    assert (move.groups, move.retired, move.models_loaded, move.moved) == (1, 1, 1, 3)
    assert move.load_s == LOAD_S
    assert ctl.engines.keys() == {1, 2} and ctl.hosts["b"] == [ctl.engines[1]]


def test_a_busy_group_hands_its_requests_over_when_its_step_ends():
    ctl = controller()
    old = ctl.engines[0]
    reqs = [Request(i, "a", 20, 6, 0.0) for i in range(2)]
    for r in reqs:
        ctl.submit(r, 0.0)
    batch = old.plan(0.0)  # the step is running when the move starts
    out = old.execute(batch, 0.0)
    assert ctl.apply(move_a(ctl), 0.0) == []
    assert ctl.moving and old.has_work and not ctl.pending and ctl.retired == []
    assert ctl.next_event == math.inf  # the new group waits for the GPU
    end = out.duration
    old.commit(batch, out, end)
    assert ctl.step_done(old, [], end) == []
    assert not ctl.moving and ctl.retired == [old]
    assert ctl.pending["a"] == reqs and all(r.generated == 1 for r in reqs)
    assert ctl.next_event == pytest.approx(end + LOAD_S)  # loading starts once it is free
    assert ctl.advance(end + LOAD_S) == [ctl.engines[2]] * 2


def test_draining_keeps_running_requests_where_they_are():
    ctl = controller(deployment(on_move="drain"))
    old = ctl.engines[0]
    running = Request(0, "a", 20, 4, 0.0)
    ctl.submit(running, 0.0)
    _, now = step(old, 0.0)
    queued = Request(1, "a", 20, 4, now)
    ctl.submit(queued, now)
    ctl.apply(move_a(ctl), now)
    assert ctl.pending["a"] == [queued]  # only the queued one moves
    assert old.running == [running] and ctl.moving and ctl.retired == []
    while old.has_work:
        finished, now = step(old, now)
        ctl.step_done(old, finished, now)
    assert running.status is Status.FINISHED and running.group == 0
    assert ctl.retired == [old] and ctl.next_event == pytest.approx(now + LOAD_S)


def test_the_policy_checks_at_next_event_and_step_done_feeds_the_monitor():
    system = dataclasses.replace(VLLM, replacement="fixed")
    ctl = controller(deployment(fixed_interval_s=50.0), system=system)
    assert ctl.replacing and ctl.next_event == 50.0
    reqs = [Request(i, "a", 20, 3, 0.0) for i in range(MIN_LENGTH_SAMPLES)]
    for r in reqs:
        ctl.submit(r, 0.0)
    engine, now = ctl.engines[0], 0.0
    while engine.has_work:
        finished, now = step(engine, now)
        assert ctl.step_done(engine, finished, now) == []  # not retiring: nothing moves
    window = ctl.monitor.windows(now)["a"]
    assert window.arrivals == len(reqs) and window.mean_output == 3
    assert ctl.advance(49.0) == [] and ctl.checks == []  # nothing due yet
    ctl.advance(50.0)
    (check,) = ctl.checks
    assert check.time == 50.0 and check.reason
    assert ctl.next_event == 50.0 + check.next_interval == 100.0
