"""Paged attention over a group's unified KV pool, shared by every model family.

The pool is one byte tensor of `num_pages * page_bytes` (`kvcache.UnifiedKVCache`'s pages). A model
views it as [num_pages, layers, tokens_per_page, 2, kv_heads, head_dim] of its own dtype, with
pages `page_bytes` apart (the tail of a page past `tokens_per_page` tokens stays unused). K and
V of a token in a layer are adjacent, so writing a step's new tokens is one indexed copy per
layer, and one (page, layer) slab is contiguous, so a sequence's context is gathered as whole
slabs.

A step's sequences are flattened into one token dimension (linear layers run once over all of
them). Attention then runs per kind of sequence:
- fresh (nothing cached yet: a prefill): causal attention over its own new K/V, no gather;
- decode (one new token): all decode sequences at once, their contexts gathered into one
  padded batch with a key mask;
- cached (several new tokens after a cached prefix): its whole context gathered, masked.
A sliding-window layer attends to the last `window` positions only (q - k < window); for
decode it gathers just the pages that the window touches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


class KVPool:
    """The group's pages: one tensor, viewed per model."""

    def __init__(self, num_pages: int, page_bytes: int, device: str | torch.device) -> None:
        self.num_pages = num_pages
        self.page_bytes = page_bytes
        self.data = torch.zeros(num_pages * page_bytes, dtype=torch.uint8, device=device)

    def view(self, layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype) -> PagedKV:
        item = torch.empty((), dtype=dtype).element_size()
        per_token = 2 * layers * kv_heads * head_dim * item
        tokens = self.page_bytes // per_token
        if tokens < 1 or self.page_bytes % item:
            raise ValueError(
                f"page_bytes {self.page_bytes} holds no token ({per_token} bytes each)"
            )
        elems = self.page_bytes // item
        flat = self.data.view(dtype)
        row = 2 * kv_heads * head_dim
        cache = flat.as_strided(
            (self.num_pages, layers, tokens, 2, kv_heads, head_dim),
            (elems, tokens * row, row, kv_heads * head_dim, head_dim, 1),
        )
        return PagedKV(cache, tokens)


@dataclass
class LayerKV:
    """One layer of a model's view: [pages, tokens_per_page, 2, kv_heads, head_dim], and the
    same split into one view per page (built once: slicing a page out costs more than the
    copy it feeds)."""

    cache: torch.Tensor
    slabs: tuple[torch.Tensor, ...]


@dataclass
class PagedKV:
    """One model's view of the pool: [pages, layers, tokens_per_page, 2, kv_heads, head_dim]."""

    cache: torch.Tensor
    tokens_per_page: int
    _layers: list[LayerKV] = field(default_factory=list, repr=False)

    def layer(self, i: int) -> LayerKV:
        if not self._layers:
            self._layers = [
                LayerKV(self.cache[:, j], self.cache[:, j].unbind(0))
                for j in range(self.cache.shape[1])
            ]
        return self._layers[i]

    def pages(self, ids: Sequence[int]) -> torch.Tensor:
        """All layers of pages `ids` (a copy), for swapping out."""
        return self.cache[torch.as_tensor(ids, device=self.cache.device)]

    def put_pages(self, ids: Sequence[int], data: torch.Tensor) -> None:
        self.cache[torch.as_tensor(ids, device=self.cache.device)] = data.to(self.cache.device)


@dataclass(frozen=True)
class SeqSlice:
    """One sequence of a step: `num_new` tokens at positions start..start+num_new-1."""

    start: int
    num_new: int
    pages: Sequence[int]  # page table; covers start + num_new tokens


@dataclass
class _Gathered:
    """Page lists of several sequences padded to one length, with the mask of their keys."""

    pages: list[list[int]]  # per sequence, padded with its own first page
    mask: torch.Tensor  # [n, 1, q, pages * tokens_per_page] bool, True = attend


