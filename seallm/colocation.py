"""The co-location physics: what a *round* of jobs on one group costs. One physics for every
system (seallm's rounds, MuxServe's spatial sharing, its idealized upper bound).

A job is one model's forward pass over its part of a round (a prefill batch, a decode batch,
or both). From the roofline cost model (`costmodel.py`) each job is split into:

- `time` W: the job alone on the group, as the cost model prices it (the roofline, or a
  measured profile: then the parts below still come from the roofline);
- `host` H: CPU work of the engine step (scheduling, input tensors, sampling; the cost model's
  iteration and per-sequence overheads). It runs on the CPU thread that drives the job;
- `launch` K: kernel launch costs (per-kernel launch + minimum duration), also issued by that
  CPU thread;
- `compute` C, `memory` M, `link` L: the seconds the job's FLOPs, HBM bytes and NVLink bytes
  take at the group's full compute, bandwidth and link bandwidth. Each is <= W;
- `kernel` G = W - H - K: the job's GPU kernel time (all-reduce latency included).

How a round of jobs costs, by where it runs (`Mode`):

- `serial`: a CPU device, or one process that runs one job after the other: sum of W.
- `streams`: seallm's rounds on a GPU, one engine process issuing each job on its own CUDA
  stream. Host work and launches come from one CPU thread, so they add up; the kernels of
  different streams share the SMs dynamically (no fixed partition), so the kernel phase lasts
  at least the longest job's kernels and at least the summed compute, HBM and NVLink demand
  over the group's capacity: T = sum H + max(sum K, max (K + G), sum C, sum M, sum L).
  One job alone costs exactly W.
- `mps`: MuxServe, one process per job under NVIDIA MPS with a cap of SM parts each
  (`sm_slowdown` below): host work overlaps across processes, each job runs at its share's
  slowdown, and the shares still compete for HBM and NVLink:
  T = max(max (H + K + G x slowdown(share)), sum C, sum M, sum L).
- `fluid`: the idealized upper bound (`muxserve-ideal`): everything overlaps and the jobs
  split compute and bandwidth perfectly: T = max(max W, sum C, sum M).

The SM-share slowdowns are MuxServe's released profile (`examples/placement/llama.json` in
github.com/hao-ai-lab/MuxServe: latency under an SM cap against 100%, median over its entries):
decode 1.26x at 30%, 1.06x at 50%, 1.02x at 80% (1.50x, 1.19x, 1.06x at batch >= 32);
prefill 2.29x, 1.53x, 1.12x. Between the points we interpolate linearly; below 30% the time
grows as 1 / share from the 30% point (fewer SMs than the profile measured).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from seallm.costmodel import CostModel, ModelCost
from seallm.specs import ModelSpec

Mode = Literal["serial", "streams", "mps", "fluid"]
MODES: tuple[str, ...] = ("serial", "streams", "mps", "fluid")
Arr = np.ndarray | float
UNLIMITED = 1e9  # factor that makes a device resource free (its roofline term vanishes)

# share -> slowdown, from MuxServe's released profile (module docstring).
_SHARES = np.array([0.3, 0.5, 0.8, 1.0])
_DECODE = np.array([1.26, 1.06, 1.02, 1.0])
_DECODE_WIDE = np.array([1.50, 1.19, 1.06, 1.0])  # decode batch >= 32
_PREFILL = np.array([2.29, 1.53, 1.12, 1.0])
WIDE_BATCH = 32


def sm_slowdown(share: float, prefill: bool, batch: int = 1) -> float:
    """Latency of a job capped at `share` of the SMs, relative to all of them."""
    if share >= 1.0:
        return 1.0
    if share <= 0:
        raise ValueError(f"SM share must be positive, got {share}")
    curve = _PREFILL if prefill else (_DECODE_WIDE if batch >= WIDE_BATCH else _DECODE)
    if share < _SHARES[0]:
        return float(curve[0] * _SHARES[0] / share)
    return float(np.interp(share, _SHARES, curve))


@dataclass(frozen=True)
class JobCost:
    """One job's split (see the module docstring): floats, or per-iteration arrays."""

    time: np.ndarray | float
    host: np.ndarray | float
    launch: np.ndarray | float
    compute: np.ndarray | float
    memory: np.ndarray | float
    link: np.ndarray | float

    @property
    def kernel(self) -> np.ndarray | float:
        return self.time - self.host - self.launch


