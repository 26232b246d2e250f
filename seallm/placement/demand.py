"""Service load estimates the placements share: what a service asks of a group."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from seallm.config import Config, EngineSpec
from seallm.costmodel import CostModel, ModelCost
from seallm.specs import ModelSpec
from seallm.workload import get_length_distribution, service_rates

LENGTH_SAMPLES = 32


@dataclass(frozen=True)
class ServiceLoad:
    service: str
    model: ModelSpec
    rate: float  # requests/s
    mean_prompt: float
    mean_output: float
    # A few (prompt, output) lengths drawn from the service's distribution: SLO attainment
    # depends on the spread (short requests have the tightest SLOs), not only on the means.
    samples: tuple[tuple[int, int], ...] = ()


def service_loads(config: Config, rate_scale: float = 1.0) -> dict[str, ServiceLoad]:
    wl = config.workload
    rates = service_rates(wl, [(s.name, s.weight) for s in config.services], rate_scale)
    loads = {}
    for s in config.services:
        lengths = get_length_distribution(
            config.lengths_of(s.name), wl.max_prompt_tokens, wl.max_output_tokens
        )
        prompts, outputs = lengths.sample(LENGTH_SAMPLES, np.random.default_rng(0))
        samples = tuple(zip(prompts.tolist(), outputs.tolist(), strict=True))
        loads[s.name] = ServiceLoad(
            s.name, s.model_spec, rates[s.name], lengths.mean_prompt, lengths.mean_output, samples
        )
    return loads


def min_group_size(model: ModelSpec, config: Config) -> int | None:
    """Smallest power-of-two group that holds the weights and the minimum KV reserve."""
    dev, eng = config.cluster.device_spec, config.engine
    size = 1
    while size <= config.cluster.gpus_per_node:
        if model.weight_bytes <= size * dev.memory_bytes * (
            eng.memory_utilization - eng.min_kv_fraction
        ):
            return size
        size *= 2
    return None


def reference_cost(model: ModelSpec, config: Config, cost: CostModel) -> ModelCost:
    """The model's costs on the smallest group that holds it: where standalone latency, the
    reference of slowdowns and SLOs, is measured, the same for every system compared."""
    return cost.for_model(model, min_group_size(model, config) or 1)


def kv_bytes(models: list[ModelSpec], size: int, config: Config) -> float:
    """KV memory of a group hosting `models`: what the weights leave of the usable memory."""
    usable = size * config.cluster.device_spec.memory_bytes * config.engine.memory_utilization
    return usable - sum(m.weight_bytes for m in models)


def busy_fraction(
    load: ServiceLoad, cost: CostModel, size: int, eng: EngineSpec, batch: int = 16
) -> float:
    """Fraction of a group's time the service needs, with decode batched `batch` wide:
    rate x (prefill + output tokens x decode iteration time / batch)."""
    mc = cost.for_model(load.model, size)
    p, o = int(load.mean_prompt), max(1, int(load.mean_output))
    decode = mc.iteration_time(0, 0.0, batch, batch * (p + o // 2)) / batch
    return load.rate * (mc.prefill_time(p) + o * decode)
