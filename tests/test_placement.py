"""Dedicated (vllm) placement: valid plans sized to load, clear errors when it cannot fit."""

from __future__ import annotations

import pytest

from seallm.config import ClusterSpec, ConfigError, ServiceSpec
from seallm.costmodel import CostModel
from seallm.placement import get_placement, service_loads
from seallm.presets import get_preset


def plan_for(cfg):
    return get_placement("dedicated")(cfg, CostModel(cfg.cluster.device_spec), service_loads(cfg))


def test_paper32_dedicated_plan_uses_the_cluster():
    cfg = get_preset("paper32")
    plan = plan_for(cfg).validate(cfg.cluster)
    assert sum(g.size for g in plan.groups) == cfg.cluster.num_gpus
    for s in cfg.services:
        hosts = plan.hosts(s.name)
        assert hosts, s.name
        assert all(len(g.services) == 1 for g in hosts)
        if s.model_spec.num_params > 60e9:
            assert all(g.size == 4 for g in hosts)  # 70B needs TP4 on A100-80GB
    # the most popular service gets more replicas than the least popular of the same size
    assert len(plan.hosts("s00-llama-2-7b")) > len(plan.hosts("s06-llama-2-7b"))


def test_too_many_services_for_the_cluster(small_config):
    small_config.cluster = ClusterSpec(device="a100-80gb", num_nodes=1, gpus_per_node=2)
    with pytest.raises(ConfigError, match="needs 3 GPUs"):
        plan_for(small_config)


def test_model_that_cannot_fit_a_node(small_config):
    small_config.services.append(ServiceSpec("huge", "llama-3-70b"))
    small_config.cluster = ClusterSpec(device="a100-80gb", num_nodes=2, gpus_per_node=1)
    with pytest.raises(ConfigError, match=r"services\[3\].model: llama-3-70b"):
        plan_for(small_config)
