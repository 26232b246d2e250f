"""Our Llama forward pass (SmolLM2 and other Llama-architecture models) over the paged pool.

Weights are Hugging Face's, fused at load time: q, k and v projections into one matrix (its
output puts K and V of a token side by side, the pool's row layout) and gate and up into one.
`forward` takes a step's sequences flattened into one token dimension, so every linear layer
runs once per step whatever the mix of prefill and decode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seallm.models.attention import (
    AttentionBatch,
    LayerKV,
    PagedKV,
    SeqSlice,
    apply_rope,
    attend,
    clear_new_pages,
    rope_inv_freq,
    rope_tables,
    write_kv,
)


@dataclass(frozen=True)
class DecoderConfig:
    """What our forward passes read of a Hugging Face config."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position: int
    tie_word_embeddings: bool = True

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> DecoderConfig:
        rope = cfg.get("rope_parameters") or {}
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        if rope.get("rope_type", "default") != "default":
            raise ValueError(f"rope_type {rope['rope_type']!r} is not supported")
        scaling = cfg.get("rope_scaling") or {}
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind != "default":
            # YaRN (Qwen2.5's 128k recipe), llama3 (Llama 3.1) and linear scaling change the
            # rotation of every position; ignoring them would silently give other logits.
            raise ValueError(
                f"rope_scaling {kind!r} is not supported: serve the native context "
                "(remove rope_scaling from config.json)"
            )
        return cls(
            model_type=cfg["model_type"],
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=cfg["num_attention_heads"],
            num_kv_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"],
            rms_norm_eps=cfg["rms_norm_eps"],
            rope_theta=float(theta),
            max_position=cfg.get("max_position_embeddings", 4096),
            tie_word_embeddings=cfg.get("tie_word_embeddings", True),
        )


def llama_config(cfg: dict[str, Any]) -> DecoderConfig:
    """A Llama config.json, refusing the biases this layout does not load."""
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ValueError(f"{key} is not supported for llama")
    return DecoderConfig.from_hf(cfg)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.qkv = nn.Parameter(torch.empty((cfg.num_heads + 2 * cfg.num_kv_heads) * d, h))
        self.o = nn.Parameter(torch.empty(h, cfg.num_heads * d))
        self.gate_up = nn.Parameter(torch.empty(2 * cfg.intermediate_size, h))
        self.down = nn.Parameter(torch.empty(h, cfg.intermediate_size))
        self.attn_norm = nn.Parameter(torch.empty(h))
        self.mlp_norm = nn.Parameter(torch.empty(h))
        # Llama has no attention biases; families that do (Qwen2) set these to Parameters.
        self.register_parameter("qkv_bias", None)
        self.register_parameter("o_bias", None)


