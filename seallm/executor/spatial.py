"""Spatial sharing of one group by concurrent jobs: the executors of the `muxserve` baseline
(`spatial`, faithful to MuxServe's code) and of its fluid upper bound (`spatial-ideal`).

MuxServe (Duan et al., ICML'24; github.com/hao-ai-lab/MuxServe) runs the prefill and the
decode jobs of the co-located LLMs as separate processes under NVIDIA MPS, so a compute-bound
prefill of one LLM runs while memory-bound decode iterations of others (or of the same LLM)
go on. A step here is one prefill batch (one LLM: ADBS runs one prefill at a time per mesh,
`scheduling/adbs.py`) and decode *rounds*, a round being one iteration of every decoding LLM
at once (their processes run concurrently). With a prefill, rounds go on while it runs: as
many as fit within the prefill's own time (at least one), and the step takes the time of the
prefill and those rounds together. Without one, rounds repeat (fused) like the serial
engine's decode iterations. Jobs are priced by `colocation.py`, the one co-location physics:

- `spatial` (mode `mps`): each job runs under its SM share's slowdown
  (`colocation.sm_slowdown`, MuxServe's released profile) and the shares compete for HBM and
  NVLink. What MuxServe's code adds, and where:
  - *SM parts* (`muxserve/muxsched/resource.py`, `SMResource`): a GPU is 10 parts; a job
    needs share x 10 parts and starts only if `can_allocate`: its parts <= the free parts +
    min(overload threshold, parts not yet overloaded), the threshold being 2 parts
    (`muxserve/muxsched/placement.py`, `YamlBuilder`: `overload_threshold // 10`, or 2). The
    prefill goes first and takes 8, 9 or 10 parts for a 7B, 13B or >= 30B LLM (`placement.py`,
    `dump_to_yaml`'s `prefill_mps_dict`); then each decoding LLM's decode job its decode
    share's parts, tried round-robin from the LLM after the last one that started
    (`muxserve/muxsched/scheduler.py`, `adbs_schedule` with `switch_decoding_model`). A
    decode job that does not fit waits: `SpatialEngine.plan` (`engine_spatial.py`) removes
    its requests from the step, which stays a single iteration when the step has no prefill,
    as MuxServe relaunches its decode jobs one iteration at a time (`add_requests`,
    `num_iters = 1`). Decode shares are MuxServe's placement's (`placement/muxserve.py`,
    on the plan); without them every LLM gets an even split of a mesh's 120% decode budget.
  - *Scheduling overhead*: every decode job costs 100, 80 or 70 us per sequence per
    iteration (7B, 13B, larger; `placement.py`, `CostEstimator.get_latency`: "add schedule
    overhead", `t_decode += 0.0001 * bs`), CPU work of its process (host time).
- `spatial-ideal` (mode `fluid`): no SM budget, every job at full speed, compute and bandwidth
  split perfectly: T = max(max W, sum C, sum M).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from seallm.colocation import JobCost, JobCoster, Mode, round_time, sm_slowdown
from seallm.costmodel import CostModel
from seallm.executor.base import Batch, StepOutcome
from seallm.request import Request
from seallm.specs import ModelSpec

SM_PARTS = 10  # resource.py: SMResource has 10 SMPart
OVERLOAD_PARTS = 2  # placement.py: YamlBuilder's overload_threshold (20% // 10, or 2)
# llama.json profiles MPS shares 30..100%; placement.py's estimate_mps skips > 90% and the
# prefill's 100%, so a decode share is one of these.
DECODE_SHARES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DECODE_BUDGET = 1.2  # placement.py, MeshGroup: remaining_mps 100 + overload_threshold 20


def _size_class(model: ModelSpec) -> int:
    """MuxServe's model classes: 0 for 7B (and smaller), 1 for 13B, 2 for >= 30B."""
    return 0 if model.num_params < 10e9 else 1 if model.num_params < 20e9 else 2


def prefill_share(model: ModelSpec) -> float:
    """placement.py, dump_to_yaml: prefill_mps_dict, llama-7b 80, -13b 90, -30b/-65b 100."""
    return (0.8, 0.9, 1.0)[_size_class(model)]


def schedule_overhead(model: ModelSpec) -> float:
    """Seconds per sequence per decode iteration (placement.py, CostEstimator.get_latency)."""
    return (100e-6, 80e-6, 70e-6)[_size_class(model)]


def sm_parts(share: float) -> int:
    return round(share * SM_PARTS)


