"""What an executor runs (a Batch) and what it reports back (a StepOutcome)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from seallm.request import Request


@dataclass
class Batch:
    """One model's iteration. A decode-only batch may be run `max_iters` times in a row
    (fused); the executor stops early after the first iteration that ends at or past
    `stop_at`, or in which a request finishes."""

    service: str
    prefill: list[Request] = field(default_factory=list)
    decode: list[Request] = field(default_factory=list)
    max_iters: int = 1
    stop_at: float = math.inf
    extra_time: float = 0.0  # swap and preemption costs charged to this step

    @property
    def requests(self) -> list[Request]:
        return self.prefill + self.decode


@dataclass
class StepOutcome:
    iterations: int
    duration: float  # seconds, extra_time included
    finished: list[Request]  # requests that produced their last token in the last iteration


class Executor(Protocol):
    def execute(self, batch: Batch, now: float) -> StepOutcome: ...
