"""Our Qwen3 (dense) forward pass: Qwen2's layout with an RMSNorm per head on q and on k
before the rotation (QK norm), an explicit `head_dim` (128, not hidden / heads), and biases
only with `attention_bias` (then on q, k, v and o; off in every released checkpoint).

Unlike Gemma's, Qwen3's norm weights multiply as they are (no 1 + w).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from seallm.models.attention import apply_rope
from seallm.models.llama import DecoderConfig
from seallm.models.qwen2 import Qwen2Config, Qwen2Layer, Qwen2Model


@dataclass(frozen=True)
class Qwen3Config(Qwen2Config):
    DEFAULTS: ClassVar[dict[str, Any]] = {**Qwen2Config.DEFAULTS, "head_dim": 128}

    @classmethod
    def biases(cls, cfg: dict[str, Any]) -> dict[str, bool]:
        bias = bool(cfg.get("attention_bias", False))
        return {"qkv_bias": bias, "o_bias": bias}


class Qwen3Layer(Qwen2Layer):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__(cfg)
        self.q_norm = nn.Parameter(torch.empty(cfg.head_dim))
        self.k_norm = nn.Parameter(torch.empty(cfg.head_dim))


class Qwen3Model(Qwen2Model):
    layer_cls = Qwen3Layer

    def project_qkv(
        self, layer: Qwen3Layer, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        n, d, nq, eps = h.shape[0], cfg.head_dim, cfg.num_heads * cfg.head_dim, cfg.rms_norm_eps
        qkv = self.linear(h, layer.qkv, layer.qkv_bias)
        q = apply_rope(F.rms_norm(qkv[:, :nq].view(n, -1, d), (d,), layer.q_norm, eps), *rope)
        kv = qkv[:, nq:].view(n, 2, cfg.num_kv_heads, d)
        kv[:, 0] = apply_rope(F.rms_norm(kv[:, 0], (d,), layer.k_norm, eps), *rope)
        return q, kv

    def load_layer(self, layer: Qwen3Layer, w: dict[str, torch.Tensor]) -> None:
        super().load_layer(layer, w)
        layer.q_norm.copy_(w["self_attn.q_norm.weight"])
        layer.k_norm.copy_(w["self_attn.k_norm.weight"])

    def layer_hf(self, layer: Qwen3Layer) -> dict[str, torch.Tensor]:
        sd = super().layer_hf(layer)
        sd["self_attn.q_norm.weight"] = layer.q_norm
        sd["self_attn.k_norm.weight"] = layer.k_norm
        return sd
