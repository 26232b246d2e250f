"""Analytical cost model: iteration, prefill, decode, swap and model-load times.

Every kernel is costed by a roofline, launch overhead + max(FLOPs / (peak * eff_c), bytes /
(bandwidth * eff_m)), with the efficiency factors of the device's `Calibration` (fitted against
measured kernel times; the kernel shapes and the fit are described in `seallm/calibration.py`).
Weights and work are sharded by the tensor-parallel degree tp the way vLLM/Megatron shard them:
QKV and MLP up (fused gate+up when gated) are column-parallel, O and down are row-parallel,
attention heads and the MLP activation are split, norms, residual adds and the embedding are
replicated, and each layer ends its attention and its MLP with an all-reduce (ring, over the
intra-node link) when tp > 1. KV heads are replicated when tp exceeds their number.

One forward pass (`ModelCost.iteration_time`) of a batch with M = prefill + decode tokens:

    num_layers * (QKV + rope + KV-cache write + attention + O + 2 norms + 2 adds + up + act
                  + down + 2 all-reduces)
    + embedding (+ its all-reduce) + final norm + LM head on the sampled tokens (+ logits gather)
    + CPU overhead (fixed per step, plus per sequence).

Everything but attention and the LM head depends on M only and is piecewise linear in M (each
kernel is the max of two lines in M), so `ModelCost` precomputes the pieces once and an
iteration costs a bisect and a few float operations. Prefill attention is causal and compute
bound: 2*head_dim FLOPs per (query, key) pair for QK^T and as many for PV, ~l^2/2 pairs per
prompt of length l, hence the sum of squared lengths. (A chunk of c tokens continuing a prompt
of which q tokens are cached attends to ~c*q + c^2/2 pairs: pass c*(c + 2*q) as its square.)
Decode attention streams each request's K and V (memory bound). Only the last position of each
sequence goes through the LM head; the number of prefill sequences is estimated as
prefill_tokens^2 / prefill_sq_sum (exact for equal lengths, 1 for one prompt).
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right

import numpy as np

from seallm.calibration import (
    CALIBRATIONS,
    DEFAULT_CALIBRATION,
    LINEAR_OPS,
    Calibration,
    calibration_for,
)
from seallm.specs import DeviceSpec, ModelSpec

__all__ = [
    "CALIBRATIONS",
    "DEFAULT_CALIBRATION",
    "LINEAR_OPS",
    "Calibration",
    "CostModel",
    "ModelCost",
]


class CostModel:
    """Costs of models on one kind of device; `for_model` gives the fast per-model view."""

    def __init__(self, device: DeviceSpec, calibration: Calibration | None = None):
        self.device = device
        self.calibration = calibration or calibration_for(device)
        self._cache: dict[tuple[str, int], ModelCost] = {}

    def for_model(self, model: ModelSpec, tp: int) -> ModelCost:
        key = (model.name, tp)
        cost = self._cache.get(key)
        if cost is None:
            cost = self._cache[key] = ModelCost(model, self.device, self.calibration, tp)
        return cost

    def load_time(self, model: ModelSpec, tp: int, source: str = "host") -> float:
        """Seconds to load each GPU's weight shard (shards load in parallel)."""
        if source == "host":
            bandwidth = self.device.host_bandwidth
        elif source == "disk":
            bandwidth = self.device.disk_bandwidth
        else:
            raise ValueError(f"unknown load source {source!r} (host | disk)")
        return model.weight_bytes / tp / bandwidth

    def swap_time(self, model: ModelSpec, tp: int, num_tokens: int) -> float:
        """Seconds to move num_tokens of KV cache between device and host (one direction)."""
        if num_tokens <= 0:
            return 0.0
        kv_heads = math.ceil(model.num_kv_heads / tp)  # replicated when fewer heads than GPUs
        per_token = 2 * model.num_layers * kv_heads * model.head_dim * model.dtype_bytes
        return self.calibration.swap_latency + num_tokens * per_token / self.device.host_bandwidth