def default_decode_shares(services: list[str]) -> dict[str, float]:
    """Without MuxServe's placement (no rates): the 120% budget split evenly, in 10% steps."""
    n = max(1, len(services))
    parts = min(9, max(3, int(DECODE_BUDGET * SM_PARTS + 1e-9) // n))
    return {s: parts / SM_PARTS for s in services}


class SMParts:
    """One mesh's SM parts (resource.py, SMResource), counted rather than named: which part
    an overloading job doubles up on (MuxServe picks at random) changes no count."""

    def __init__(self, parts: int = SM_PARTS, overload: int = OVERLOAD_PARTS) -> None:
        self.parts, self.overload = parts, overload
        self.free = parts  # parts no job holds
        self.unoverloaded = parts  # parts held by at most one job
        self.held = 0  # parts held, summed over jobs

    def can_allocate(self, n: int) -> bool:
        return self.free + min(self.overload, self.unoverloaded) >= n

    def allocate(self, n: int) -> None:
        if not self.can_allocate(n):
            raise ValueError(f"{n} SM parts do not fit")
        take = min(n, self.free)
        self.free -= take
        self.unoverloaded -= n - take
        self.held += n


def _by_service(decode: list[Request]) -> dict[str, list[Request]]:
    by: dict[str, list[Request]] = {}
    for r in decode:
        by.setdefault(r.service, []).append(r)
    return by


class SpatialExecutor:
    """Runs a step of one prefill batch and concurrent decode rounds of several models."""

    def __init__(
        self,
        costers: dict[str, JobCoster],
        mode: Mode = "fluid",
        decode_shares: dict[str, float] | None = None,
    ) -> None:
        if mode not in ("mps", "fluid"):
            raise ValueError(f"spatial sharing prices jobs as mps or fluid, not {mode!r}")
        self.costers, self.mode = costers, mode
        self.services = list(costers)
        shares = {**default_decode_shares(self.services), **(decode_shares or {})}
        for s in self.services:
            if mode == "mps" and round(shares[s], 6) not in DECODE_SHARES:
                raise ValueError(f"{s}: decode share {shares[s]} is not one of {DECODE_SHARES}")
        self.shares = {s: shares[s] for s in self.services}
        self.turn = len(self.services) - 1  # the LLM whose decode started last

    # -- the SM-part gate ----------------------------------------------------------------------
    def admit(self, batch: Batch) -> list[Request]:
        """The decode requests of `batch` whose LLM's decode job gets its SM parts this step
        (all of them in `fluid` mode)."""
        if self.mode == "fluid" or not batch.decode:
            return batch.decode
        gate = SMParts()
        if batch.prefill:
            gate.allocate(sm_parts(prefill_share(self.costers[batch.prefill[0].service].model)))
        by = _by_service(batch.decode)
        n, started, last = len(self.services), set(), self.turn
        for i in range(1, n + 1):
            s = self.services[(self.turn + i) % n]
            if s in by and gate.can_allocate(sm_parts(self.shares[s])):
                gate.allocate(sm_parts(self.shares[s]))
                started.add(s)
                last = (self.turn + i) % n
        self.turn = last
        return [r for r in batch.decode if r.service in started]

    # -- pricing -------------------------------------------------------------------------------
    def _alone(self, job: JobCost, slowdown: float) -> np.ndarray | float:
        """A job's own time in this mode (under its SM share's slowdown for `mps`)."""
        if self.mode == "fluid":
            return job.time
        return job.host + job.launch + job.kernel * slowdown

    def prefill_job(self, prefill: list[Request]) -> tuple[JobCost, float]:
        lens = [r.context_tokens for r in prefill]
        coster = self.costers[prefill[0].service]
        job = coster.iteration(sum(lens), float(sum(x * x for x in lens)), 0, 0)
        return job, sm_slowdown(prefill_share(coster.model), prefill=True)

    def decode_jobs(self, decode: list[Request], k: int) -> tuple[list[JobCost], list[float]]:
        """Each decoding LLM's job over k rounds (arrays of length k) and its slowdown."""
        jobs, slow = [], []
        for s, rs in _by_service(decode).items():
            coster = self.costers[s]
            job = coster.decode(len(rs), sum(r.context_tokens for r in rs), k)
            if self.mode == "mps":
                extra = schedule_overhead(coster.model) * len(rs)
                job = dataclasses.replace(job, time=job.time + extra, host=job.host + extra)
            jobs.append(job)
            slow.append(sm_slowdown(self.shares[s], prefill=False, batch=len(rs)))
        return jobs, slow

    def rounds(self, decode: list[Request], k: int) -> JobCost:
        """k decode rounds: per-round time, and per-round compute, memory and link demand."""
        jobs, slow = self.decode_jobs(decode, k)
        t = np.asarray(round_time(jobs, self.mode, slow), dtype=np.float64)
        c, m, li = (np.sum([getattr(j, f) for j in jobs], axis=0) for f in _DEMANDS)
        return JobCost(t, 0.0, 0.0, c, m, li)

    def execute(self, batch: Batch, now: float) -> StepOutcome:
        decode = batch.decode
        limit = batch.max_iters
        if decode:  # a step ends at the first decode finish, as the serial engine's
            limit = min(limit, min(r.output_tokens - r.generated for r in decode))
        if batch.prefill:
            pre, slow = self.prefill_job(batch.prefill)
            own = float(self._alone(pre, slow))
            k, t = 1, own
            if decode:
                rd = self.rounds(decode, max(1, limit))
                cum = np.cumsum(rd.time)
                # As many rounds as fit within the prefill's own time, at least one.
                k = max(1, min(limit, int(np.searchsorted(cum, own, "right"))))
                run = JobCost(
                    float(cum[k - 1]),
                    0.0,
                    0.0,
                    float(rd.compute[:k].sum()),
                    float(rd.memory[:k].sum()),
                    float(rd.link[:k].sum()),
                )
                t = float(round_time([pre, run], self.mode, [slow, 1.0]))
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


_DEMANDS = ("compute", "memory", "link")


def make_spatial_executor(
    kind: str,
    cost: CostModel,
    models: dict[str, ModelSpec],
    tp: int,
    decode_shares: dict[str, float] | None = None,
) -> SpatialExecutor:
    """The executor of a `spatial` (MuxServe, mode `mps`) or `spatial-ideal` (its fluid upper
    bound) engine for one group of `tp` GPUs; `decode_shares`: each model's SM share for
    decode, as MuxServe's placement chose them (ignored by `spatial-ideal`)."""
    modes: dict[str, Mode] = {"spatial": "mps", "spatial-ideal": "fluid"}
    if kind not in modes:
        raise ValueError(f"engine: {kind!r} is not one of {', '.join(modes)}")
    costers = {s: JobCoster(cost, m, tp) for s, m in models.items()}
    return SpatialExecutor(costers, modes[kind], decode_shares)
