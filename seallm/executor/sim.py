"""The simulator's executor: iteration times from the cost model, no computation.

It knows each request's true output length (from the workload), so it decides when a
request ends, as a live executor does on EOS. A batch of several models' requests is a round
(`scheduling/rounds.py`), priced by the co-location physics (`colocation.py`).
"""

from __future__ import annotations

import numpy as np

from seallm.colocation import RoundPricer
from seallm.costmodel import ModelCost
from seallm.executor.base import Batch, StepOutcome
from seallm.request import Request


class SimExecutor:
    def __init__(self, costs: dict[str, ModelCost], rounds: RoundPricer | None = None) -> None:
        self.costs = costs
        self.rounds = rounds

    def execute(self, batch: Batch, now: float) -> StepOutcome:
        service = batch.service
        if self.rounds is not None and any(r.service != service for r in batch.requests):
            return self._round(batch, now, self.rounds)
        cost = self.costs[service]
        decode = batch.decode
        n = len(decode)
        ctx = sum(r.context_tokens for r in decode)
        if batch.prefill or batch.max_iters <= 1:
            lens = [r.context_tokens for r in batch.prefill]
            t = cost.iteration_time(sum(lens), float(sum(x * x for x in lens)), n, ctx)
            done = [r for r in batch.requests if r.generated + 1 >= r.output_tokens]
            return StepOutcome(1, t + batch.extra_time, done)
        k = min(batch.max_iters, min(r.output_tokens - r.generated for r in decode))
        return _fused(batch, now, cost.decode_times(n, ctx, k))

    def _round(self, batch: Batch, now: float, pricer: RoundPricer) -> StepOutcome:
        prefill: dict[str, list[int]] = {}
        decode: dict[str, list[Request]] = {}
        for r in batch.prefill:
            prefill.setdefault(r.service, []).append(r.context_tokens)
        for r in batch.decode:
            decode.setdefault(r.service, []).append(r)
        if batch.prefill or batch.max_iters <= 1:
            jobs = [
                pricer.job(
                    s,
                    prefill.get(s, []),
                    len(decode.get(s, ())),
                    sum(r.context_tokens for r in decode.get(s, ())),
                )
                for s in {**prefill, **decode}
            ]
            done = [r for r in batch.requests if r.generated + 1 >= r.output_tokens]
            return StepOutcome(1, pricer.time(jobs) + batch.extra_time, done)
        k = min(batch.max_iters, min(r.output_tokens - r.generated for r in batch.decode))
        shapes = [(s, len(rs), sum(r.context_tokens for r in rs)) for s, rs in decode.items()]
        return _fused(batch, now, pricer.decode_times(shapes, k))


def _fused(batch: Batch, now: float, times: np.ndarray) -> StepOutcome:
    """Up to len(times) decode iterations: stop after the first that ends at or past
    stop_at."""
    cum = np.cumsum(times)
    first_past = int(np.searchsorted(cum, batch.stop_at - now - batch.extra_time, "left"))
    k = min(len(times), first_past + 1)
    done = [r for r in batch.decode if r.generated + k >= r.output_tokens]
    return StepOutcome(k, float(cum[k - 1]) + batch.extra_time, done)
