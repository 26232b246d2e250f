"""Our Gemma 3 (text) forward pass over the paged pool.

What differs from Llama: the embedding is scaled by sqrt(hidden); RMSNorm multiplies by
(1 + w) (stored here as the effective factor, so the same fused kernel serves); each layer
normalizes around attention and around the MLP (four norms); queries and keys get their own
RMSNorm per head (QK norm); the MLP is GeGLU (tanh GELU); the attention scale comes from
`query_pre_attn_scalar`; and layers alternate sliding-window attention (local rotary base)
with global attention (global rotary base). Sliding layers keep every token in the page
table; the window is applied by what they gather and mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seallm.models.attention import (
    AttentionBatch,
    LayerKV,
    apply_rope,
    attend,
    rope_inv_freq,
    rope_tables,
    write_kv,
)
from seallm.models.llama import DecoderConfig, DecoderLayer, LlamaModel


@dataclass(frozen=True)
class Gemma3Config(DecoderConfig):
    sliding_window: int = 512
    layer_types: tuple[str, ...] = ()
    local_rope_theta: float = 10000.0
    query_pre_attn_scalar: float = 256.0

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> Gemma3Config:
        if cfg.get("text_config"):  # a multimodal checkpoint's config: take its text part
            cfg = {**cfg["text_config"], "model_type": "gemma3_text"}
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if cfg.get(key):
                raise ValueError(f"{key} is not supported")
        if cfg.get("use_bidirectional_attention"):
            raise ValueError("use_bidirectional_attention is not supported")
        rope = cfg.get("rope_parameters") or {}
        full = rope.get("full_attention", {"rope_theta": cfg.get("rope_theta", 1e6)})
        local = rope.get("sliding_attention", {"rope_theta": cfg.get("rope_local_base_freq", 1e4)})
        for r in (full, local):
            if r.get("rope_type", "default") != "default":
                raise ValueError(f"rope_type {r['rope_type']!r} is not supported")
        n = cfg["num_hidden_layers"]
        pattern = cfg.get("sliding_window_pattern") or cfg.get("_sliding_window_pattern") or 6
        types = cfg.get("layer_types") or [
            "full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)
        ]
        base = DecoderConfig.from_hf(
            {**cfg, "rope_parameters": None, "rope_theta": full["rope_theta"]}
        )
        return cls(
            **{f: getattr(base, f) for f in DecoderConfig.__dataclass_fields__},
            sliding_window=cfg["sliding_window"],
            layer_types=tuple(types),
            local_rope_theta=float(local["rope_theta"]),
            query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar", cfg["head_dim"])),
        )


class Gemma3Layer(DecoderLayer):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__(cfg)
        h, d = cfg.hidden_size, cfg.head_dim
        self.post_attn_norm = nn.Parameter(torch.empty(h))
        self.post_mlp_norm = nn.Parameter(torch.empty(h))
        self.q_norm = nn.Parameter(torch.empty(d))
        self.k_norm = nn.Parameter(torch.empty(d))


class Gemma3Model(LlamaModel):
    layer_cls = Gemma3Layer
    cfg: Gemma3Config

    def __init__(self, cfg: Gemma3Config) -> None:
        super().__init__(cfg)
        local = rope_inv_freq(cfg.head_dim, cfg.local_rope_theta, None)
        self.register_buffer("local_inv_freq", local, False)

    @property
    def windows(self) -> tuple[int | None, ...]:
        return (None, self.cfg.sliding_window)

    def layer_window(self, i: int) -> int | None:
        return self.cfg.sliding_window if self.cfg.layer_types[i] == "sliding_attention" else None

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.cfg.query_pre_attn_scalar)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        scale = torch.tensor(self.cfg.hidden_size**0.5, dtype=self.embed.dtype)
        return F.embedding(tokens, self.embed) * scale

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> dict[Any, tuple]:
        return {
            None: rope_tables(positions, self.inv_freq, dtype),
            self.cfg.sliding_window: rope_tables(positions, self.local_inv_freq, dtype),
        }

    def layer_forward(
        self,
        i: int,
        layer: Gemma3Layer,
        x: torch.Tensor,
        batch: AttentionBatch,
        cache: LayerKV,
        ropes: dict[Any, tuple],
    ) -> torch.Tensor:
        cfg = self.cfg
        n, eps, hidden = x.shape[0], cfg.rms_norm_eps, (cfg.hidden_size,)
        window = self.layer_window(i)
        h = F.rms_norm(x, hidden, layer.attn_norm, eps)
        q, kv = self.project_qkv(layer, h, ropes[window])
        write_kv(cache, batch, kv)
        a = attend(q, kv, cache, batch, self.scale, window)
        a = self.linear(a.view(n, -1), layer.o)
        x = x + F.rms_norm(a, hidden, layer.post_attn_norm, eps)
        h = F.rms_norm(x, hidden, layer.mlp_norm, eps)
        g, u = self.linear(h, layer.gate_up).chunk(2, dim=-1)
        m = self.linear(F.gelu(g, approximate="tanh") * u, layer.down)
        return x + F.rms_norm(m, hidden, layer.post_mlp_norm, eps)

    def project_qkv(
        self, layer: Gemma3Layer, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        n, d, nq = h.shape[0], cfg.head_dim, cfg.num_heads * cfg.head_dim
        eps = cfg.rms_norm_eps
        qkv = self.linear(h, layer.qkv)
        q = F.rms_norm(qkv[:, :nq].view(n, -1, d), (d,), layer.q_norm, eps)
        q = apply_rope(q, *rope)
        kv = qkv[:, nq:].view(n, 2, cfg.num_kv_heads, d)
        kv[:, 0] = apply_rope(F.rms_norm(kv[:, 0], (d,), layer.k_norm, eps), *rope)
        return q, kv

    # -- weights --------------------------------------------------------------------------
    def load_layer(self, layer: Gemma3Layer, w: dict[str, torch.Tensor]) -> None:
        super().load_layer(
            layer, {**w, "post_attention_layernorm.weight": w["pre_feedforward_layernorm.weight"]}
        )
        layer.post_attn_norm.copy_(self._norm_in(w["post_attention_layernorm.weight"]))
        layer.post_mlp_norm.copy_(self._norm_in(w["post_feedforward_layernorm.weight"]))
        layer.q_norm.copy_(self._norm_in(w["self_attn.q_norm.weight"]))
        layer.k_norm.copy_(self._norm_in(w["self_attn.k_norm.weight"]))

    def layer_hf(self, layer: Gemma3Layer) -> dict[str, torch.Tensor]:
        sd = super().layer_hf(layer)
        sd["pre_feedforward_layernorm.weight"] = sd.pop("post_attention_layernorm.weight")
        sd["post_attention_layernorm.weight"] = self._norm_out(layer.post_attn_norm)
        sd["post_feedforward_layernorm.weight"] = self._norm_out(layer.post_mlp_norm)
        sd["self_attn.q_norm.weight"] = self._norm_out(layer.q_norm)
        sd["self_attn.k_norm.weight"] = self._norm_out(layer.k_norm)
        return sd

    def _norm_in(self, w: torch.Tensor) -> torch.Tensor:
        return w.float().add(1.0).to(w.dtype)

    def _norm_out(self, w: torch.Tensor) -> torch.Tensor:
        return w.float().sub(1.0).to(w.dtype)
