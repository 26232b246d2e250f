"""The AlpaServe baseline: a valid uniform plan, and its own paper's claim reproduced."""

from __future__ import annotations

import dataclasses

from seallm.costmodel import CostModel
from seallm.metrics import summarize
from seallm.placement import get_placement, service_loads
from seallm.presets import get_preset
from seallm.runtime.sim import simulate
from seallm.systems import get_system


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
        assert rows[name].completed == rows[name].requests
    assert rows["alpaserve"].mean_normalized_latency < rows["vllm"].mean_normalized_latency