class JobCoster:
    """One model on one group, each job priced alone and split into the parts above. Every
    part comes from the same `ModelCost` evaluated on copies of the device or calibration with
    one resource made free, so the split uses the kernels, shapes and calibration that a job
    alone is priced with."""

    def __init__(self, cost: CostModel, model: ModelSpec, tp: int) -> None:
        dev, cal = cost.device, cost.calibration
        free_mem = dataclasses.replace(dev, memory_bandwidth=dev.memory_bandwidth * UNLIMITED)
        free_flops = dataclasses.replace(dev, peak_flops=dev.peak_flops * UNLIMITED)
        free_both = dataclasses.replace(free_mem, peak_flops=dev.peak_flops * UNLIMITED)
        free_link = dataclasses.replace(
            dev, intra_node_bandwidth=dev.intra_node_bandwidth * UNLIMITED
        )
        no_host = dataclasses.replace(cal, iteration_overhead=0.0, per_seq_overhead=0.0)
        no_launch = dataclasses.replace(cal, launch_overhead=0.0, gemm_launch_overhead=0.0)
        self.model, self.tp = model, tp
        self._terms: dict[int, np.ndarray] = {}
        self.alone: ModelCost = cost.for_model(model, tp)
        self._parts = (
            ModelCost(model, dev, no_host, tp),
            ModelCost(model, dev, no_launch, tp),
            ModelCost(model, free_mem, cal, tp),  # everything but memory traffic
            ModelCost(model, free_flops, cal, tp),  # everything but compute
            ModelCost(model, free_both, cal, tp),  # neither
            ModelCost(model, free_link, cal, tp),
        )
        # Decode is priced for every variant at once (`decode_parts`): first the job alone by
        # the roofline, which a measured profile (not a ModelCost) replaces.
        self.measured = type(self.alone) is not ModelCost
        roofline = ModelCost(model, dev, cal, tp) if self.measured else self.alone
        self._decoders = (roofline, *self._parts)

    @staticmethod
    def _split(
        w: Arr,
        no_host: Arr,
        no_launch: Arr,
        compute_only: Arr,
        memory_only: Arr,
        neither: Arr,
        no_link: Arr,
    ) -> JobCost:
        return JobCost(
            w,
            w - no_host,
            w - no_launch,
            compute_only - neither,
            memory_only - neither,
            w - no_link,
        )

    def iteration(
        self, prefill_tokens: int, prefill_sq_sum: float, n_decode: int, decode_ctx_sum: int
    ) -> JobCost:
        """One forward pass (floats)."""
        args = (prefill_tokens, prefill_sq_sum, n_decode, decode_ctx_sum)
        return self._split(
            self.alone.iteration_time(*args), *(p.iteration_time(*args) for p in self._parts)
        )

    def decode_terms(self, n: int) -> np.ndarray:
        """`decode_terms(n)` of each row of `_VARIANTS`: the job alone (by the roofline), each
        part's variant, and zeros (so that every part is one difference of two rows). Batch
        sizes repeat: each one's terms are kept."""
        terms = self._terms.get(n)
        if terms is None:
            rows = [m.decode_terms(n) for m in self._decoders]
            terms = self._terms[n] = np.array([*rows, (0.0, 0.0, 0.0, 0.0)])
        return terms

    def decode(self, n: int, ctx_sum: int, k: int) -> JobCost:
        """k consecutive decode iterations of n requests (arrays of length k); equals each
        variant's `decode_times`."""
        if k <= 0 or n <= 0:
            zero = np.zeros(max(k, 0))
            return JobCost(zero, zero, zero, zero, zero, zero)
        return JobCost(*decode_parts([(self, n, ctx_sum)], k)[:, 0])


# The rows of `JobCoster.decode_terms`: the job alone, each part's variant (`_parts`), and
# a variant that costs nothing.
_VARIANTS = (
    *("alone", "no_host", "no_launch", "compute_only", "memory_only", "neither", "no_link"),
    "zero",
)
# JobCost's parts, in field order, each the difference of two rows (as `_split` takes them).
_SPLIT = (
    ("alone", "zero"),
    ("alone", "no_host"),
    ("alone", "no_launch"),
    ("compute_only", "neither"),
    ("memory_only", "neither"),
    ("alone", "no_link"),
)
_MINUEND = np.array([_VARIANTS.index(a) for a, _ in _SPLIT])
_SUBTRAHEND = np.array([_VARIANTS.index(b) for _, b in _SPLIT])


def decode_parts(jobs: Sequence[tuple[JobCoster, int, int]], k: int) -> np.ndarray:
    """The split of k consecutive decode iterations of several jobs, (coster, requests n >= 1,
    context sum) each: an array [part, job, iteration], the parts in JobCost's order. All jobs
    and variants are priced at once, by the same float operations as each variant's
    `decode_times` (broadcast), so each element equals the job's own `JobCoster.decode`."""
    n = np.array([m for _, m, _ in jobs], dtype=np.float64)[:, None, None]
    ctx = np.array([s for _, _, s in jobs], dtype=np.float64)[:, None, None]
    ctx = ctx + n * np.arange(k, dtype=np.float64)  # [job, 1, iteration]
    terms = np.array([coster.decode_terms(m) for coster, m, _ in jobs])  # [job, variant, term]
    base, c, mc, mn = (terms[:, :, i : i + 1] for i in range(4))
    times = base + np.maximum(c * ctx, mc * ctx + mn * n)  # [job, variant, iteration]
    for j, (coster, m, s) in enumerate(jobs):
        if coster.measured:  # the job alone as its measured profile prices it
            times[j, 0] = coster.alone.decode_times(m, s, k)
    return (times.take(_MINUEND, axis=1) - times.take(_SUBTRAHEND, axis=1)).transpose(1, 0, 2)


