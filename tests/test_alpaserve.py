"""The AlpaServe baseline: a valid uniform plan, its own paper's claim reproduced, and its
SLO-aware dropping (placement/alpaserve_admission.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from seallm.config import ClusterSpec, Config, ServiceSpec
from seallm.costmodel import CostModel
from seallm.metrics import slo_met, summarize
from seallm.placement import get_placement, service_loads
from seallm.placement.alpaserve_admission import SLODrop, get_admission, residual_table
from seallm.placement.demand import reference_cost
from seallm.placement.plan import GroupPlan
from seallm.presets import get_preset
from seallm.request import Request, Status
from seallm.runtime.sim import sim_engine_factory, simulate
from seallm.systems import SYSTEMS, get_system
from seallm.workload import WorkloadSpec


def test_plan_uses_uniform_groups_and_places_every_service():
    cfg = get_preset("h100x8")
    plan = get_placement("alpaserve")(cfg, CostModel(cfg.cluster.device_spec), service_loads(cfg))
    plan.validate(cfg.cluster)
    assert len({g.size for g in plan.groups}) == 1
    assert all(plan.hosts(s.name) for s in cfg.services)


def test_model_parallel_multiplexing_beats_dedicated_gpus_under_bursts():
    # AlpaServe's claim: with bursty traffic, models sharing large model-parallel groups
    # serve better than each model on its own GPUs (CV 8, half the default rate).
    cfg = get_preset("h100x8")
    cfg.duration_s = 300.0
    cfg.workload = dataclasses.replace(cfg.workload, cv=8.0)
    records = cfg.records(0.5)
    slo = {s.name: s.slo_scale for s in cfg.services}
    rows = {}
    for name in ("vllm", "alpaserve"):
        res = simulate(cfg, get_system(name), records, rate_scale=0.5)
        rows[name] = summarize(res.requests, slo, res.end_time, name)
        # alpaserve drops the few requests it predicts will miss (counted as misses)
        assert rows[name].completed + rows[name].rejected == rows[name].requests
        assert rows[name].rejected <= 0.01 * rows[name].requests
    assert rows["alpaserve"].mean_normalized_latency < rows["vllm"].mean_normalized_latency


def _duo(rate: float) -> Config:
    """Two 7B-class services on one 2-GPU node, bursty."""
    return Config(
        name="duo",
        cluster=ClusterSpec("a100-80gb", 1, 2),
        services=[ServiceSpec("a", "llama-2-7b"), ServiceSpec("b", "mistral-7b")],
        workload=WorkloadSpec(arrival="gamma", rate=rate, cv=2.0),
        duration_s=20.0,
        seed=1,
    )


def test_alpaserve_drops_under_overload_and_every_request_is_accounted_for():
    cfg = _duo(40.0)
    slo = {s.name: s.slo_scale for s in cfg.services}
    res = simulate(cfg, get_system("alpaserve"), cfg.records())
    row = summarize(res.requests, slo, res.end_time, "alpaserve")
    dropped = [r for r in res.requests if r.status is Status.REJECTED]
    assert dropped and all(r.error and r.error.startswith("dropped: predicted") for r in dropped)
    # none lost: every request finished or was dropped at the door (and never started)
    assert all(r.status in (Status.FINISHED, Status.REJECTED) for r in res.requests)
    assert row.completed + row.rejected == row.requests == len(res.requests)
    assert row.rejected == len(dropped)
    assert all(r.generated == 0 and r.group is None for r in dropped)
    # a dropped request is an SLO miss: attainment counts only the completed ones that met
    assert not any(slo_met(r, slo[r.service]) for r in dropped)
    met = sum(slo_met(r, slo[r.service]) for r in res.requests)
    assert row.slo_attainment == pytest.approx(met / row.requests)
    assert row.slo_attainment <= row.completed / row.requests


def test_without_overload_nothing_is_dropped():
    cfg = _duo(1.0)
    res = simulate(cfg, get_system("alpaserve"), cfg.records())
    assert all(r.status is Status.FINISHED for r in res.requests)


def _policy_and_engine(cfg: Config, lengths: str = "expected"):
    cost = CostModel(cfg.cluster.device_spec)
    loads = service_loads(cfg)
    reference = {s.name: reference_cost(s.model_spec, cfg, cost) for s in cfg.services}
    engine = sim_engine_factory(cfg, get_system("alpaserve"), cost)(
        GroupPlan(0, 0, 0, 2, ("a", "b"))
    )
    return SLODrop(cfg, loads, reference, lengths), engine


def test_prediction_on_an_idle_group_is_the_standalone_latency_there():
    cfg = _duo(1.0)
    policy, engine = _policy_and_engine(cfg, lengths="true")
    req = Request(0, "a", 1150, 300, arrival=5.0)
    alone = engine.profiles["a"].cost.standalone_latency(1150, 300)
    assert policy.predict(req, engine, 5.0) - 5.0 == pytest.approx(alone, rel=0.05)


def test_work_ahead_on_the_group_delays_the_prediction():
    cfg = _duo(1.0)
    policy, engine = _policy_and_engine(cfg)
    req = Request(99, "a", 500, 100, arrival=1.0)
    idle = policy.predict(req, engine, 1.0)
    for i in range(20):  # older requests of the co-located model: FCFS runs them first
        engine.add(Request(i, "b", 1000, 200, arrival=0.5), 0.5)
    busy = policy.predict(req, engine, 1.0)
    assert busy > idle + 0.5
    # with enough ahead the request is dropped, with its prediction as the reason
    for i in range(20, 400):
        engine.add(Request(i, "b", 1000, 200, arrival=0.5), 0.5)
    reason = policy(req, engine, 1.0)
    assert reason is not None and "past its SLO" in reason
    _, idle_engine = _policy_and_engine(cfg)
    assert policy(Request(100, "a", 500, 100, arrival=1.0), idle_engine, 1.0) is None


def test_residual_table_is_the_expected_remaining_length():
    t = residual_table(np.array([1, 2, 3, 10]))
    assert t[0] == pytest.approx(4.0)  # mean
    assert t[1] == pytest.approx(5.0 - 1)  # E[O | O > 1] - 1
    assert t[2] == pytest.approx(6.5 - 2)
    assert t[9] == pytest.approx(1.0)
    assert len(t) == 10


def test_admission_registry():
    assert SYSTEMS["alpaserve"].admission == "slo-drop"
    assert all(s.admission == "all" for n, s in SYSTEMS.items() if n != "alpaserve")
    cfg = _duo(1.0)
    assert get_admission("all", cfg, {}, {}) is None
    with pytest.raises(ValueError, match="admission"):
        get_admission("nope", cfg, {}, {})
