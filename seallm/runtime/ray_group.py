"""The front door's side of one group in a Ray actor, and the glue to the Ray cluster.

`RemoteGroup` is what the controller and the app hold for a group of the Ray runtime: it
dispatches like a GroupEngine (`add`, `load`) and answers the app's questions (`models`,
`limits`, `kv` capacities, `scheduler.name`) from a local copy of the group's layout, while the
engine itself runs in a `GroupWorker` actor (`ray_actor.py`). The functions below connect to
Ray, size a group's resource request and start its actor on the node its plan names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from seallm.config import EngineSpec
from seallm.kvcache import KVStats, PagedKVCache
from seallm.placement.plan import GroupPlan, Plan
from seallm.request import Request, Status
from seallm.runtime.ray_actor import GroupState, GroupWorker, Job
from seallm.server.settings import ServeSettings
from seallm.specs import ModelSpec

log = logging.getLogger("seallm.runtime.ray")

DOWN_LOAD = 1 << 20  # dispatch prefers any live group to one being replaced
Spawn = Callable[[GroupPlan], Any]  # a group plan -> a started actor handle


class RemoteKV:
    """A group's KV cache as the front door sees it: capacities from a local copy of its
    layout (bookkeeping only, no memory), usage as the worker last reported it."""

    def __init__(self, layout: PagedKVCache) -> None:
        self.layout = layout
        self.shared = layout.shared
        self.tokens_per_page = layout.tokens_per_page
        self.page_bytes = layout.page_bytes
        self.last = layout.stats()

    def capacity_tokens(self, service: str) -> int:
        return self.layout.capacity_tokens(service)

    def stats(self) -> KVStats:
        return self.last


class SchedulerName:
    def __init__(self, name: str) -> None:
        self.name = name


class RemoteGroup:
    """One group engine in a Ray actor, as the controller and the app see a GroupEngine:
    `add` (dispatch), `load`, `models`, `limits`, `kv` and `scheduler.name`. It also holds the
    requests in flight on the actor and, while the actor is being replaced, a backlog."""

    def __init__(
        self,
        plan: GroupPlan,
        specs: dict[str, ModelSpec],
        layout: PagedKVCache,
        scheduler: str,
        limits: EngineSpec,
        spawn: Spawn,
    ) -> None:
        self.id = plan.id
        self.plan = plan
        self.models = specs
        self.limits = limits
        self.kv = RemoteKV(layout)
        self.scheduler = SchedulerName(scheduler)
        self.spawn = spawn
        self.actor: Any = spawn(plan)
        self.state = "starting"  # starting | up | down (being replaced) | failed | retired
        self.inflight: dict[int, Request] = {}
        self.backlog: list[Request] = []
        self.restarts = 0
        self.where: dict[str, Any] = {}  # the worker's info()
        self.last: GroupState | None = None

    @property
    def up(self) -> bool:
        return self.state == "up"

    @property
    def load(self) -> int:
        n = len(self.inflight) + len(self.backlog)
        return n if self.up else n + DOWN_LOAD * (2 if self.state == "failed" else 1)

    def add(self, req: Request, now: float) -> None:
        """Send `req` to the actor (with the tokens it already has), or keep it until the
        actor is up. Call with the runtime's lock held."""
        req.group, req.status = self.id, Status.QUEUED
        if not self.up:
            self.backlog.append(req)
            return
        gen = req.generation
        assert gen is not None
        self.inflight[req.id] = req
        job = Job(req.id, req.service, gen.prompt_ids, gen.params, list(gen.output_ids))
        self.actor.add.remote([job])

    def forget(self, req: Request) -> None:
        """Drop `req` (ended by the front door); tell the actor to free it."""
        if self.inflight.pop(req.id, None) is not None and self.up:
            self.actor.abort.remote([req.id])
        elif req in self.backlog:
            self.backlog.remove(req)


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address` ("auto", HOST:PORT or ray://HOST:PORT), or start a
    local one (None), unless this process is connected already."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address or None, include_dashboard=False, log_to_driver=True)


def group_resources(settings: ServeSettings, group: GroupPlan) -> dict[str, float]:
    """What a group's actor asks Ray for: its GPUs, or its CPU cores on a CPU cluster."""
    if settings.server.device.startswith("cuda"):
        return {"num_gpus": group.size}
    return {"num_cpus": group.size}


def actor_spawner(settings: ServeSettings, nodes: list[str]) -> Spawn:
    """Start a group's GroupWorker on the Ray node standing for its plan node (plan node i ->
    the i-th alive node, wrapping around; soft, so Ray picks another node when it is gone)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    worker = ray.remote(GroupWorker)

    def spawn(group: GroupPlan) -> Any:
        strategy = NodeAffinitySchedulingStrategy(nodes[group.node % len(nodes)], soft=True)
        return worker.options(  # type: ignore[attr-defined]
            **group_resources(settings, group),
            max_concurrency=4,  # poll waits while add and abort come in
            max_restarts=0,  # the runtime replaces it, knowing what was in flight
            scheduling_strategy=strategy,
        ).remote(settings, group)

    return spawn


def cluster_nodes(settings: ServeSettings, plan: Plan) -> list[str]:
    """The alive Ray nodes with the plan's device kind, ordered; raise if the cluster cannot
    hold every group at once."""
    import ray

    kind = "GPU" if settings.server.device.startswith("cuda") else "CPU"
    alive = [n for n in ray.nodes() if n.get("Alive") and n["Resources"].get(kind, 0) > 0]
    alive.sort(key=lambda n: (n["NodeManagerAddress"], n["NodeID"]))
    need = sum(g.size for g in plan.groups)
    have = sum(n["Resources"][kind] for n in alive)
    if need > have:
        raise RuntimeError(
            f"the plan's {len(plan.groups)} group(s) need {need} {kind}(s); the Ray cluster "
            f"has {have:g} on {len(alive)} node(s)"
        )
    nodes = {g.node for g in plan.groups}
    if len(nodes) > len(alive):
        log.warning("the plan spans %d nodes, the Ray cluster has %d", len(nodes), len(alive))
    return [n["NodeID"] for n in alive]
