"""Our Mistral forward pass: Llama's layout with sliding-window attention on every layer.

Mistral-7B v0.1 slides a 4096-token window; v0.2 and v0.3 set `sliding_window` to null
(global attention). The window is applied by what attention gathers and masks; every token
stays in the page table. This file also holds what Mistral's descendants (Qwen2, Qwen3)
share: a window per layer, and reading a config.json of either the current transformers
format (`rope_parameters`) or the older one (`rope_theta`, `rope_scaling`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from seallm.models.llama import DecoderConfig, LlamaModel


def decoder_fields(cfg: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """DecoderConfig's fields of a Hugging Face config, `defaults` filling the keys it lacks
    (each family's own transformers defaults: Llama's parser assumes tied embeddings and a
    4k context, which Mistral and Qwen do not)."""
    cfg = {**defaults, **cfg}
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {cfg['hidden_act']!r} is not supported (only silu)")
    base = DecoderConfig.from_hf(cfg)
    return {f: getattr(base, f) for f in DecoderConfig.__dataclass_fields__}


@dataclass(frozen=True)
class MistralConfig(DecoderConfig):
    # The attention window of each layer (None = global); one entry per layer.
    layer_windows: tuple[int | None, ...] = ()

    DEFAULTS: ClassVar[dict[str, Any]] = {
        "tie_word_embeddings": False,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
    }

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> MistralConfig:
        fields = decoder_fields(cfg, cls.DEFAULTS)
        # transformers' default when the key is absent is 4096; null means global.
        window = cfg.get("sliding_window", 4096)
        return cls(**fields, layer_windows=(window,) * fields["num_layers"])


class WindowedModel(LlamaModel):
    """A Llama whose layers may each attend within a sliding window (cfg.layer_windows)."""

    cfg: MistralConfig

    @property
    def windows(self) -> tuple[int | None, ...]:
        return tuple(dict.fromkeys(self.cfg.layer_windows)) or (None,)

    def layer_window(self, i: int) -> int | None:
        return self.cfg.layer_windows[i]


class MistralModel(WindowedModel):
    """Mistral: Llama's weights and layers; only the windows differ."""
