"""GroupEngine: the local engine of one GPU group. One step = schedule -> execute -> update.

The same engine runs under the simulator's virtual clock (SimExecutor) and live (a real
executor): the runtime calls `plan`, has the executor run the batch, then calls `commit` at
the step's end time. Between the two, `add` may enqueue new requests; nothing else changes.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from seallm.config import EngineSpec
from seallm.executor.base import Batch, Executor, StepOutcome
from seallm.kvcache import PagedKVCache
from seallm.profile import ServiceProfile
from seallm.request import Request, Status
from seallm.scheduling.base import EngineState, Scheduler
from seallm.specs import ModelSpec


def _order(r: Request) -> tuple[float, int]:
    return (r.arrival, r.id)


class GroupEngine:
    def __init__(
        self,
        group_id: int,
        models: dict[str, ModelSpec],
        tp: int,
        scheduler: Scheduler,
        kv: PagedKVCache,
        executor: Executor,
        limits: EngineSpec,
        profiles: dict[str, ServiceProfile],
        preemption: str = "recompute",
        fuse: bool = True,
        swap_time: Callable[[Request], float] | None = None,
    ) -> None:
        self.id = group_id
        self.models = models
        self.tp = tp
        self.scheduler = scheduler
        self.kv = kv
        self.executor = executor
        self.limits = limits
        self.profiles = profiles
        if preemption not in ("recompute", "cost"):
            raise ValueError(f"preemption: {preemption!r} is not one of recompute, cost")
        self.preemption = preemption
        self.fuse = fuse
        self.swap_time = swap_time or (lambda r: 0.0)
        self.host_capacity = limits.swap_bytes_per_gpu * tp
        self.host_used = 0.0
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self.running_count: dict[str, int] = dict.fromkeys(models, 0)
        self.swapped: list[Request] = []
        self.busy = False
        # Counters for monitoring.
        self.iterations = 0
        self.batched = 0  # request-iterations, for the mean batch size
        self.steps = 0
        self.busy_time = 0.0
        self.preemptions = 0
        self.swaps = 0
        self.kv_used_time = 0.0  # KV utilization x seconds, over busy time
        self.kv_frag_time = 0.0

    # -- queue ----------------------------------------------------------------------------
    def add(self, req: Request, now: float) -> None:
        req.group = self.id
        req.status = Status.QUEUED
        req.last_run = now
        self.scheduler.admit(req, now)
        bisect.insort(self.waiting, req, key=_order)

    @property
    def load(self) -> int:
        return len(self.waiting) + len(self.running) + len(self.swapped)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running or self.swapped)

    def state(self) -> EngineState:
        return EngineState(
            self.waiting,
            self.running,
            self.swapped,
            self.kv,
            self.limits,
            self.running_count,
        )

    # -- one step ---------------------------------------------------------------------------
    def plan(self, now: float, horizon: float = float("inf")) -> Batch | None:
        """Ask the scheduler for the next batch and prepare memory for it."""
        decision = self.scheduler.schedule(self.state(), now)
        extra = 0.0
        for r in decision.preempt:
            extra += self._preempt(r)
        for r in decision.swap_in:
            self.kv.allocate(r, r.context_tokens + 1)
            if hasattr(self.executor, "swap_in"):  # a real executor copies the KV back
                self.executor.swap_in(r, self.kv.page_tables[r.id])
            self.swapped.remove(r)
            self.host_used -= self._kv_bytes(r)
            self._start_running(r)
            extra += self.swap_time(r)
        for r in decision.prefill:
            self.kv.allocate(r, r.context_tokens + 1)
        decode = decision.decode + decision.swap_in
        if not decision.prefill and not decode:
            return None
        # Fuse identical decode iterations only when nothing else changed memory: pages freed
        # by a preemption may admit a request at the very next iteration.
        fusable = self.fuse and not decision.prefill and not decision.preempt
        limit = self.limits.max_fused_iterations if fusable else 1
        steps = self.kv.max_decode_steps(decode, limit)
        while decode and steps == 0:  # a policy under-provisioned memory: recompute the last
            extra += self._preempt(decode.pop())
            limit = 1
            steps = self.kv.max_decode_steps(decode, limit)
        if not decision.prefill and not decode:
            return None
        self.busy = True
        return Batch(
            service=decision.service or (decision.prefill + decode)[0].service,
            prefill=list(decision.prefill),
            decode=decode,
            max_iters=max(1, steps),
            stop_at=min(horizon, decision.stop_at),
            extra_time=extra,
        )

    def execute(self, batch: Batch, now: float) -> StepOutcome:
        return self.executor.execute(batch, now)

    def commit(self, batch: Batch, outcome: StepOutcome, end: float) -> list[Request]:
        """Apply a finished step at time `end`; returns the requests that completed."""
        k = outcome.iterations
        start = end - outcome.duration
        # Every request of every step passes here: one flat loop per list.
        for r in batch.prefill:
            stall = start - r.last_run
            if stall > r.max_stall:
                r.max_stall = stall
            r.generated += 1
            if r.first_token_time is None:
                r.first_token_time = end
            self.waiting.remove(r)
            self._start_running(r)
        for r in batch.decode:
            stall = start - r.last_run
            if stall > r.max_stall:
                r.max_stall = stall
            r.generated += k
        self.kv.grow(batch.decode)
        self.scheduler.account(batch, outcome, end)
        for r in outcome.finished:
            r.status = Status.FINISHED
            r.finish_time = end
            self.kv.release(r)
            self._stop_running(r)
            self.scheduler.release(r)
            self.profiles[r.service].observe(r)
        kv = self.kv.stats()
        self.kv_used_time += kv.utilization * outcome.duration
        self.kv_frag_time += kv.fragmentation * outcome.duration
        self.busy = False
        self.steps += 1
        self.iterations += k
        self.batched += k * (len(batch.prefill) + len(batch.decode))
        self.busy_time += outcome.duration
        return outcome.finished

    # -- preemption and aborts ----------------------------------------------------------------
    def _start_running(self, r: Request) -> None:
        bisect.insort(self.running, r, key=_order)
        self.running_count[r.service] += 1
        r.status = Status.RUNNING

    def _stop_running(self, r: Request) -> None:
        self.running.remove(r)
        self.running_count[r.service] -= 1

    def abort(self, r: Request, reason: str) -> bool:
        """End `r` with an error wherever it is (queued, running or swapped): free its device
        KV (or its host copy), tell the scheduler, mark it ABORTED. Must not be called while
        a batch holding `r` executes (the live runtime applies aborts between steps).
        Returns False when `r` is not in this engine (already finished or never added)."""
        if r in self.waiting:
            self.waiting.remove(r)
        elif r in self.running:
            self._stop_running(r)
        elif r in self.swapped:
            self.swapped.remove(r)
            self.host_used -= self._kv_bytes(r)
        else:
            return False
        self.kv.release(r)
        release = getattr(self.executor, "release", None)  # executors with per-request state
        if release is not None:
            release(r)
        self.scheduler.release(r)
        r.status = Status.ABORTED
        r.error = reason
        return True

    def _kv_bytes(self, r: Request) -> float:
        return r.context_tokens * self.models[r.service].kv_bytes_per_token

    def _preempt(self, r: Request) -> float:
        """Take `r`'s device KV away: swap it to host memory when that is cheaper than
        recomputing it (and host space allows), else drop it to recompute later. Returns the
        seconds charged now (the swap-out)."""
        swap = self.preemption == "cost" and self._swap_is_cheaper(r)
        if swap and hasattr(self.executor, "swap_out"):  # a real executor copies the KV out
            self.executor.swap_out(r, self.kv.page_tables[r.id])
        self.kv.release(r)
        self._stop_running(r)
        r.preemptions += 1
        self.preemptions += 1
        if swap:
            r.status = Status.SWAPPED
            self.host_used += self._kv_bytes(r)
            self.swaps += 1
            bisect.insort(self.swapped, r, key=_order)
            self.scheduler.preempted(r)
            return self.swap_time(r)
        r.status = Status.QUEUED
        bisect.insort(self.waiting, r, key=_order)
        self.scheduler.preempted(r)
        return 0.0

    def _swap_is_cheaper(self, r: Request) -> bool:
        if self.host_used + self._kv_bytes(r) > self.host_capacity:
            return False
        # Recomputing rides along in a later iteration: its cost is what the context's tokens
        # add to an iteration, not a whole iteration of its own.
        cost = self.profiles[r.service].cost
        recompute = cost.prefill_time(r.context_tokens) - cost.prefill_time(1)
        return 2 * self.swap_time(r) < recompute  # out now and in later