class AttentionBatch:
    """Index tensors of one step, built once and used by every layer."""

    def __init__(
        self,
        seqs: Sequence[SeqSlice],
        tokens_per_page: int,
        device: torch.device,
        windows: Sequence[int | None] = (None,),
    ) -> None:
        T = tokens_per_page
        self.tokens_per_page = T
        self.device = device
        pos: list[int] = []
        pages: list[int] = []
        offs: list[int] = []
        self.fresh: list[tuple[int, int]] = []  # (first row, tokens)
        self.cached: list[tuple[int, SeqSlice]] = []
        decode_rows: list[int] = []
        decode: list[SeqSlice] = []
        last: list[int] = []
        row = 0
        for s in seqs:
            if len(s.pages) * T < s.start + s.num_new:
                raise ValueError(
                    f"page table of {len(s.pages)} pages < {s.start + s.num_new} tokens"
                )
            p = range(s.start, s.start + s.num_new)
            pos.extend(p)
            pages.extend(s.pages[i // T] for i in p)
            offs.extend(i % T for i in p)
            if s.start == 0:
                self.fresh.append((row, s.num_new))
            elif s.num_new == 1:
                decode_rows.append(row)
                decode.append(s)
            else:
                self.cached.append((row, s))
            row += s.num_new
            last.append(row - 1)
        self.num_tokens = row
        self.positions = torch.tensor(pos, dtype=torch.long, device=device)
        self.write_pages = torch.tensor(pages, dtype=torch.long, device=device)
        self.write_offsets = torch.tensor(offs, dtype=torch.long, device=device)
        # Pages whose first token this step writes. Their other slots still hold bytes of a
        # previous owner, maybe of another model and dtype (NaN patterns), which attention
        # reads masked; but a masked NaN still poisons a softmax, so they are zeroed first
        # (`clear_new_pages`, all layers at once).
        starts = sorted({p for p, o in zip(pages, offs, strict=True) if o == 0})
        self.new_pages = torch.tensor(starts, dtype=torch.long, device=device) if starts else None
        self.last_rows = torch.tensor(last, dtype=torch.long, device=device)
        self.decode_rows: torch.Tensor | slice = _rows(decode_rows, device)
        self.decode = {w: self._gather_plan(decode, w) for w in windows} if decode else {}
        self.cached_plans = {
            w: [self._gather_plan([s], w) for _, s in self.cached] for w in windows
        }

    def _gather_plan(self, seqs: Sequence[SeqSlice], window: int | None) -> _Gathered:
        """Pages each sequence's new queries may see, and which of their slots they may."""
        T = self.tokens_per_page
        q = seqs[0].num_new
        firsts = [0 if window is None else max(0, s.start - window + 1) // T for s in seqs]
        counts = [-(-(s.start + s.num_new) // T) - f for s, f in zip(seqs, firsts, strict=True)]
        width = max(counts)
        lists = [
            list(s.pages[f : f + c]) + [s.pages[f]] * (width - c)
            for s, f, c in zip(seqs, firsts, counts, strict=True)
        ]
        first = torch.tensor(firsts, device=self.device)[:, None, None] * T
        key = first + torch.arange(width * T, device=self.device)[None, None, :]
        count = torch.tensor(counts, device=self.device)[:, None, None] * T
        query = torch.tensor([s.start for s in seqs], device=self.device)[:, None, None]
        query = query + torch.arange(q, device=self.device)[None, :, None]
        mask = (key <= query) & (key - first < count)
        if window is not None:
            mask &= query - key < window
        return _Gathered(lists, mask[:, None])


def _rows(rows: list[int], device: torch.device) -> torch.Tensor | slice:
    if rows and rows == list(range(rows[0], rows[0] + len(rows))):
        return slice(rows[0], rows[0] + len(rows))
    return torch.tensor(rows, dtype=torch.long, device=device)


def clear_new_pages(kv: PagedKV, batch: AttentionBatch) -> None:
    if batch.new_pages is not None:
        kv.cache.index_fill_(0, batch.new_pages, 0)


def write_kv(layer: LayerKV, batch: AttentionBatch, kv: torch.Tensor) -> None:
    """Store the step's new K/V [tokens, 2, kv_heads, head_dim] in their slots."""
    layer.cache[batch.write_pages, batch.write_offsets] = kv


def _gather(layer: LayerKV, lists: list[list[int]]) -> torch.Tensor:
    """[n, pages * T, 2, kv_heads, head_dim] from page lists of equal length."""
    # Stacking page views is several times faster on CPU than index_select on the strided
    # pool view (one memcpy per page slab instead of an element-wise index kernel).
    slabs = layer.slabs
    out = torch.stack([slabs[p] for pages in lists for p in pages])
    return out.view(len(lists), -1, *out.shape[2:])


def attend(
    q: torch.Tensor,
    kv: torch.Tensor,
    layer: LayerKV,
    batch: AttentionBatch,
    scale: float,
    window: int | None = None,
) -> torch.Tensor:
    """Attention of q [tokens, heads, head_dim] for the step; K/V of the new tokens are in
    `kv` [tokens, 2, kv_heads, head_dim] and already written to the pool."""
    if batch.decode and not batch.fresh and not batch.cached:  # the common decode step
        plan = batch.decode[window]
        return _sdpa(q[:, :, None], _gather(layer, plan.pages), plan.mask, scale)[:, :, 0]
    out = torch.empty_like(q)
    for r0, n in batch.fresh:
        qs = q[r0 : r0 + n].transpose(0, 1)[None]
        k = kv[r0 : r0 + n, 0].transpose(0, 1)[None]
        v = kv[r0 : r0 + n, 1].transpose(0, 1)[None]
        if window is not None and n > window:
            i = torch.arange(n, device=q.device)
            d = i[:, None] - i[None, :]
            mask = (d >= 0) & (d < window)
            o = F.scaled_dot_product_attention(
                qs, k, v, attn_mask=mask, scale=scale, enable_gqa=True
            )
        else:
            o = F.scaled_dot_product_attention(
                qs, k, v, is_causal=True, scale=scale, enable_gqa=True
            )
        out[r0 : r0 + n] = o[0].transpose(0, 1)
    for (r0, s), plan in zip(batch.cached, batch.cached_plans[window], strict=True):
        ctx = _gather(layer, plan.pages)
        qs = q[r0 : r0 + s.num_new].transpose(0, 1)[None]
        o = _sdpa(qs, ctx, plan.mask, scale)
        out[r0 : r0 + s.num_new] = o[0].transpose(0, 1)
    if batch.decode:
        plan = batch.decode[window]
        ctx = _gather(layer, plan.pages)
        qs = q[batch.decode_rows][:, :, None]  # [n, heads, 1, head_dim]
        out[batch.decode_rows] = _sdpa(qs, ctx, plan.mask, scale)[:, :, 0]
    return out


def _sdpa(q: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    k = ctx[:, :, 0].transpose(1, 2)
    v = ctx[:, :, 1].transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=True)


# -- position and normalization helpers ---------------------------------------------------


def rope_inv_freq(head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    return 1.0 / (
        theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim)
    )


def rope_tables(
    positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin [tokens, 1, 2, head_dim / 2] for the rotate-half convention (Llama,
    Gemma): out = x * cos + swap_halves(x) * (-sin, sin)."""
    freqs = positions[:, None].float() * inv_freq[None, :]
    cos, sin = freqs.cos(), freqs.sin()
    return (
        torch.stack((cos, cos), dim=1)[:, None].to(dtype),
        torch.stack((-sin, sin), dim=1)[:, None].to(dtype),
    )


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [tokens, heads, head_dim] -> a new tensor of the same shape."""
    n, h, d = x.shape
    halves = x.view(n, h, 2, d // 2)
    return torch.addcmul(halves * cos, halves.flip(2), sin).view(n, h, d)