def round_time(
    jobs: Sequence[JobCost] | np.ndarray, mode: Mode, slowdowns: list[float] | None = None
) -> np.ndarray | float:
    """Seconds of a round of `jobs` that start together (see the module docstring): JobCosts,
    or their parts stacked [part, job, ...] as `decode_parts` gives them; with per-iteration
    arrays, element-wise (one round per iteration). `slowdowns`: each job's SM-share
    slowdown, for `mps` (default 1)."""
    if not isinstance(jobs, np.ndarray):
        if not jobs:
            return 0.0
        if len(jobs) == 1 and mode != "mps":
            return jobs[0].time
        jobs = _stack(jobs)
    n = jobs.shape[1]
    if n == 0:
        return 0.0
    time, host, launch = jobs[:3]
    if n == 1 and mode != "mps":
        return time[0]
    # Each part summed over the jobs in their order (a sequential sum, as `sum` adds them).
    sum_time, sum_host, sum_launch, sum_compute, sum_memory, sum_link = np.add.accumulate(
        jobs, axis=1
    )[:, -1]
    if mode == "serial":
        return sum_time
    demand = np.maximum(np.maximum(sum_compute, sum_memory), sum_link)
    kernel = time - host - launch
    if mode == "streams":
        return sum_host + np.maximum(
            np.maximum(sum_launch, np.maximum.reduce(launch + kernel)), demand
        )
    if mode == "mps":
        slow = np.asarray(slowdowns or [1.0] * n, dtype=np.float64)
        if len(slow) != n:
            raise ValueError(f"{len(slow)} slowdowns for {n} jobs")
        alone = host + launch + kernel * slow.reshape(n, *(1,) * (jobs.ndim - 2))
        return np.maximum(np.maximum.reduce(alone), demand)
    if mode == "fluid":
        return np.maximum(np.maximum(np.maximum.reduce(time), sum_compute), sum_memory)
    raise ValueError(f"co-location mode {mode!r} is not one of {', '.join(MODES)}")


def _stack(jobs: Sequence[JobCost]) -> np.ndarray:
    """The jobs' parts as one array [part, job, ...] (JobCost's fields in order)."""
    rows = [(j.time, j.host, j.launch, j.compute, j.memory, j.link) for j in jobs]
    try:
        return np.array(rows, dtype=np.float64).swapaxes(0, 1)
    except ValueError:  # floats and per-iteration arrays mixed: broadcast the floats
        flat = np.broadcast_arrays(*(x for row in rows for x in row))
        return np.array(flat).reshape(len(jobs), len(rows[0]), *flat[0].shape).swapaxes(0, 1)


def mode_for(device_name: str) -> Mode:
    """How one engine process runs a round on this kind of device: a CPU runs its jobs one
    after another; a GPU runs them on CUDA streams."""
    return "serial" if device_name == "cpu" else "streams"


class RoundPricer:
    """Prices the jobs of a round of one group: for the schedulers' join decisions and the
    simulator's executor (the same physics for both)."""

    def __init__(self, costers: dict[str, JobCoster], mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"co-location mode {mode!r} is not one of {', '.join(MODES)}")
        self.costers = costers
        self.mode = mode

    def job(self, service: str, prefill_lens: list[int], n_decode: int, ctx_sum: int) -> JobCost:
        return self.costers[service].iteration(
            sum(prefill_lens), float(sum(x * x for x in prefill_lens)), n_decode, ctx_sum
        )

    def time(self, jobs: list[JobCost]) -> float:
        return float(round_time(jobs, self.mode))

    def decode_times(self, jobs: list[tuple[str, int, int]], k: int) -> np.ndarray:
        """Durations of k consecutive decode rounds of (service, requests, context sum) jobs,
        each context sum growing by its requests every round."""
        costers = [(self.costers[s], n, ctx) for s, n, ctx in jobs]
        if k > 0 and all(n > 0 for _, n, _ in jobs):
            parts: list[JobCost] | np.ndarray = decode_parts(costers, k)
        else:
            parts = [coster.decode(n, ctx, k) for coster, n, ctx in costers]
        return np.asarray(round_time(parts, self.mode), dtype=np.float64)


def round_pricer(cost: CostModel, models: dict[str, ModelSpec], tp: int) -> RoundPricer:
    """The pricer of a group's rounds, as one engine process runs them on its device."""
    return RoundPricer(
        {s: JobCoster(cost, m, tp) for s, m in models.items()}, mode_for(cost.device.name)
    )
