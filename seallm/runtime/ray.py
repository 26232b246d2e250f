"""The Ray runtime: the same front door, controller and placement as the in-process runtime,
with each group engine in a Ray actor on the node and devices its plan gives it.

The server process keeps the controller (dispatch), the queues' limits and the client streams;
each group of the system's plan becomes one `GroupWorker` actor (`ray_actor.py`) asking Ray
for the group's devices (`num_gpus`, or `num_cpus` on a CPU cluster), pinned softly to the Ray
node that stands for its plan node. To the controller and the app a group is a `RemoteGroup`:
it dispatches by the same least-load rule and reads the same KV capacities. One pump thread
per group long-polls its actor for tokens; the front door detokenizes them with the service's
own tokenizer (the same `Generation` logic as in-process), so each client sees exactly what
the in-process runtime would send.

Failure: when a poll finds its actor dead, the group's in-flight requests move to another live
group hosting their service, carrying the tokens already streamed (the new group recomputes
their KV and the client's stream goes on), or wait for the group's replacement actor, which
the pump starts at once with the same plan. After `ray_max_restarts` replacements a group is
given up: the requests waiting for it, and new ones for a service left with no group, get a
clear error. Every accepted request ends with its full response or an error; none is lost.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from seallm.controller import Controller
from seallm.costmodel import CostModel
from seallm.executor.base import Batch
from seallm.placement.plan import GroupPlan, Plan
from seallm.request import Request, Status
from seallm.runtime.live import LiveRuntime, ShuttingDown, Stream
from seallm.runtime.ray_actor import Report, Update
from seallm.runtime.ray_group import RemoteGroup, actor_spawner, cluster_nodes, connect
from seallm.runtime.sim import group_kv
from seallm.server.settings import ServeSettings

if TYPE_CHECKING:
    from seallm.engine import GroupEngine
    from seallm.models.loader import LoadedModel

log = logging.getLogger("seallm.runtime.ray")

POLL_S = 0.5  # a poll returns at once when tokens are ready; this bounds an idle one
READY_TIMEOUT_S = 600.0  # an actor's start: a process, imports and its models' weights
HUNG_S = 60.0  # a poll this late past its timeout: the actor hangs, and is replaced


class Unavailable(ShuttingDown):
    """No group can serve the service any more (answered with a 503)."""


class RayRuntime(LiveRuntime):
    """LiveRuntime's interface (submit, abort, drain, stop, snapshot) over Ray actors."""

    def __init__(
        self,
        controller: Controller,
        models: dict[str, LoadedModel],
        max_queue: int | dict[str, int] = 64,
        max_restarts: int = 3,
    ) -> None:
        super().__init__(controller, max_queue)
        self.models = models
        self.max_restarts = max_restarts
        self.groups = cast(dict[int, RemoteGroup], controller.engines)
        self.redispatched = 0  # requests moved off a lost or retired group onto another
        self.replaced = 0  # replacement actors started
        self._planning = threading.Lock()
        self._started = False

    # -- lifecycle ---------------------------------------------------------------------------
    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Block until every actor has loaded its models; raise if one fails or times out."""
        import ray

        groups = list(self.groups.values())
        try:
            infos = ray.get([g.actor.info.remote() for g in groups], timeout=timeout)
        except Exception as err:
            self.kill()
            raise RuntimeError(f"the group actors did not start: {err}") from err
        with self.lock:
            for g, info in zip(groups, infos, strict=True):
                g.where, g.state = info, "up"

    def start(self) -> None:
        with self.lock:
            self._started = True
            groups = list(self.groups.values())
        for g in groups:
            self._start_pump(g)

    def _start_pump(self, group: RemoteGroup) -> None:
        t = threading.Thread(target=self._pump, args=(group,), name=f"seallm-pump-{group.id}")
        t.daemon = True
        t.start()
        self._threads.append(t)

    def apply_plan(self, plan: Plan, timeout: float = READY_TIMEOUT_S) -> None:
        """Serve `plan` from now on, without losing a request. A group it keeps (same node,
        devices and services) keeps its actor; each new group gets an actor, which loads its
        models; groups it drops hand their requests (with their tokens so far) to their
        services' new hosts, then their actors stop, freeing their devices. New groups get
        fresh ids. If a new actor cannot start, nothing changes and this raises."""
        with self._planning:  # one plan change at a time
            self._apply_plan(plan.validate(self.controller.config.cluster), timeout)

    def _apply_plan(self, plan: Plan, timeout: float) -> None:
        import ray

        def shape(g: GroupPlan) -> tuple:
            return (g.node, g.first_gpu, g.size, tuple(sorted(g.services)))

        missing = set(self.controller.hosts) - {s for g in plan.groups for s in g.services}
        if missing:
            raise ValueError(f"the plan places no group for {', '.join(sorted(missing))}")
        with self.lock:
            current = {shape(g.plan): g for g in self.groups.values() if g.state != "failed"}
            next_id = max(self.groups, default=-1) + 1
        kept, fresh = [], []
        for g in plan.groups:
            if shape(g) in current:
                kept.append(current.pop(shape(g)))
            else:
                new = dataclasses.replace(g, id=next_id + len(fresh))
                fresh.append(cast(RemoteGroup, self.controller.engine_factory(new)))
        try:  # the old groups serve on while the new ones load
            infos = ray.get([g.actor.info.remote() for g in fresh], timeout=timeout)
        except Exception as err:
            for g in fresh:
                ray.kill(g.actor, no_restart=True)
            raise RuntimeError(f"the new groups' actors did not start: {err}") from err
        with self.lock:
            retired = [g for g in self.groups.values() if g not in kept]
            for g, info in zip(fresh, infos, strict=True):
                g.where, g.state = info, "up"
            for g in retired:
                g.state = "retired"
                del self.groups[g.id]
            self.groups.update((g.id, g) for g in fresh)
            groups = [*kept, *fresh]
            hosts = cast(dict[str, list[RemoteGroup]], self.controller.hosts)
            for s in hosts:
                hosts[s] = [g for g in groups if s in g.plan.services]
            self.controller.plan = Plan([g.plan for g in groups])
            moved = [r for g in retired for r in (*g.inflight.values(), *g.backlog)]
            for g in retired:
                g.inflight.clear()
                g.backlog.clear()
            self._move(moved, None)
            started = self._started
        for g in retired:
            if g.actor is not None:
                ray.kill(g.actor, no_restart=True)
        for g in fresh if started else ():  # else `start` will
            self._start_pump(g)

    def kill(self) -> None:
        import ray

        for g in self.groups.values():
            if g.actor is not None:
                ray.kill(g.actor, no_restart=True)

    def stop(self) -> None:
        """Stop the actors and the pumps; any request still in flight ends with an error."""
        with self.lock:
            self.draining = self._stopping = True
        self.kill()
        for t in self._threads:
            t.join()
        self._threads.clear()
        with self.lock:
            for stream in list(self.streams.values()):
                self._end(stream)  # not finished: an error event with the shutdown reason

    # -- the asyncio side -------------------------------------------------------------------------
    def submit(self, service: str, generation: Any) -> Stream:
        with self.lock:
            hosts = cast(list[RemoteGroup], self.controller.hosts.get(service, []))
            if hosts and all(g.state == "failed" for g in hosts):
                raise Unavailable(
                    f"every group hosting {service} failed and could not be restarted"
                )
        return super().submit(service, generation)

    def abort(self, stream: Stream, reason: str) -> None:
        with self.lock:
            if stream.ended:
                return
            req = stream.req
            group = self.groups.get(req.group if req.group is not None else -1)
            if group is not None:
                group.forget(req)
            req.status, req.error = Status.ABORTED, reason
            self._end(stream)

    def held(self, service: str) -> int:
        """Accepted, unfinished requests of `service`. Call locked."""
        return sum(1 for s in self.streams.values() if s.req.service == service)

    def queued(self, service: str) -> int:
        """Accepted requests of `service` that have no token yet (waiting for a device)."""
        return sum(
            1 for s in self.streams.values() if s.req.service == service and not s.req.generated
        )

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            services = {
                s: {"queued": self.queued(s), "running": 0, "kv_used_bytes": 0.0}
                for s in self.controller.hosts
            }
            groups = []
            for g in self.groups.values():
                st = g.last
                for s, v in (st.services if st else {}).items():
                    services[s]["running"] += int(v["running"])
                    services[s]["kv_used_bytes"] += v["kv_used_bytes"]
                kv = g.kv.stats()
                groups.append(
                    {
                        "group": g.id,
                        "services": list(g.plan.services),
                        "kv_total_bytes": kv.total_bytes,
                        "kv_used_bytes": kv.used_bytes,
                        "kv_free_pages": kv.free_pages,
                        "preemptions": st.preemptions if st else 0,
                        "swaps": st.swaps if st else 0,
                        "iterations": st.iterations if st else 0,
                        "state": g.state,
                        "restarts": g.restarts,
                        "host": g.where.get("host"),
                    }
                )
            return {
                "services": services,
                "groups": groups,
                "in_flight": len(self.streams),
                "redispatched": self.redispatched,
            }

    # -- the pump threads (one per group) ---------------------------------------------------------
    def _pump(self, group: RemoteGroup) -> None:
        import ray

        while not self._stopping and group.state != "retired":
            try:
                report = ray.get(group.actor.poll.remote(POLL_S), timeout=POLL_S + HUNG_S)
            except ray.exceptions.RayError as err:  # the actor (or its node) died, or hangs
                if not self._lost(group, err) or not self._replace(group, err):
                    return
                continue
            with self.lock:
                self._apply(group, report)

    def _apply(self, group: RemoteGroup, report: Report) -> None:
        """Fold a poll's updates into the streams (locked)."""
        group.last = report.state
        group.kv.last = report.state.kv
        advanced = []
        for u in report.updates:
            req = group.inflight.get(u.id)
            stream = self.streams.get(u.id)
            if req is None or stream is None:  # ended here, or moved to another group
                continue
            if self._advance(group, stream, u):
                advanced.append(req)
        if advanced:
            self._emit(Batch(advanced[0].service, decode=advanced))

    def _advance(self, group: RemoteGroup, stream: Stream, u: Update) -> bool:
        """Append a request's new tokens to its generation; True when it has something to
        emit (the in-process runtime's `_emit` then streams it and ends finished ones)."""
        req, gen = stream.req, stream.generation
        model = self.models[req.service]
        for t in u.tokens:
            if gen.finished:  # a stop string completed across a re-dispatch: the actor ran on
                break
            gen.append(t, model.tokenizer, model.eos_token_ids, model.max_context)
        now = self.now()
        req.generated = len(gen.output_ids)
        if u.tokens and req.first_token_time is None:
            req.first_token_time = now
        if u.error is not None:
            group.inflight.pop(req.id, None)
            self._fail_request(stream, u.error)
            return False
        if not gen.finished and u.finish_reason is not None:
            gen.finish_reason = u.finish_reason  # the worker's decision stands
        if gen.finished:
            if u.finish_reason is None:  # the worker does not know yet: free it there
                group.forget(req)
            group.inflight.pop(req.id, None)
            req.status, req.finish_time = Status.FINISHED, now
        elif u.tokens:
            req.status = Status.RUNNING
        return True

    def _fail_request(self, stream: Stream, error: str) -> None:
        stream.req.status, stream.req.error = Status.ABORTED, error
        self._end(stream)

    # -- failures ------------------------------------------------------------------------------
    def _move(self, reqs: list[Request], fallback: RemoteGroup | None) -> None:
        """Hand requests, with their tokens so far, to the least-loaded live group of their
        service (it recomputes their KV); without one, to `fallback` (a group being replaced,
        which keeps them until its new actor is up), else fail them. Locked."""
        now = self.now()
        for req in reqs:
            stream = self.streams.get(req.id)
            if stream is None:
                continue
            hosts = cast(list[RemoteGroup], self.controller.hosts[req.service])
            live = [g for g in hosts if g.up]
            if live:
                min(live, key=lambda g: g.load).add(req, now)
                self.redispatched += 1
            elif fallback is not None:
                fallback.add(req, now)
            else:
                self._fail_request(
                    stream, f"internal error: no group serves {req.service} any more"
                )

    def _lost(self, group: RemoteGroup, err: Exception) -> bool:
        """The group's actor died: move its requests to live groups of their services, or
        keep them for the replacement actor. False when the group is not to be replaced
        (the runtime stops, or a new plan dropped the group)."""
        import ray

        with self.lock:
            if self._stopping or group.state == "retired":
                return False
            log.warning("group %d: actor lost (%s)", group.id, type(err).__name__)
            if group.actor is not None:  # a hung actor must not go on computing
                ray.kill(group.actor, no_restart=True)
            group.state, group.actor = "down", None
            moved = list(group.inflight.values())
            group.inflight.clear()
            self._move(moved, group)
            return True

    def _replace(self, group: RemoteGroup, err: Exception) -> bool:
        """Start a replacement actor for the group's plan (outside the lock: it loads
        models); on success the backlog goes to it. False when the group is given up."""
        import ray

        info, actor = None, None
        if group.restarts < self.max_restarts:
            group.restarts += 1
            try:
                actor = group.spawn(group.plan)
                with self.lock:
                    group.actor = actor  # so that `stop` kills it, even while it starts
                info = ray.get(actor.info.remote(), timeout=READY_TIMEOUT_S)
            except Exception as start_err:
                log.exception("group %d: replacement failed", group.id)
                err = start_err
        with self.lock:
            done = self._stopping or group.state == "retired"  # `stop` or a new plan
            if info is not None and not done:
                self.replaced += 1
                group.where, group.state = info, "up"
                backlog, group.backlog = group.backlog, []
                self._move(backlog, group)
                log.warning(
                    "group %d: replaced (%d of %d)", group.id, group.restarts, self.max_restarts
                )
                return True
            if actor is not None:
                group.actor = None
                ray.kill(actor, no_restart=True)
            if done:
                return False
            group.state = "failed"
            for req in group.backlog:
                stream = self.streams.get(req.id)
                if stream is not None:
                    self._fail_request(
                        stream,
                        f"internal error: group {group.id} failed ({type(err).__name__}) and "
                        f"could not be replaced; no other group serves {req.service}",
                    )
            group.backlog.clear()
        return False


