"""The worker side of the Ray runtime: one group engine in its own process (a Ray actor).

`GroupWorker` holds what the in-process runtime holds per group: the group's loaded models,
its GroupEngine (scheduler, KV cache, TorchExecutor) and an engine thread that runs plan ->
execute -> commit while the group has work. It knows nothing of HTTP, streams or other
groups: the front door (`runtime/ray.py`) sends it jobs (`add`), cancels them (`abort`) and
long-polls it (`poll`) for the tokens each request produced since the last poll.

A job may carry tokens generated before (by a group that died): the worker recomputes their
KV with the prompt (the executor's recompute path) and generates from there. The runtime makes
the class an actor with `ray.remote` (`ray_group.actor_spawner`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from seallm.engine import GroupEngine
from seallm.executor.base import Batch
from seallm.kvcache import KVStats
from seallm.models.sampling import Generation, SamplingParams
from seallm.placement.plan import GroupPlan
from seallm.request import Request, Status
from seallm.runtime.driver import StepHooks, run_steps
from seallm.runtime.torch_engines import live_group_engine
from seallm.server.settings import TINY_SOURCES, ServeSettings

if TYPE_CHECKING:
    from seallm.models.loader import LoadedModel

log = logging.getLogger("seallm.runtime.ray")

ABORTED = "aborted by the front door"
MAX_TOMBSTONES = 4096  # ids aborted before their job arrived (a threaded actor may reorder)


@dataclass
class Job:
    """One request for a group: the prompt, its sampling parameters and any tokens it
    already generated elsewhere (to recompute, then continue from)."""

    id: int
    service: str
    prompt_ids: list[int]
    params: SamplingParams
    output_ids: list[int] = field(default_factory=list)


@dataclass
class Update:
    """What one request produced since the last poll; final when a reason or error is set."""

    id: int
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class GroupState:
    """The group's engine as monitoring sees it (the in-process snapshot's per-group part)."""

    services: dict[str, dict[str, float]]  # service -> queued, running, kv_used_bytes
    kv: KVStats
    preemptions: int = 0
    swaps: int = 0
    iterations: int = 0


@dataclass
class Report:
    updates: list[Update]
    state: GroupState


def load_service_model(settings: ServeSettings, service: str, device: str) -> LoadedModel:
    """A service's model, by the rule `server/launch.py`'s load_models follows (a tiny
    model's seed is the service's index, so every process builds the same weights)."""
    import torch

    from seallm.models.loader import load_model, tiny_model

    index = [s.name for s in settings.config.services].index(service)
    source = settings.source_of(service)
    if source in TINY_SOURCES:
        return tiny_model(TINY_SOURCES[source], seed=index, device=device)
    dtype = getattr(torch, settings.server.dtype)
    return load_model(source, device=device, dtype=dtype, progress=False)


def group_engine(
    settings: ServeSettings, group: GroupPlan, models: dict[str, LoadedModel]
) -> GroupEngine:
    """The GroupEngine of one planned group over real models: built as the in-process
    runtime builds its group, for any group of a plan."""
    from seallm.executor.torch import TorchExecutor

    return live_group_engine(
        settings.config,
        settings.system,
        group,
        models,
        settings.kv_bytes,
        lambda ms, kv: TorchExecutor(ms, kv, device=settings.server.device),
    )


class GroupWorker:
    def __init__(self, settings: ServeSettings, group: GroupPlan) -> None:
        device = settings.server.device
        self.group = group
        self.models = {s: load_service_model(settings, s, device) for s in group.services}
        self.engine = group_engine(settings, group, self.models)
        self.cond = threading.Condition()
        self.requests: dict[int, Request] = {}
        self.sent: dict[int, int] = {}  # tokens of each request already in an update
        self.updates: dict[int, Update] = {}  # not yet polled, one per request
        self._aborts: list[int] = []
        self._tombstones: OrderedDict[int, None] = OrderedDict()
        self.t0 = time.perf_counter()
        self.thread = threading.Thread(target=self._run, name="seallm-worker", daemon=True)
        self.thread.start()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    # -- called by the front door ---------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Where the worker runs (also the front door's readiness probe)."""
        return {
            "group": self.group.id,
            "services": list(self.models),
            "scheduler": self.engine.scheduler.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }

    def add(self, jobs: list[Job]) -> None:
        with self.cond:
            now = self.now()
            for job in jobs:
                if job.id in self._tombstones:  # aborted before it arrived
                    del self._tombstones[job.id]
                    continue
                req = Request(
                    job.id,
                    job.service,
                    len(job.prompt_ids),
                    job.params.max_tokens,
                    now,
                    generated=len(job.output_ids),
                )
                req.generation = Generation(list(job.prompt_ids), job.params, list(job.output_ids))
                self.requests[job.id] = req
                self.sent[job.id] = len(job.output_ids)
                try:
                    self.engine.add(req, now)
                except Exception as err:  # answered, not lost with an unread Ray reply
                    log.exception("group %d: add failed", self.engine.id)
                    self._fail([req], err)
            self.cond.notify_all()

    def abort(self, ids: list[int]) -> None:
        """End requests (the engine thread frees them between two steps); no update follows."""
        with self.cond:
            for rid in ids:
                if rid in self.requests:
                    self._aborts.append(rid)
                else:
                    self._tombstones[rid] = None
                    while len(self._tombstones) > MAX_TOMBSTONES:
                        self._tombstones.popitem(last=False)
            self.cond.notify_all()

    def poll(self, timeout: float) -> Report:
        """Wait up to `timeout` seconds for updates; return them with the group's state."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.updates:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            updates, self.updates = list(self.updates.values()), {}
            return Report(updates, self._state())

    # -- the engine thread ----------------------------------------------------------------------
    def _run(self) -> None:
        engine = self.engine

        def wait_for_work() -> bool:
            self._apply_aborts()
            while not engine.has_work:  # the process ends with the actor (ray.kill)
                self.cond.wait()
                self._apply_aborts()
            return True

        def committed(batch: Batch) -> None:
            self._collect(batch.requests)
            self.cond.notify_all()

        run_steps(engine, self.cond, self.now, StepHooks(wait_for_work, self._fail, committed))

    def _collect(self, reqs: list[Request]) -> None:
        for r in reqs:
            if r.id not in self.requests:
                continue
            gen = r.generation
            assert gen is not None
            update = self.updates.setdefault(r.id, Update(r.id))
            update.tokens += gen.output_ids[self.sent[r.id] :]
            self.sent[r.id] = len(gen.output_ids)
            if r.status is Status.FINISHED:
                update.finish_reason = gen.finish_reason or "stop"
                self._forget(r.id)

    def _apply_aborts(self) -> None:
        aborts, self._aborts = self._aborts, []
        for rid in aborts:
            req = self.requests.get(rid)
            if req is not None:
                self.engine.abort(req, ABORTED)
                self.updates.pop(rid, None)
                self._forget(rid)

    def _fail(self, reqs: list[Request], err: Exception) -> None:
        message = f"internal error while generating: {type(err).__name__}: {err}"
        for r in list(reqs):
            self.engine.abort(r, message)
            if r.id in self.requests:
                self.updates.setdefault(r.id, Update(r.id)).error = message
                self._forget(r.id)
        self.cond.notify_all()

    def _forget(self, rid: int) -> None:
        self.requests.pop(rid, None)
        self.sent.pop(rid, None)

    def _state(self) -> GroupState:
        e = self.engine
        services = {}
        for s in e.models:
            pages = sum(
                len(e.kv.page_tables.get(r.id, ()))
                for q in (e.running, e.waiting)
                for r in q
                if r.service == s
            )
            services[s] = {
                "queued": sum(1 for q in (e.waiting, e.swapped) for r in q if r.service == s),
                "running": e.running_count[s],
                "kv_used_bytes": pages * e.kv.page_bytes[s],
            }
        return GroupState(services, e.kv.stats(), e.preemptions, e.swaps, e.iterations)