class ModelCost:
    """Precomputed per-iteration cost of one model on one tp group of a device."""

    def __init__(self, model: ModelSpec, device: DeviceSpec, calibration: Calibration, tp: int):
        if tp < 1:
            raise ValueError("tp must be >= 1")
        self.model, self.device, self.calibration, self.tp = model, device, calibration, tp
        cal, dt = calibration, model.dtype_bytes
        peak, bw = device.peak_flops, device.memory_bandwidth
        h, hd, layers = model.hidden_size, model.head_dim, model.num_layers
        nh = math.ceil(model.num_heads / tp)
        nkv = math.ceil(model.num_kv_heads / tp)
        inter = model.intermediate_size / tp
        gemm = self._gemm_kernel
        row = self._row_kernel
        # Per-layer kernels: name -> (kernels per layer, kernel). A kernel is (launch, ci, cs,
        # mi, ms): it takes launch + max(ci + cs*M, mi + ms*M) seconds for M tokens.
        self._kernels = {
            "attn_pre_proj": (1, gemm(h, (nh + 2 * nkv) * hd)),  # column-parallel
            "attn_post_proj": (1, gemm(nh * hd, h)),  # row-parallel
            "mlp_up_proj": (1, gemm(h, (2 if model.gated_mlp else 1) * inter)),  # fused gate+up
            "mlp_down_proj": (1, gemm(inter, h)),  # row-parallel
            "mlp_act": (1, row((3 if model.gated_mlp else 2) * inter * dt, cal.act_memory_eff)),
            # RMSNorm reads its row twice (sum of squares, then scale) and writes it once.
            "input_layernorm": (1, row(3 * h * dt, cal.norm_memory_eff)),
            "post_attention_layernorm": (1, row(3 * h * dt, cal.norm_memory_eff)),
            "attn_rope": (1, row(2 * (nh + nkv) * hd * dt, cal.rope_memory_eff)),  # q, k in place
            "add": (2, row(3 * h * dt, cal.add_memory_eff, per_row=False)),  # flat element-wise
            "kv_cache_write": (1, row(2 * nkv * hd * dt, cal.attn_memory_eff)),
        }
        model_kernels = [
            row(2 * h * dt, cal.emb_memory_eff),  # embedding lookup
            row(3 * h * dt, cal.norm_memory_eff),  # final norm
        ]
        if tp > 1:  # 2 all-reduces per layer + the vocab-parallel embedding's (ring)
            ring = 2 * (tp - 1) / tp / (device.intra_node_bandwidth * cal.allreduce_bw_eff)
            allreduce = (cal.allreduce_latency, 0.0, 0.0, 0.0, h * dt * ring)
            self._kernels["allreduce"] = (2, allreduce)
            model_kernels.append(allreduce)
        kernels = [(layers * c, k) for c, k in self._kernels.values()]
        kernels += [(1, k) for k in model_kernels]

        # Their sum is piecewise linear in M: precompute (intercept, slope) per piece.
        a0 = cal.iteration_overhead + sum(c * k[0] for c, k in kernels)
        breaks = {(k[3] - k[1]) / (k[2] - k[4]) for _, k in kernels if k[2] != k[4]}
        self._breaks = sorted(x for x in breaks if x > 0)
        edges = [0.0, *self._breaks, math.inf]
        self._lin_a, self._lin_b = [], []
        for lo, hi in itertools.pairwise(edges):
            mid = lo + 1.0 if hi == math.inf else 0.5 * (lo + hi)
            a, b = a0, 0.0
            for c, (_, ci, cs, mi, ms) in kernels:
                if ci + cs * mid > mi + ms * mid:
                    a, b = a + c * ci, b + c * cs
                else:
                    a, b = a + c * mi, b + c * ms
            self._lin_a.append(a)
            self._lin_b.append(b)

        # LM head on the sampled tokens (vocab-parallel) + gathering the logits.
        launch, ci, cs, mi, ms = gemm(h, model.vocab_size / tp)
        self._lm = (ci + launch, cs, mi + launch, ms)
        self._seq = cal.per_seq_overhead  # + each sequence's share of the logits gather
        if tp > 1:
            gather = (tp - 1) / tp / (device.intra_node_bandwidth * cal.allreduce_bw_eff)
            self._lm_fixed = cal.allreduce_latency
            self._seq += model.vocab_size * dt * gather
        else:
            self._lm_fixed = 0.0
        # Attention (per iteration, all layers): prefill is causal, 2*hd FLOPs per (q, k) pair
        # for QK^T and as many for PV over ~l^2/2 pairs; decode reads each context's K and V.
        self._pf_launch = self._dc_launch = layers * cal.launch_overhead
        self._pf_c = layers * 2 * nh * hd / (peak * cal.attn_compute_eff)  # * sum of l^2
        self._pf_m = layers * 2 * (nh + nkv) * hd * dt / (bw * cal.attn_memory_eff)  # * tokens
        self._dc_c = layers * 4 * nh * hd / (peak * cal.attn_compute_eff)  # * context sum
        self._dc_mc = layers * 2 * nkv * hd * dt / (bw * cal.attn_memory_eff)  # * context sum
        self._dc_mn = layers * 2 * nh * hd * dt / (bw * cal.attn_memory_eff)  # * requests

    def _gemm_kernel(self, k: float, n: float) -> tuple[float, float, float, float, float]:
        """An [M, k] x [k, n] GEMM: compute with wave quantization (M and n padded) vs
        streaming the weights and activations."""
        cal, dev, dt = self.calibration, self.device, self.model.dtype_bytes
        c_s = 2 * k * (n + cal.gemm_pad_n) / (dev.peak_flops * cal.gemm_compute_eff)
        m_bw = dev.memory_bandwidth * cal.gemm_memory_eff
        return (
            cal.gemm_launch_overhead,
            c_s * cal.gemm_pad_m,
            c_s,
            k * n * dt / m_bw,
            (k + n) * dt / m_bw,
        )

    def _row_kernel(
        self, bytes_per_token: float, eff: float, per_row: bool = True
    ) -> tuple[float, float, float, float, float]:
        """A memory-bound element-wise kernel. vLLM's norm/activation/rope kernels give each
        token one thread block, so a few tokens take as long as one block streams its row."""
        cal = self.calibration
        row = bytes_per_token / cal.row_bandwidth if per_row else 0.0
        bw = self.device.memory_bandwidth * eff
        return (cal.launch_overhead, row, 0.0, 0.0, bytes_per_token / bw)

    # --- the hot path --------------------------------------------------------------------

    def iteration_time(
        self, prefill_tokens: int, prefill_sq_sum: float, n_decode: int, decode_ctx_sum: int
    ) -> float:
        """Seconds of one forward pass (see the module docstring); 0.0 for no work."""
        m = prefill_tokens + n_decode
        if m <= 0:
            return 0.0
        i = bisect_right(self._breaks, m)
        t = self._lin_a[i] + self._lin_b[i] * m
        n = n_decode
        if prefill_tokens > 0:
            c = self._pf_c * prefill_sq_sum
            mem = self._pf_m * prefill_tokens
            t += self._pf_launch + (c if c > mem else mem)
            n += prefill_tokens * prefill_tokens / prefill_sq_sum if prefill_sq_sum > 0 else 1.0
        if n_decode > 0:
            c = self._dc_c * decode_ctx_sum
            mem = self._dc_mc * decode_ctx_sum + self._dc_mn * n_decode
            t += self._dc_launch + (c if c > mem else mem)
        ci, cs, mi, ms = self._lm
        c = ci + cs * n
        mem = mi + ms * n
        return t + (c if c > mem else mem) + self._lm_fixed + self._seq * n

    def _decode_base(self, n_decode: int) -> float:
        """Everything of a decode-only iteration except its attention's max(...) term."""
        i = bisect_right(self._breaks, n_decode)
        t = self._lin_a[i] + self._lin_b[i] * n_decode + self._dc_launch
        ci, cs, mi, ms = self._lm
        c, mem = ci + cs * n_decode, mi + ms * n_decode
        return t + (c if c > mem else mem) + self._lm_fixed + self._seq * n_decode

    def decode_terms(self, n_decode: int) -> tuple[float, float, float, float]:
        """(base, c, mc, mn): a decode-only iteration of n_decode requests with context sum
        ctx costs base + max(c ctx, mc ctx + mn n_decode) (`decode_times`, vectorized by
        callers that price several variants at once)."""
        return self._decode_base(n_decode), self._dc_c, self._dc_mc, self._dc_mn

    def decode_times(self, n_decode: int, ctx_sum: int, k: int) -> np.ndarray:
        """Durations of k consecutive decode-only iterations, the context sum growing by
        n_decode each time (ctx_sum for the first); equals looping `iteration_time`."""
        if k <= 0 or n_decode <= 0:
            return np.zeros(max(k, 0))
        ctx = ctx_sum + n_decode * np.arange(k, dtype=np.float64)
        attn = np.maximum(self._dc_c * ctx, self._dc_mc * ctx + self._dc_mn * n_decode)
        return self._decode_base(n_decode) + attn

    def prefill_time(self, prompt_tokens: int) -> float:
        return self.iteration_time(prompt_tokens, prompt_tokens * prompt_tokens, 0, 0)

    def standalone_latency(self, prompt_tokens: int, output_tokens: int) -> float:
        """Alone on the group: prefill (yields token 1), then output_tokens - 1 decode steps
        at batch 1. Decode step i (1-based) holds the KV of prompt_tokens + i tokens: the
        prompt, the tokens generated so far, and the one it feeds in (`Request.context_tokens`
        = prompt + generated, as the engine passes it)."""
        t = self.prefill_time(prompt_tokens)
        k = output_tokens - 1
        if k <= 0:
            return t
        first, last = prompt_tokens + 1, prompt_tokens + k
        c, mc, mn = self._dc_c, self._dc_mc, self._dc_mn
        ctx_total = k * first + k * (k - 1) / 2
        # max of two lines in ctx: closed form when one line wins at both ends.
        if mc * first + mn >= c * first and mc * last + mn >= c * last:
            attn = mc * ctx_total + mn * k
        elif c * first >= mc * first + mn and c * last >= mc * last + mn:
            attn = c * ctx_total
        else:
            attn = float(self.decode_times(1, first, k).sum()) - k * self._decode_base(1)
        return t + k * self._decode_base(1) + attn

    # --- per-op view (what the measured profiles hold) -----------------------------------

    def linear_op_times(self, num_tokens: int) -> dict[str, float]:
        """Seconds of each profiled op of ONE layer at num_tokens on this tp (one `add`
        kernel; a layer runs two). Also takes an array of token counts (for calibration)."""
        m = np.asarray(num_tokens, dtype=np.float64)
        out = {}
        for op in LINEAR_OPS:
            launch, ci, cs, mi, ms = self._kernels[op][1]
            t = launch + np.maximum(ci + cs * m, mi + ms * m)
            out[op] = float(t) if np.ndim(num_tokens) == 0 else t
        return out

    def embedding_time(self, num_tokens: int) -> float:
        """Seconds of the embedding lookup kernel (replicated over tp)."""
        launch, ci, cs, mi, ms = self._row_kernel(
            2 * self.model.hidden_size * self.model.dtype_bytes, self.calibration.emb_memory_eff
        )
        m = np.asarray(num_tokens, dtype=np.float64)
        t = launch + np.maximum(ci + cs * m, mi + ms * m)
        return float(t) if np.ndim(num_tokens) == 0 else t