def ray_runtime(
    settings: ServeSettings,
    models: dict[str, LoadedModel],
    plan: Plan | None = None,
    announce: Callable[[str], None] = print,
) -> RayRuntime:
    """Connect to Ray, place the services with the system's placement over the config's
    cluster (or `plan`), start one actor per group and wait until every one is serving."""
    connect(settings.server.ray_address)
    config, system = settings.config, settings.system
    cost = CostModel(config.cluster.device_spec)
    if plan is None:
        from seallm.placement import get_placement, service_loads

        plan = get_placement(system.placement)(config, cost, service_loads(config))
    spawn = actor_spawner(settings, cluster_nodes(settings, plan))

    def remote_group(group: GroupPlan) -> GroupEngine:
        specs = {s: models[s].spec for s in group.services}
        layout = group_kv(system, group, specs, settings.kv_bytes, config)
        return cast(
            "GroupEngine", RemoteGroup(group, specs, layout, system.scheduler, config.engine, spawn)
        )

    controller = Controller(config, system, cost, remote_group, plan=plan, record=False)
    runtime = RayRuntime(
        controller, models, settings.server.max_queue, settings.server.ray_max_restarts
    )
    t0 = time.perf_counter()
    runtime.wait_ready()
    for g in runtime.groups.values():
        g.scheduler.name = g.where.get("scheduler", g.scheduler.name)
        announce(
            f"group {g.id} ({', '.join(g.plan.services)}) on {g.where.get('host')} "
            f"pid {g.where.get('pid')}"
        )
    announce(f"{len(runtime.groups)} Ray actor(s) ready in {time.perf_counter() - t0:.1f} s")
    return runtime
