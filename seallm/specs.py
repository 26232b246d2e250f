"""Hardware and model specifications: what a model is and what a device can do.

These are plain frozen dataclasses; the built-in instances live in `catalog.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1024**3


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only transformer, enough to cost and size it."""

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    num_params: float
    dtype_bytes: int = 2
    gated_mlp: bool = True
    max_context: int = 4096

    @property
    def weight_bytes(self) -> float:
        return self.num_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of K and V for one token over all layers."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator (or one CPU socket standing in for it).

    Bandwidths are bytes/s in one direction; `host_bandwidth` is the device<->host link
    used for KV swaps and for loading weights from host memory.
    """

    name: str
    memory_bytes: float
    peak_flops: float
    memory_bandwidth: float
    intra_node_bandwidth: float
    inter_node_bandwidth: float
    host_bandwidth: float
    disk_bandwidth: float = 2e9
