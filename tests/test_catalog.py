"""The simulator's catalogue of today's models and the `modern32` preset built on them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from seallm.catalog import MODELS
from seallm.costmodel import CostModel
from seallm.models.loader import build_module
from seallm.placement import get_placement, service_loads
from seallm.presets import MODERN32_LONG, get_preset
from seallm.request import Status
from seallm.runtime.sim import simulate
from seallm.specs import ModelSpec
from seallm.systems import get_system
from seallm.workload import generate

# name -> (model_type, tied embeddings, published size in parameters (model cards))
NEW_MODELS = {
    "llama-3.1-8b": ("llama", False, 8.0e9),
    "llama-3.1-70b": ("llama", False, 70.6e9),
    "llama-3.2-3b": ("llama", True, 3.21e9),
    "qwen2.5-7b": ("qwen2", False, 7.61e9),
    "qwen2.5-14b": ("qwen2", False, 14.7e9),
    "qwen2.5-32b": ("qwen2", False, 32.5e9),
    "qwen2.5-72b": ("qwen2", False, 72.7e9),
    "qwen3-8b": ("qwen3", False, 8.2e9),
    "qwen3-32b": ("qwen3", False, 32.8e9),
    "mistral-7b-v0.3": ("mistral", False, 7.25e9),
    "mistral-small-24b": ("mistral", False, 24.0e9),
}


def hf_config(spec: ModelSpec, model_type: str, tied: bool) -> dict:
    return {
        "model_type": model_type,
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.head_dim,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": tied,
        "max_position_embeddings": spec.max_context,
        "sliding_window": None,
    }


@pytest.mark.parametrize("name", list(NEW_MODELS))
def test_catalogue_shapes_add_up_to_the_published_size(name: str) -> None:
    """Our engine's module of the entry's shapes (built on the meta device: no memory) has
    the entry's parameter count, and that is the model card's size to within 2%."""
    spec = MODELS[name]
    arch, tied, published = NEW_MODELS[name]
    module = build_module(hf_config(spec, arch, tied), "meta", torch.bfloat16)
    counted = sum(p.numel() for p in module.parameters())
    assert spec.num_params == pytest.approx(counted, rel=0.002)
    assert spec.num_params == pytest.approx(published, rel=0.02)
    assert spec.num_heads % spec.num_kv_heads == 0
    assert spec.max_context >= 32768 and spec.dtype_bytes == 2 and spec.gated_mlp


def test_kv_bytes_per_token_of_known_models() -> None:
    # bf16 K and V over all layers: the figures vLLM's and the model cards' KV sizing gives.
    assert MODELS["llama-3.1-8b"].kv_bytes_per_token == 128 * 1024
    assert MODELS["qwen2.5-7b"].kv_bytes_per_token == 56 * 1024  # 4 KV heads, 28 layers
    assert MODELS["qwen2.5-72b"].kv_bytes_per_token == 320 * 1024


def test_modern32_builds_and_places() -> None:
    cfg = get_preset("modern32")
    assert cfg.cluster.num_gpus == 32 and cfg.cluster.device == "h100-80gb"
    assert len(cfg.services) == 12 and set(MODERN32_LONG) <= {s.name for s in cfg.services}
    assert all(s.model in NEW_MODELS for s in cfg.services)
    cost = CostModel(cfg.cluster.device_spec)
    plan = get_placement("dedicated")(cfg, cost, service_loads(cfg)).validate(cfg.cluster)
    assert sum(g.size for g in plan.groups) == cfg.cluster.num_gpus
    for s in cfg.services:
        hosts = plan.hosts(s.name)
        assert hosts, s.name
        if s.model_spec.num_params > 60e9:  # 70B / 72B in bf16 need TP >= 2 on 80 GB
            assert all(g.size >= 2 for g in hosts)


def _rejected(cfg, lengths: str) -> tuple[int, int]:
    """(requests, rejected) of vllm on 10 s of `cfg` with every service's lengths `lengths`."""
    cfg = dataclasses.replace(cfg, duration_s=10.0)
    services = [(s.name, s.weight) for s in cfg.services]
    recs = generate(
        cfg.workload, services, cfg.duration_s, 0, 1.0, {n: lengths for n, _ in services}
    )
    res = simulate(cfg, get_system("vllm"), recs)
    return len(res.requests), sum(r.status is Status.REJECTED for r in res.requests)


def test_long_prompts_fit_todays_contexts() -> None:
    """Prompts 8x Azure's (mean about 9k, up to 32k): the Llama-2-era paper32 turns most of
    them away at its 4k to 16k contexts; modern32 takes every one."""
    long = "azure-conv:prompt=8,output=0.5"
    old = get_preset("paper32")
    old.workload.max_prompt_tokens = 32768
    n, rejected = _rejected(old, long)
    assert rejected > n / 2
    n, rejected = _rejected(get_preset("modern32"), long)
    assert n > 100 and rejected == 0