class LlamaModel(nn.Module):
    """Llama: pre-norm RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP."""

    layer_cls = DecoderLayer

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Parameter(torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.layers = nn.ModuleList(self.layer_cls(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.Parameter(torch.empty(cfg.hidden_size))
        if not cfg.tie_word_embeddings:
            self.lm_head = nn.Parameter(torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.register_buffer("inv_freq", rope_inv_freq(cfg.head_dim, cfg.rope_theta, None), False)
        self._packed: dict[int, torch.Tensor] = {}
        self._pack_key: tuple = ()

    # -- geometry the executor needs ------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.cfg.num_kv_heads

    @property
    def windows(self) -> tuple[int | None, ...]:
        """Attention windows the layers use (None = global)."""
        return (None,)

    def layer_window(self, i: int) -> int | None:
        return None

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.cfg.head_dim)

    @property
    def head_weight(self) -> torch.Tensor:
        return self.embed if self.cfg.tie_word_embeddings else self.lm_head

    # -- linear layers --------------------------------------------------------------------
    def linear(
        self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
    ) -> torch.Tensor:
        packed = self._packed.get(id(w))
        if packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
        return F.linear(x, w, b)

    def _pack(self) -> None:
        """On CPU, keep oneDNN-packed copies of the linear weights: its AVX-512 GEMMs run
        1.5-2.5x faster than the default BLAS on the machines measured (docs/results.md),
        at batch 1 as at batch 32. Packs are rebuilt whenever a weight changed."""
        weights = [self.head_weight] + [
            w for layer in self.layers for w in (layer.qkv, layer.o, layer.gate_up, layer.down)
        ]
        key = tuple((w.data_ptr(), w._version) for w in weights)
        if key == self._pack_key:
            return
        self._packed, self._pack_key = {}, key
        if not _can_pack(self.embed):
            return
        for w in weights:
            self._packed[id(w)] = torch.ops.mkldnn._reorder_linear_weight(w.detach(), 32)

    # -- forward --------------------------------------------------------------------------
    @torch.inference_mode()
    def forward(
        self,
        tokens: torch.Tensor,
        seqs: Sequence[SeqSlice],
        kv: PagedKV,
        all_logits: bool = False,
    ) -> torch.Tensor:
        """Logits of each sequence's last token [seqs, vocab] (or of every token).

        `tokens` [total new tokens] are the sequences' new tokens back to back."""
        self._pack()
        batch = AttentionBatch(seqs, kv.tokens_per_page, tokens.device, self.windows)
        clear_new_pages(kv, batch)
        x = self.embed_tokens(tokens)
        ropes = self.rope(batch.positions, x.dtype)
        for i, layer in enumerate(self.layers):
            x = self.layer_forward(i, layer, x, batch, kv.layer(i), ropes)
        if not all_logits:
            x = x[batch.last_rows]
        x = self.final_norm(x)
        return self.linear(x, self.head_weight)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.embedding(tokens, self.embed)

    def final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.norm, self.cfg.rms_norm_eps)

    def rope(self, positions: torch.Tensor, dtype: torch.dtype) -> dict[Any, tuple]:
        return {None: rope_tables(positions, self.inv_freq, dtype)}

    def layer_forward(
        self,
        i: int,
        layer: DecoderLayer,
        x: torch.Tensor,
        batch: AttentionBatch,
        cache: LayerKV,
        ropes: dict[Any, tuple],
    ) -> torch.Tensor:
        cfg = self.cfg
        n, eps, hidden = x.shape[0], cfg.rms_norm_eps, (cfg.hidden_size,)
        h = F.rms_norm(x, hidden, layer.attn_norm, eps)
        q, kv = self.project_qkv(layer, h, ropes[None])
        write_kv(cache, batch, kv)
        a = attend(q, kv, cache, batch, self.scale, self.layer_window(i))
        x = x + self.linear(a.view(n, -1), layer.o, layer.o_bias)
        h = F.rms_norm(x, hidden, layer.mlp_norm, eps)
        g, u = self.linear(h, layer.gate_up).chunk(2, dim=-1)
        return x + self.linear(F.silu(g) * u, layer.down)

    def project_qkv(
        self, layer: DecoderLayer, h: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q [tokens, heads, dim] and the new tokens' K/V [tokens, 2, kv_heads, dim]."""
        cfg = self.cfg
        n, d, hq, hk = h.shape[0], cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        qkv = self.linear(h, layer.qkv, layer.qkv_bias)
        # Rotate q and k in one go; K goes back beside V, the pool's row layout.
        qk = apply_rope(qkv[:, : (hq + hk) * d].view(n, hq + hk, d), *rope)
        kv = qkv[:, hq * d :].view(n, 2, hk, d)
        kv[:, 0] = qk[:, hq:]
        return qk[:, :hq], kv

    # -- weights --------------------------------------------------------------------------
    def load_hf(self, sd: dict[str, torch.Tensor]) -> None:
        """Take a Hugging Face state dict (names `model.layers.N....`)."""
        with torch.no_grad():
            embed = sd["model.embed_tokens.weight"]
            if embed.dtype == self.embed.dtype and embed.device == self.embed.device:
                self.embed.data = embed  # the largest tensor: adopt it rather than copy
            else:
                self.embed.copy_(embed)
            self.norm.copy_(self._norm_in(sd["model.norm.weight"]))
            if not self.cfg.tie_word_embeddings:
                self.lm_head.copy_(sd["lm_head.weight"])
            for i, layer in enumerate(self.layers):
                self.load_layer(layer, {k: v for k, v in _layer_items(sd, i)})

    def load_layer(self, layer: DecoderLayer, w: dict[str, torch.Tensor]) -> None:
        a, m = "self_attn.", "mlp."
        layer.qkv.copy_(
            torch.cat([w[a + "q_proj.weight"], w[a + "k_proj.weight"], w[a + "v_proj.weight"]])
        )
        layer.o.copy_(w[a + "o_proj.weight"])
        layer.gate_up.copy_(torch.cat([w[m + "gate_proj.weight"], w[m + "up_proj.weight"]]))
        layer.down.copy_(w[m + "down_proj.weight"])
        layer.attn_norm.copy_(self._norm_in(w["input_layernorm.weight"]))
        layer.mlp_norm.copy_(self._norm_in(w["post_attention_layernorm.weight"]))

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The inverse of `load_hf` (for reference implementations and saving)."""
        sd = {
            "model.embed_tokens.weight": self.embed,
            "model.norm.weight": self._norm_out(self.norm),
        }
        if not self.cfg.tie_word_embeddings:
            sd["lm_head.weight"] = self.lm_head
        for i, layer in enumerate(self.layers):
            for k, v in self.layer_hf(layer).items():
                sd[f"model.layers.{i}.{k}"] = v
        return {k: v.detach().clone() for k, v in sd.items()}

    def layer_hf(self, layer: DecoderLayer) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        nq, nk = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        q, k, v = layer.qkv.split([nq, nk, nk])
        g, u = layer.gate_up.chunk(2)
        return {
            "self_attn.q_proj.weight": q,
            "self_attn.k_proj.weight": k,
            "self_attn.v_proj.weight": v,
            "self_attn.o_proj.weight": layer.o,
            "mlp.gate_proj.weight": g,
            "mlp.up_proj.weight": u,
            "mlp.down_proj.weight": layer.down,
            "input_layernorm.weight": self._norm_out(layer.attn_norm),
            "post_attention_layernorm.weight": self._norm_out(layer.mlp_norm),
        }

    # Gemma stores RMSNorm weights as (w - 1); Llama as w.
    def _norm_in(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def _norm_out(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def init_random(self, seed: int) -> None:
        """Random weights of a sensible scale (tiny test models; timing-only full-size ones).
        Drawn on each weight's own device: a 7B model's draws take minutes on a CPU."""
        gens: dict[torch.device, torch.Generator] = {}
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.device not in gens:
                    gens[p.device] = torch.Generator(p.device).manual_seed(seed)
                g = gens[p.device]
                draw = torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype)
                if p.dim() == 1:
                    p.copy_(1.0 + 0.1 * draw)
                else:
                    std = 0.5 if "embed" in name else 1.0 / math.sqrt(p.shape[1])
                    p.copy_(std * draw)


def _can_pack(w: torch.Tensor) -> bool:
    if w.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    if w.dtype == torch.bfloat16:
        return torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return w.dtype == torch.float32


def _layer_items(sd: dict[str, torch.Tensor], i: int):
    prefix = f"model.layers.{i}."
    for k, v in sd.items():
        if k.startswith(prefix):
            yield k[len(prefix) :], v
