"""The simulator's executor: iteration times from the cost model, no computation.

It knows each request's true output length (from the workload), so it decides when a
request ends, as a live executor does on EOS.
"""

from __future__ import annotations

import numpy as np

from seallm.costmodel import ModelCost
from seallm.executor.base import Batch, StepOutcome


class SimExecutor:
    def __init__(self, costs: dict[str, ModelCost]) -> None:
        self.costs = costs

    def execute(self, batch: Batch, now: float) -> StepOutcome:
        cost = self.costs[batch.service]
        decode = batch.decode
        n = len(decode)
        ctx = sum(r.context_tokens for r in decode)
        if batch.prefill or batch.max_iters <= 1:
            lens = [r.context_tokens for r in batch.prefill]
            t = cost.iteration_time(sum(lens), float(sum(x * x for x in lens)), n, ctx)
            done = [r for r in batch.requests if r.generated + 1 >= r.output_tokens]
            return StepOutcome(1, t + batch.extra_time, done)
        left = min(r.output_tokens - r.generated for r in decode)
        k = min(batch.max_iters, left)
        cum = np.cumsum(cost.decode_times(n, ctx, k))
        # Stop after the first iteration that ends at or past stop_at.
        first_past = int(np.searchsorted(cum, batch.stop_at - now - batch.extra_time, "left"))
        k = min(k, first_past + 1)
        done = [r for r in decode if r.generated + k >= r.output_tokens]
        return StepOutcome(k, float(cum[k - 1]) + batch.extra_time, done)
