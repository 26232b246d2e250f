"""Spatial sharing of one group by concurrent jobs (the `muxserve` baseline's executor).

MuxServe (Duan et al., ICML'24, §3.1 and §4) runs the prefill and the decode jobs of the
co-located LLMs as separate processes under NVIDIA MPS, so a compute-bound prefill of one LLM
runs while memory-bound decode iterations of others (or of the same LLM) go on. The simulator
models this as concurrent execution with a split of compute:

- Every job has, from the roofline cost model, its alone time W, its compute demand C (the
  seconds its kernels' FLOPs take at the group's full compute) and its memory demand M (the
  seconds its bytes take at full bandwidth); W also holds what uses neither (launches, CPU
  overhead per step), which concurrent processes overlap. C <= W and M <= W.
- Jobs that run together share the group: each gets the share C_j / T of the compute and
  M_j / T of the bandwidth, so under its share each finishes within T, the smallest time
  for which the shares fit: T = max(max_j W_j, sum_j C_j, sum_j M_j). T is never below any
  job alone and never above running them one after another (sum_j W_j), and it is below
  that when the jobs use different resources (a prefill's compute, a decode's bandwidth).
- A step is one prefill batch (one LLM; ADBS runs one prefill at a time per group) and one
  decode *round* after another, a round being one iteration of every decoding LLM at once
  (their processes run concurrently). With a prefill, decode rounds go on while it runs:
  as many as fit within the prefill's own time (at least one), and the step takes T of the
  prefill and those rounds together. Without a prefill, rounds repeat (fused) like the serial
  engine's decode iterations, and a run of rounds equals those rounds one by one.

The compute and memory demands come from the same `ModelCost` built on copies of the device
with unlimited bandwidth or unlimited compute (`ResourceCost`), so the split uses exactly the
kernels, shapes and calibration that the serial engines are costed with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from seallm.costmodel import CostModel, ModelCost
from seallm.executor.base import Batch, StepOutcome
from seallm.request import Request
from seallm.specs import ModelSpec

UNLIMITED = 1e9  # factor that makes a device resource free (its roofline term vanishes)


@dataclass(frozen=True)
class Demand:
    """Alone time, compute demand and memory demand of a job (floats or per-iteration arrays)."""

    time: np.ndarray | float
    compute: np.ndarray | float
    memory: np.ndarray | float


class ResourceCost:
    """One model on one group, costed alone and split into compute and memory demands."""

    def __init__(self, cost: CostModel, model: ModelSpec, tp: int) -> None:
        dev, cal = cost.device, cost.calibration
        free_mem = dataclasses.replace(dev, memory_bandwidth=dev.memory_bandwidth * UNLIMITED)
        free_flops = dataclasses.replace(dev, peak_flops=dev.peak_flops * UNLIMITED)
        free_both = dataclasses.replace(free_mem, peak_flops=dev.peak_flops * UNLIMITED)
        self.alone: ModelCost = cost.for_model(model, tp)
        self._compute_only = ModelCost(model, free_mem, cal, tp)  # overhead + compute
        self._memory_only = ModelCost(model, free_flops, cal, tp)  # overhead + memory
        self._overhead = ModelCost(model, free_both, cal, tp)

    def prefill(self, lens: list[int]) -> Demand:
        args = (sum(lens), float(sum(x * x for x in lens)), 0, 0)
        base = self._overhead.iteration_time(*args)
        return Demand(
            self.alone.iteration_time(*args),
            self._compute_only.iteration_time(*args) - base,
            self._memory_only.iteration_time(*args) - base,
        )

    def decode(self, n: int, ctx_sum: int, k: int) -> Demand:
        """k consecutive decode iterations of n requests (context sum ctx_sum at the first)."""
        base = self._overhead.decode_times(n, ctx_sum, k)
        return Demand(
            self.alone.decode_times(n, ctx_sum, k),
            self._compute_only.decode_times(n, ctx_sum, k) - base,
            self._memory_only.decode_times(n, ctx_sum, k) - base,
        )

    def decode_at(self, n: int, ctx_sum: int) -> Demand:
        """One decode iteration (floats)."""
        d = self.decode(n, ctx_sum, 1)
        return Demand(float(d.time[0]), float(d.compute[0]), float(d.memory[0]))


def concurrent_time(jobs: list[Demand]) -> float:
    """Time for jobs that start together and share the group (see the module docstring)."""
    if not jobs:
        return 0.0
    return max(
        max(float(j.time) for j in jobs),
        sum(float(j.compute) for j in jobs),
        sum(float(j.memory) for j in jobs),
    )


class SpatialExecutor:
    """Runs a step of one prefill batch and concurrent decode rounds of several models."""

    def __init__(self, costs: dict[str, ResourceCost]) -> None:
        self.costs = costs

    def rounds(self, decode: list[Request], k: int) -> Demand:
        """Per-round time, compute and memory of k decode rounds (arrays of length k)."""
        by_service: dict[str, list[Request]] = {}
        for r in decode:
            by_service.setdefault(r.service, []).append(r)
        parts = [
            self.costs[s].decode(len(rs), sum(r.context_tokens for r in rs), k)
            for s, rs in by_service.items()
        ]
        compute = np.sum([p.compute for p in parts], axis=0)
        memory = np.sum([p.memory for p in parts], axis=0)
        alone = np.max([p.time for p in parts], axis=0)
        return Demand(np.maximum(alone, np.maximum(compute, memory)), compute, memory)

    def execute(self, batch: Batch, now: float) -> StepOutcome:
        decode = batch.decode
        limit = batch.max_iters
        if decode:  # a step ends at the first decode finish, as the serial engine's
            limit = min(limit, min(r.output_tokens - r.generated for r in decode))
        if batch.prefill:
            pre = self.costs[batch.prefill[0].service].prefill(
                [r.context_tokens for r in batch.prefill]
            )
            k, t = 1, float(pre.time)
            if decode:
                rd = self.rounds(decode, max(1, limit))
                cum = np.cumsum(rd.time)
                # As many rounds as fit within the prefill's own time, at least one.
                k = max(1, min(limit, int(np.searchsorted(cum, pre.time, "right"))))
                t = concurrent_time(
                    [
                        pre,
                        Demand(
                            float(cum[k - 1]),
                            float(rd.compute[:k].sum()),
                            float(rd.memory[:k].sum()),
                        ),
                    ]
                )
            done = [r for r in batch.prefill if r.generated + 1 >= r.output_tokens]
            done += [r for r in decode if r.generated + k >= r.output_tokens]
            return StepOutcome(k, t + batch.extra_time, done)
        rd = self.rounds(decode, max(1, limit))
        cum = np.cumsum(rd.time)
        # Stop after the first round that ends at or past stop_at (as SimExecutor does).
        first_past = int(np.searchsorted(cum, batch.stop_at - now - batch.extra_time, "left"))
        k = max(1, min(limit, first_past + 1))
        done = [r for r in decode if r.generated + k >= r.output_tokens]
        return StepOutcome(k, float(cum[k - 1]) + batch.extra_time, done)
