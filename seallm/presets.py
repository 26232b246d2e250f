"""Named deployments (part of the interface): `paper32`, `modern32`, `h100x8`, `cpu-duo`; and
workloads built on them (`paper32-shift`)."""

from __future__ import annotations

from collections.abc import Callable

from seallm.config import ClusterSpec, Config, ConfigError, ServiceSpec
from seallm.workload import WorkloadSpec

# paper32's services in popularity order (power law over this order): a dozen services of
# the Llama-2/3, Mistral and CodeLlama classes, from 7B to 70B, sizes interleaved so that
# both small and large models are among the popular ones.
PAPER32_MODELS = [
    "llama-2-7b",
    "llama-3-8b",
    "llama-2-13b",
    "mistral-7b",
    "codellama-34b",
    "llama-2-70b",
    "llama-2-7b",
    "llama-3-8b",
    "llama-2-13b",
    "mistral-7b",
    "llama-3-70b",
    "codellama-34b",
]


def _named(models: list[str]) -> list[ServiceSpec]:
    return [ServiceSpec(name=f"s{i:02d}-{m}", model=m) for i, m in enumerate(models)]


def paper32() -> Config:
    """4 nodes x 8 A100-80GB, 12 services, power-law popularity, Azure-conv lengths,
    bursty (Gamma CV 2) arrivals."""
    return Config(
        name="paper32",
        cluster=ClusterSpec(device="a100-80gb", num_nodes=4, gpus_per_node=8),
        services=_named(PAPER32_MODELS),
        workload=WorkloadSpec(arrival="gamma", rate=24.0, cv=2.0, alpha=0.9),
        duration_s=600.0,
    )


# paper32-shift: popularity rotates by 3 services at these (irregular) times, and a cold
# service bursts to 8x its rate for two minutes.
SHIFT_TIMES = [420.0, 960.0, 1380.0, 2160.0, 2640.0, 3300.0]
SHIFT_BURSTS = [(1560.0, 120.0, 8.0, "s11-codellama-34b")]


def paper32_shift() -> Config:
    """paper32 at 1.5x its rate for an hour, with shifting popularity. At each of
    SHIFT_TIMES the popularity order rotates by 3 services (the hot spot moves to other
    models), plus one burst of a cold service. Placements plan for the long-run mean rates; a
    workload for re-placement."""
    cfg = paper32()
    cfg.name = "paper32-shift"
    cfg.workload.rate = 36.0
    cfg.workload.shift_times = list(SHIFT_TIMES)
    cfg.workload.shift_step = 3
    cfg.workload.bursts = list(SHIFT_BURSTS)
    cfg.duration_s = 3600.0
    return cfg


# modern32's services in popularity order: today's dense models (catalog.py), 3B to 72B, sizes
# interleaved as in paper32; the popular 8B class appears twice (two fine-tunes of one base).
MODERN32_MODELS = [
    "llama-3.1-8b",
    "qwen2.5-7b",
    "qwen3-8b",
    "qwen2.5-14b",
    "mistral-small-24b",
    "llama-3.1-70b",
    "mistral-7b-v0.3",
    "qwen3-32b",
    "llama-3.2-3b",
    "qwen2.5-32b",
    "qwen2.5-72b",
    "llama-3.1-8b",
]
# Services whose requests carry long contexts (retrieval, documents, code bases): Azure
# conversation lengths with prompts scaled up, outputs shorter. Prompt mean about 4.6k and 9k,
# up to the 32k context (every model here has at least 32k).
MODERN32_LONG = {
    "s03-qwen2.5-14b": "azure-conv:prompt=4,output=0.5",
    "s05-llama-3.1-70b": "azure-conv:prompt=8,output=0.5",
    "s09-qwen2.5-32b": "azure-conv:prompt=8,output=0.5",
}


def modern32() -> Config:
    """4 nodes x 8 H100-80GB, 12 services of today's models (Llama-3.1/3.2, Qwen2.5, Qwen3,
    Mistral), power-law popularity, Azure-conv lengths with a 32k context (three services
    with long prompts), bursty (Gamma CV 2) arrivals."""
    services = [
        ServiceSpec(name=s.name, model=s.model, lengths=MODERN32_LONG.get(s.name))
        for s in _named(MODERN32_MODELS)
    ]
    return Config(
        name="modern32",
        cluster=ClusterSpec(device="h100-80gb", num_nodes=4, gpus_per_node=8),
        services=services,
        workload=WorkloadSpec(
            arrival="gamma", rate=32.0, cv=2.0, alpha=0.9, max_prompt_tokens=32768
        ),
        duration_s=600.0,
    )


def h100x8() -> Config:
    """One 8xH100 node, five services from 7B to 70B (as many as dedicated serving fits)."""
    models = ["llama-3-8b", "mistral-7b", "llama-2-13b", "codellama-34b", "llama-2-70b"]
    return Config(
        name="h100x8",
        cluster=ClusterSpec(device="h100-80gb", num_nodes=1, gpus_per_node=8),
        services=_named(models),
        workload=WorkloadSpec(arrival="gamma", rate=10.0, cv=2.0, alpha=0.9),
        duration_s=600.0,
    )


def cpu_duo() -> Config:
    """The two real small models on one CPU device."""
    return Config(
        name="cpu-duo",
        cluster=ClusterSpec(device="cpu", num_nodes=1, gpus_per_node=1),
        services=[
            ServiceSpec(name="smollm2-135m", model="smollm2-135m"),
            ServiceSpec(name="gemma-3-270m", model="gemma-3-270m"),
        ],
        workload=WorkloadSpec(
            arrival="gamma",
            rate=1.0,
            cv=2.0,
            alpha=0.5,
            max_prompt_tokens=512,
            max_output_tokens=128,
        ),
        duration_s=120.0,
    )


PRESETS: dict[str, Callable[[], Config]] = {
    "paper32": paper32,
    "paper32-shift": paper32_shift,
    "modern32": modern32,
    "h100x8": h100x8,
    "cpu-duo": cpu_duo,
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"preset: {name!r} is not one of {', '.join(PRESETS)}")
    return PRESETS[name]().validate()
