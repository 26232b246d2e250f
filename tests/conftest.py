"""Shared fixtures: small deployments that simulate in well under a second."""

from __future__ import annotations

from pathlib import Path

import pytest

from seallm.config import ClusterSpec, Config, EngineSpec, ServiceSpec
from seallm.workload import WorkloadSpec

SHARED = Path(__file__).resolve().parents[2] / "shared"


def needs_shared(sub: str) -> Path:
    path = SHARED / sub
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture
def small_config() -> Config:
    """One 4-GPU A100 node, three services of different sizes, bursty load."""
    return Config(
        name="small",
        cluster=ClusterSpec(device="a100-80gb", num_nodes=1, gpus_per_node=4),
        services=[
            ServiceSpec("chat-7b", "llama-2-7b"),
            ServiceSpec("code-13b", "llama-2-13b"),
            ServiceSpec("assist-8b", "llama-3-8b"),
        ],
        workload=WorkloadSpec(arrival="gamma", rate=6.0, cv=2.0, alpha=1.0),
        engine=EngineSpec(),
        duration_s=60.0,
        seed=7,
    ).validate()


@pytest.fixture(scope="session")
def real_models():
    """SmolLM2-135M and Gemma-3-270M from their packages, float32 on CPU. The first use on a
    machine converts their GGUF files into the cache folder (a minute or two)."""
    from seallm.models.loader import load_model

    return {name: load_model(name, progress=False) for name in ("smollm2-135m", "gemma-3-270m")}
