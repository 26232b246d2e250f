"""Sampling: what a request asks for (SamplingParams), its live state (Generation), and the
token choice itself (greedy, temperature, top-k, top-p, per-request seed).

Each sampled request draws from its own `torch.Generator`, so a seeded request produces the
same tokens whatever it is batched with. Detokenization is incremental (only the last few
tokens are decoded at each step) so that a long output costs O(1) per token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

# Tokens decoded again at each step: enough to resolve a multi-byte character split over
# several tokens and the tokenizer's leading-space handling.
_DETOKENIZE_CONTEXT = 5


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0  # 0 => greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 => off
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first field out of range."""
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer or None, got {self.seed!r}")
        for s in self.stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop must hold non-empty strings, got {s!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


@dataclass
class Generation:
    """Live state of one request, attached as Request.generation."""

    prompt_ids: list[int]
    params: SamplingParams
    output_ids: list[int] = field(default_factory=list)
    text: str = ""  # detokenized output so far, stop strings removed
    finish_reason: str | None = None  # "stop" (EOS or stop string) or "length"
    # Incremental detokenization: output_ids[_prefix:_read] decode to the text already emitted.
    _prefix: int = field(default=0, init=False, repr=False)
    _read: int = field(default=0, init=False, repr=False)
    _generator: torch.Generator | None = field(default=None, init=False, repr=False)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def stable_text(self) -> str:
        """The part of `text` no stop string can still take back (what a stream may send)."""
        if self.finished or not self.params.stop:
            return self.text
        hold = max(len(s) for s in self.params.stop) - 1
        return self.text[: max(0, len(self.text) - hold)]

    def generator(self, device: torch.device) -> torch.Generator | None:
        """This request's random stream (None for an unseeded request: the global one)."""
        if self.params.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.params.seed)
        return self._generator

    def append(
        self, token: int, tokenizer: Any, eos_token_ids: Sequence[int], max_context: int
    ) -> None:
        """Add a sampled token, extend the text, and decide whether the request is done."""
        self.output_ids.append(token)
        if token in eos_token_ids and not self.params.ignore_eos:
            self.finish_reason = "stop"
            return
        self._extend_text(tokenizer)
        if self._cut_at_stop():
            self.finish_reason = "stop"
        elif len(self.output_ids) >= min(
            self.params.max_tokens, max_context - len(self.prompt_ids)
        ):
            self.finish_reason = "length"

    def _extend_text(self, tokenizer: Any) -> None:
        ids = self.output_ids
        prefix = tokenizer.decode(ids[self._prefix : self._read], skip_special_tokens=True)
        full = tokenizer.decode(ids[self._prefix :], skip_special_tokens=True)
        # A trailing U+FFFD is a character whose bytes are not all generated yet: wait.
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.text += full[len(prefix) :]
            self._prefix = max(self._read - _DETOKENIZE_CONTEXT, 0)
            self._read = len(ids)

    def _cut_at_stop(self) -> bool:
        if not self.params.stop:
            return False
        # Only the tail can hold a stop string that was not there before this token.
        window = max(len(s) for s in self.params.stop) + 16
        start = max(0, len(self.text) - window)
        hits = [i for s in self.params.stop if (i := self.text.find(s, start)) >= 0]
        if not hits:
            return False
        self.text = self.text[: min(hits)]
        return True


def sample(logits: torch.Tensor, gens: Sequence[Generation]) -> list[int]:
    """One token per row of `logits` [batch, vocab], by each row's request parameters."""
    greedy = logits.argmax(dim=-1)
    out = greedy.tolist()
    for i, g in enumerate(gens):
        if not g.params.greedy:
            out[i] = _sample_row(logits[i], g.params, g.generator(logits.device))
    return out


def _sample_row(row: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    row = row.float() / p.temperature
    if p.top_k > 0 and p.top_k < row.numel():
        kth = torch.topk(row, p.top_k).values[-1]
        row = row.masked_fill(row < kth, -math.inf)
    probs = torch.softmax(row, dim=-1)
    if p.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(0) - sorted_probs >= p.top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=gen)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=gen))
