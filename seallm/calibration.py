"""Efficiency factors of the cost model, and the reader of the measured profiles they come from.

A `Calibration` turns a device's datasheet peaks (`DeviceSpec`) into achieved rates. Kernel
shapes, as `seallm/costmodel.py` uses them:

- GEMM [M, K] x [K, N]: gemm_launch_overhead + max(compute, memory), compute =
  2*K*(N + gemm_pad_n)*(M + gemm_pad_m) / (peak * gemm_compute_eff) and memory = bytes of
  weights and activations / (bandwidth * gemm_memory_eff). The paddings model tile and wave
  quantization: a GEMM with few rows (tokens) or output columns cannot fill every SM, so its
  achieved fraction of peak is gemm_compute_eff * M/(M + pad_m) * N/(N + pad_n). Compute stays
  linear in M, which keeps an iteration's cost piecewise linear in its token count.
- Element-wise kernels (norm, activation, rope, residual add, embedding, KV-cache write):
  launch_overhead + max(row time, bytes / (bandwidth * <op>_memory_eff)). vLLM's per-token
  kernels (norm, activation, rope) run one thread block per token, so a handful of tokens
  take one row's bytes / row_bandwidth (one block's streaming rate); the add is flat.

Fitted (a100-80gb, h100-80gb) against the measured per-operator kernel times of the Vidur
profiles (`../shared/profiles/{a100,h100}/*.mlp.csv`: Llama-2-7B, CodeLlama-34B, Llama-2-70B,
Llama-3-8B; 1-4096 tokens; tensor parallel 1-8), one Calibration per GPU over all models and
tp degrees, by

    python scripts/calibrate_costmodel.py --profiles ../shared/profiles

which minimizes the mean absolute log error of every operator and of the per-layer sum (rows
weighted equally per octave of token count; coordinate search from fixed starts, numpy only;
re-running reproduces them) and prints the `Calibration(...)` literals pasted below;
`python scripts/check_costmodel.py` reports the resulting errors. Fitted: launch_overhead, the
gemm_* fields, row_bandwidth and the <op>_memory_eff of norm, act, rope, add and emb.
(add_memory_eff reaches its cap of 1 on H100: the residual's input is often still in the
50 MB L2 cache.)

Assumed (the profiles hold no attention, collectives or CPU time), with their sources (figures
as reported in those publications, not re-measured here):

- attn_compute_eff: FlashAttention-2 forward reaches 50-73% of peak on A100 and ~35-40% on
  H100 (Dao, "FlashAttention-2", 2023; Shah et al., "FlashAttention-3", 2024, for FA2 on
  H100); we take the low end for the short, variable-length prompts of serving: 0.5 (A100),
  0.4 (H100).
- attn_memory_eff: paged decode attention streams the KV cache at 60-80% of HBM bandwidth
  (Ye et al., "FlashInfer", MLSys 2025, decode-attention bandwidth utilization): 0.65.
- allreduce_latency, allreduce_bw_eff: ring all-reduce on NVLink, small-message latency
  ~10-20 us and bus bandwidth ~75-80% of the link's (nccl-tests on DGX A100/H100; vLLM's
  custom all-reduce brings small messages to ~10 us): 10 us and 0.75.
- iteration_overhead, per_seq_overhead: the CPU work of a vLLM-like engine per step
  (scheduling, building input tensors, sampling, detokenization) during which the GPU waits.
  The vLLM v0.6.0 release blog (2024-09) found these a large share of each step for
  Llama-3-8B on one H100; WukLab's study of vLLM 0.5.4 ("Can Scheduling Overhead Dominate LLM
  Inference Performance?", 2024) found the overhead grows with the number of sequences in the
  batch, and SGLang's stays under 3 ms. We take 1 ms per step plus 10 us per sequence.
- swap_latency: fixed cost of one device<->host KV transfer (cudaMemcpyAsync issue and
  synchronization, ~10-20 us): 20 us.
- cpu: rough figures for PyTorch eager on a few cores (op dispatch ~20 us per kernel, GEMMs at
  about half of peak); `seallm profile` measures the real ones.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from seallm.catalog import DEVICES
from seallm.specs import DeviceSpec, ModelSpec


@dataclass(frozen=True)
class Calibration:
    """Achieved / peak efficiency per op class, per-kernel launch cost, fixed overheads."""

    launch_overhead: float  # s per kernel (launch + minimum kernel duration)
    gemm_launch_overhead: float  # the same for a GEMM (prologue/epilogue, tile pipeline fill)
    gemm_compute_eff: float  # achieved / peak FLOP/s of large GEMMs
    gemm_pad_m: float  # wave quantization: M (tokens) counts as M + gemm_pad_m for compute
    gemm_pad_n: float  # ... and N (output features) as N + gemm_pad_n
    gemm_memory_eff: float  # achieved / peak bandwidth streaming GEMM weights (small M)
    row_bandwidth: float  # bytes/s one thread block streams (per-token kernels, few tokens)
    norm_memory_eff: float  # RMSNorm
    act_memory_eff: float  # SiLU-and-mul (or GELU)
    rope_memory_eff: float  # rotary embedding of q and k
    add_memory_eff: float  # residual add
    emb_memory_eff: float  # embedding lookup
    attn_compute_eff: float  # prefill (flash) attention
    attn_memory_eff: float  # decode (paged) attention: KV cache read
    allreduce_latency: float  # s per all-reduce (or gather) call
    allreduce_bw_eff: float  # achieved / peak intra-node link bandwidth in a ring
    iteration_overhead: float  # s of CPU work per engine iteration
    per_seq_overhead: float  # s of CPU work per sequence in the batch
    swap_latency: float = 20e-6  # s fixed per KV swap


# Pasted from `python scripts/calibrate_costmodel.py --profiles ../shared/profiles`.
CALIBRATIONS: dict[str, Calibration] = {
    "a100-80gb": Calibration(
        launch_overhead=1.86e-6,
        gemm_launch_overhead=5.1e-6,
        gemm_compute_eff=0.738,
        gemm_pad_m=90.5,
        gemm_pad_n=40.7,
        gemm_memory_eff=0.787,
        row_bandwidth=9.56e9,
        norm_memory_eff=0.515,
        act_memory_eff=0.493,
        rope_memory_eff=0.419,
        add_memory_eff=0.904,
        emb_memory_eff=0.148,
        attn_compute_eff=0.5,
        attn_memory_eff=0.65,
        allreduce_latency=1e-5,
        allreduce_bw_eff=0.75,
        iteration_overhead=0.001,
        per_seq_overhead=1e-5,
        swap_latency=2e-5,
    ),
    "h100-80gb": Calibration(
        launch_overhead=1.24e-6,
        gemm_launch_overhead=4.23e-6,
        gemm_compute_eff=0.832,
        gemm_pad_m=213.0,
        gemm_pad_n=500.0,
        gemm_memory_eff=0.9,
        row_bandwidth=1.03e10,
        norm_memory_eff=0.548,
        act_memory_eff=0.571,
        rope_memory_eff=0.485,
        add_memory_eff=1.0,
        emb_memory_eff=0.178,
        attn_compute_eff=0.4,
        attn_memory_eff=0.65,
        allreduce_latency=1e-5,
        allreduce_bw_eff=0.75,
        iteration_overhead=0.001,
        per_seq_overhead=1e-5,
        swap_latency=2e-5,
    ),
    # PyTorch eager on a CPU: dispatch-bound small ops, GEMMs at about half of peak.
    "cpu": Calibration(
        launch_overhead=20e-6,
        gemm_launch_overhead=20e-6,
        gemm_compute_eff=0.5,
        gemm_pad_m=4.0,
        gemm_pad_n=16.0,
        gemm_memory_eff=0.6,
        row_bandwidth=1e12,  # eager CPU kernels split work over all elements, not rows
        norm_memory_eff=0.3,
        act_memory_eff=0.3,
        rope_memory_eff=0.3,
        add_memory_eff=0.5,
        emb_memory_eff=0.3,
        attn_compute_eff=0.3,
        attn_memory_eff=0.4,
        allreduce_latency=50e-6,
        allreduce_bw_eff=0.5,
        iteration_overhead=2e-3,
        per_seq_overhead=20e-6,
        swap_latency=5e-6,
    ),
}

# Unknown accelerators: GPU figures between the two calibrated ones (also the fit's start).
DEFAULT_CALIBRATION = Calibration(
    launch_overhead=2e-6,
    gemm_launch_overhead=5e-6,
    gemm_compute_eff=0.75,
    gemm_pad_m=128.0,
    gemm_pad_n=256.0,
    gemm_memory_eff=0.85,
    row_bandwidth=10e9,
    norm_memory_eff=0.5,
    act_memory_eff=0.5,
    rope_memory_eff=0.45,
    add_memory_eff=0.9,
    emb_memory_eff=0.16,
    attn_compute_eff=0.4,
    attn_memory_eff=0.6,
    allreduce_latency=15e-6,
    allreduce_bw_eff=0.7,
    iteration_overhead=1.5e-3,
    per_seq_overhead=10e-6,
)


def calibration_for(device: DeviceSpec) -> Calibration:
    return CALIBRATIONS.get(device.name, DEFAULT_CALIBRATION)


# --- measured profiles (Vidur's *.mlp.csv) ------------------------------------------------

# The per-layer ops a profile row times (the cost model predicts each), and the embedding.
LINEAR_OPS = (
    "attn_pre_proj",
    "attn_post_proj",
    "mlp_up_proj",
    "mlp_down_proj",
    "mlp_act",
    "input_layernorm",
    "post_attention_layernorm",
    "attn_rope",
    "add",
)
PROFILE_OPS = (*LINEAR_OPS, "emb")


def layer_time(times):
    """Per-layer linear time: every profiled op once, the residual add twice (a layer runs
    two adds)."""
    return sum(times[op] for op in LINEAR_OPS) + times["add"]


PROFILE_DEVICES = {"a100": "a100-80gb", "h100": "h100-80gb"}


@dataclass(frozen=True)
class ProfileRow:
    gpu: str  # profile folder name: "a100" | "h100"
    model: ModelSpec  # built from the CSV's own shape columns
    num_tokens: int
    tp: int
    times: dict[str, float]  # op -> median seconds


def profile_model(name: str, row: dict[str, str]) -> ModelSpec:
    """A ModelSpec with the profiled shape (num_layers/params do not matter per layer)."""
    h, nh, nkv = int(row["n_embd"]), int(row["n_head"]), int(row["n_kv_head"])
    inter, vocab = int(row["n_expanded_embd"]), int(row["vocab_size"])
    gated = row["use_gated_mlp"].strip().lower() in ("true", "1")
    layer_params = h * (nh + 2 * nkv) * (h // nh) + h * h + (3 if gated else 2) * h * inter
    return ModelSpec(
        name=name,
        num_layers=1,
        hidden_size=h,
        num_heads=nh,
        num_kv_heads=nkv,
        head_dim=h // nh,
        intermediate_size=inter,
        vocab_size=vocab,
        num_params=float(layer_params + 2 * h * vocab),
        gated_mlp=gated,
    )


def read_profiles(root: str | Path) -> list[ProfileRow]:
    """Every row of `root/{a100,h100}/*.mlp.csv`, times converted from ms to seconds."""
    rows: list[ProfileRow] = []
    for gpu in sorted(PROFILE_DEVICES):
        for path in sorted(Path(root, gpu).glob("*.mlp.csv")):
            name = path.name.removesuffix(".mlp.csv")
            with path.open(newline="") as f:
                records = list(csv.DictReader(f))
            if not records:
                continue
            model = profile_model(name, records[0])
            for r in records:
                times = {op: float(r[f"time_stats.{op}.median"]) * 1e-3 for op in PROFILE_OPS}
                rows.append(
                    ProfileRow(
                        gpu,
                        model,
                        int(r["num_tokens"]),
                        int(r["num_tensor_parallel_workers"]),
                        times,
                    )
                )
    return rows


def profile_device(gpu: str) -> DeviceSpec:
    return DEVICES[PROFILE_DEVICES[gpu]]
