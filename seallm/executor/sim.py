"""The simulator's executor: iteration times from the cost model, no computation.

It knows each request's true output length (from the workload), so it decides when a
request ends, as a live executor does on EOS. A batch of several models' requests is a round
(`scheduling/rounds.py`), priced by the co-location physics (`colocation.py`).
"""

from __future__ import annotations

import math

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
        decode, left = _decode_shapes(batch.decode)
        if self.rounds is not None and (
            any(s != service for s in decode) or any(r.service != service for r in batch.prefill)
        ):
            return self._round(batch, now, self.rounds, decode, left)
        cost = self.costs[service]
        n, ctx = len(batch.decode), sum(c for _, c in decode.values())
        if batch.prefill or batch.max_iters <= 1:
            lens = [r.context_tokens for r in batch.prefill]
            t = cost.iteration_time(sum(lens), float(sum(x * x for x in lens)), n, ctx)
            done = [r for r in batch.requests if r.generated + 1 >= r.output_tokens]
            return StepOutcome(1, t + batch.extra_time, done)
        k = min(batch.max_iters, left)
        return _fused(batch, now, cost.decode_times(n, ctx, k))

    def _round(
        self,
        batch: Batch,
        now: float,
        pricer: RoundPricer,
        decode: dict[str, list[int]],
        left: int | float,
    ) -> StepOutcome:
        if batch.prefill or batch.max_iters <= 1:
            prefill: dict[str, list[int]] = {}
            for r in batch.prefill:
                prefill.setdefault(r.service, []).append(r.context_tokens)
            jobs = [
                pricer.job(s, prefill.get(s, []), *decode.get(s, (0, 0)))
                for s in {**prefill, **decode}
            ]
            done = [r for r in batch.requests if r.generated + 1 >= r.output_tokens]
            return StepOutcome(1, pricer.time(jobs) + batch.extra_time, done)
        k = min(batch.max_iters, left)
        shapes = [(s, n, ctx) for s, (n, ctx) in decode.items()]
        return _fused(batch, now, pricer.decode_times(shapes, k))


def _decode_shapes(decode: list[Request]) -> tuple[dict[str, list[int]], int | float]:
    """Per service of the decoding requests, in order of first appearance: [requests,
    context sum]; and the fewest tokens a request has left to generate (inf for none). One
    pass, as every request of every step goes through it."""
    shapes: dict[str, list[int]] = {}
    left: int | float = math.inf
    for r in decode:
        ctx = r.prompt_tokens + r.generated
        shape = shapes.get(r.service)
        if shape is None:
            shapes[r.service] = [1, ctx]
        else:
            shape[0] += 1
            shape[1] += ctx
        if r.output_tokens - r.generated < left:
            left = r.output_tokens - r.generated
    return shapes, left


def _fused(batch: Batch, now: float, times: np.ndarray) -> StepOutcome:
    """Up to len(times) decode iterations: stop after the first that ends at or past
    stop_at."""
    cum = np.cumsum(times)
    first_past = int(np.searchsorted(cum, batch.stop_at - now - batch.extra_time, "left"))
    k = min(len(times), first_past + 1)
    done = [r for r in batch.decode if r.generated + k >= r.output_tokens]
    return StepOutcome(k, float(cum[k - 1]) + batch.extra_time, done)
