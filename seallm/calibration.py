"""Efficiency factors of the cost model, and the reader of the measured profiles they come from.

A `Calibration` turns a device's datasheet peaks (`DeviceSpec`) into achieved rates. What is
fitted and what is assumed:

Fitted (a100-80gb, h100-80gb) against the measured per-operator kernel times of the Vidur
profiles (`../shared/profiles/{a100,h100}/*.mlp.csv`: Llama-2-7B, CodeLlama-34B, Llama-2-70B,
Llama-3-8B; 1-4096 tokens; tensor parallel 1-8) by

    python scripts/calibrate_costmodel.py --profiles ../shared/profiles

which minimizes the mean absolute log error of every operator (coordinate search, numpy only)
and prints the `Calibration(...)` literals pasted below. `python scripts/check_costmodel.py`
reports the resulting errors. The fitted fields: `launch_overhead`, the `gemm_*` fields and the
memory efficiencies of the element-wise kernels (`norm`, `act`, `rope`, `add`, `emb`).

GEMM compute efficiency depends on the token count M: a GEMM with few rows cannot fill every
SM (tile and wave quantization, split-K), so the achieved fraction of peak is modelled as
`gemm_compute_eff * M / (M + gemm_half_tokens)`. Its compute time is then
`2*K*N*(M + gemm_half_tokens) / (peak * gemm_compute_eff)`: still linear in M, which keeps
the per-iteration cost a piecewise-linear function of the batch's token count.

Assumed (the profiles hold no attention, collectives or CPU time), with their sources:

- `attn_compute_eff`: FlashAttention-2 forward reaches 50-73% of peak on A100 and ~35-40%
  on H100 (Dao, "FlashAttention-2", 2023, Fig. 4-7; FA3 paper, 2024, for FA2 on H100); we
  take the lower end for the short, variable-length prompts of serving: 0.5 (A100), 0.4 (H100).
- `attn_memory_eff`: paged decode attention streams the KV cache at 60-80% of HBM bandwidth
  (FlashInfer, "FlashInfer: Efficient and Customizable Attention Engine", 2025, Fig. 8): 0.65.
- `allreduce_latency`, `allreduce_bw_eff`: NCCL ring all-reduce on NVLink, small-message
  latency ~10-20 us and bus bandwidth ~75-80% of the link's (nccl-tests on DGX A100/H100);
  vLLM's custom all-reduce brings small messages to ~10 us: 10 us and 0.75.
- `iteration_overhead`, `per_seq_overhead`: the CPU work of a vLLM-like engine per step
  (scheduling, input tensors, sampling, detokenization), which the GPU waits for. vLLM's
  v0.6.0 release blog (2024-09) measured the scheduler and input preparation of Llama-3-8B on
  one H100 at a large share of each ~10 ms step; WukLab's study of vLLM 0.5.4 ("Can Scheduling
  Overhead Dominate LLM Inference Performance?", 2024) found it grows with the number of
  sequences, SGLang's stays under 3 ms. We take 1 ms per step plus 10 us per sequence.
- `swap_latency`: fixed cost of a device<->host KV transfer (cudaMemcpyAsync issue and
  synchronization, ~10-20 us): 20 us.
- cpu: rough figures for PyTorch eager on a few cores (op dispatch ~20 us per kernel, GEMMs
  at about half of peak); `seallm profile` measures the real ones.
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
        launch_overhead=1.82e-6,
        gemm_launch_overhead=5.09e-6,
        gemm_compute_eff=0.738,
        gemm_pad_m=90.7,
        gemm_pad_n=41.4,
        gemm_memory_eff=0.786,
        row_bandwidth=9.49e9,
        norm_memory_eff=0.514,
        act_memory_eff=0.492,
        rope_memory_eff=0.418,
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
        launch_overhead=1.51e-6,
        gemm_launch_overhead=4.19e-6,
        gemm_compute_eff=0.83,
        gemm_pad_m=211.0,
        gemm_pad_n=500.0,
        gemm_memory_eff=0.898,
        row_bandwidth=1.09e10,
        norm_memory_eff=0.555,
        act_memory_eff=0.579,
        rope_memory_eff=0.496,
        add_memory_eff=1.0,
        emb_memory_eff=0.18,
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
        gemm_compute_eff=0.5,
        gemm_launch_overhead=4e-6,
        gemm_pad_m=4.0,
        gemm_pad_n=256.0,
        gemm_memory_eff=0.6,
        row_bandwidth=10e9,
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

# Unknown accelerators: middle-of-the-road GPU figures (between the two calibrated ones).
DEFAULT_CALIBRATION = Calibration(
    launch_overhead=4e-6,
    gemm_compute_eff=0.65,
    gemm_launch_overhead=5e-6,
    gemm_pad_m=100.0,
    gemm_pad_n=256.0,
    gemm_memory_eff=0.8,
    row_bandwidth=10e9,
    norm_memory_eff=0.3,
    act_memory_eff=0.5,
    rope_memory_eff=0.4,
    add_memory_eff=0.8,
    emb_memory_eff=0.2,
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

PROFILE_OPS = (
    "attn_pre_proj",
    "attn_post_proj",
    "mlp_up_proj",
    "mlp_down_proj",
    "mlp_act",
    "input_layernorm",
    "post_attention_layernorm",
    "attn_rope",
    "add",
    "emb",
)
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
