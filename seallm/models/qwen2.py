"""Our Qwen2 / Qwen2.5 forward pass: Mistral's layout with biases on the q, k and v
projections (none on o_proj).

Sliding windows follow transformers: only with `use_sliding_window`, then on the layers that
`layer_types` marks (by default those from `max_window_layers` on). Every released Qwen2.5
checkpoint has `use_sliding_window: false`. Embeddings are tied in the small checkpoints
(0.5B to 3B) and untied in the larger ones; both load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from seallm.models.llama import DecoderConfig, DecoderLayer
from seallm.models.mistral import MistralConfig, WindowedModel, decoder_fields

LAYER_TYPES = ("full_attention", "sliding_attention")


def qwen_windows(cfg: dict[str, Any], num_layers: int) -> tuple[int | None, ...]:
    """Each layer's window, as transformers' Qwen2Config / Qwen3Config derive them."""
    window = cfg.get("sliding_window", 4096) if cfg.get("use_sliding_window") else None
    first = cfg.get("max_window_layers", 28)
    types = cfg.get("layer_types") or [
        "sliding_attention" if window is not None and i >= first else "full_attention"
        for i in range(num_layers)
    ]
    if len(types) != num_layers or not set(types) <= set(LAYER_TYPES):
        raise ValueError(f"layer_types {types!r}: expected {num_layers} of {LAYER_TYPES}")
    return tuple(window if t == "sliding_attention" else None for t in types)


@dataclass(frozen=True)
class Qwen2Config(MistralConfig):
    qkv_bias: bool = True
    o_bias: bool = False

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "tie_word_embeddings": False,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
    }

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> Qwen2Config:
        fields = decoder_fields(cfg, cls.DEFAULTS)
        windows = qwen_windows(cfg, fields["num_layers"])
        return cls(**fields, layer_windows=windows, **cls.biases(cfg))

    @classmethod
    def biases(cls, cfg: dict[str, Any]) -> dict[str, bool]:
        return {"qkv_bias": True, "o_bias": False}


class Qwen2Layer(DecoderLayer):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__(cfg)
        assert isinstance(cfg, Qwen2Config)
        if cfg.qkv_bias:
            self.qkv_bias = nn.Parameter(torch.empty(self.qkv.shape[0]))
        if cfg.o_bias:
            self.o_bias = nn.Parameter(torch.empty(cfg.hidden_size))


class Qwen2Model(WindowedModel):
    """Qwen2: the biases are added by LlamaModel's projections (`qkv_bias`, `o_bias`)."""

    layer_cls = Qwen2Layer
    cfg: Qwen2Config

    def load_layer(self, layer: DecoderLayer, w: dict[str, torch.Tensor]) -> None:
        super().load_layer(layer, w)
        a = "self_attn."
        if layer.qkv_bias is not None:
            layer.qkv_bias.copy_(
                torch.cat([w[a + "q_proj.bias"], w[a + "k_proj.bias"], w[a + "v_proj.bias"]])
            )
        if layer.o_bias is not None:
            layer.o_bias.copy_(w[a + "o_proj.bias"])

    def layer_hf(self, layer: DecoderLayer) -> dict[str, torch.Tensor]:
        sd = super().layer_hf(layer)
        if layer.qkv_bias is not None:
            cfg = self.cfg
            nq, nk = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
            for name, b in zip("qkv", layer.qkv_bias.split([nq, nk, nk]), strict=True):
                sd[f"self_attn.{name}_proj.bias"] = b
        if layer.o_bias is not None:
            sd["self_attn.o_proj.bias"] = layer.o_bias
        return sd
