"""The cluster manager: applies a placement plan, dispatches requests, tracks outcomes.

The controller is clock-free: the simulator and the live runtime both call `submit` when a
request arrives and `finish` when an engine completes one.

With a replacement policy (system.replacement: adaptive or fixed) it also runs the service
monitor and the placement controller: at each check (`advance`, at `next_event`) the policy
(placement/replacement.py) decides, and a re-placement is applied here: groups that change
stop admitting and retire when their current step ends (`step_done`), the new groups load
the weights they lack (one model after another, `CostModel.load_time`) and serve each model
once it is loaded. The runtime calls `advance` at `next_event` and `step_done` after every
engine step. Requests on retiring groups move to the new hosts (placement/migration.py says
how); a request whose service has no host ready waits in `pending`. None is lost: each one
finishes, or is rejected or aborted with a reason.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass

from seallm.config import Config, SystemSpec
from seallm.costmodel import CostModel
from seallm.engine import GroupEngine
from seallm.monitor import ServiceMonitor
from seallm.placement import Plan, get_placement, place, service_loads
from seallm.placement.alpaserve_admission import get_admission
from seallm.placement.demand import reference_cost
from seallm.placement.migration import GroupChange, Migration, Occupancy, gpus_of
from seallm.placement.plan import GroupPlan, PlanEvaluator
from seallm.placement.replacement import (
    PROBES,
    CheckState,
    PlanContext,
    Replace,
    first_check,
    get_policy,
)
from seallm.request import Request, Status

EngineFactory = Callable[[GroupPlan], GroupEngine]


@dataclass
class CheckRecord:
    time: float
    replaced: bool
    next_interval: float
    reason: str
    gain: float = 0.0  # estimated request-seconds saved over the interval
    cost: float = 0.0  # estimated request-seconds the move adds
    drift: float = 0.0  # the window's rate mix against the plan's (relative L1 distance)
    recent_drift: float = 0.0  # the recent rates against the previous check's
    noise: float = 0.0  # the drift the window's counting noise alone would show


@dataclass
class MoveRecord:
    time: float
    groups: int  # groups (re)built
    retired: int  # groups retired
    models_loaded: int
    load_s: float  # seconds of weight loading, summed over groups
    moved: int = 0  # requests handed from a retiring group to another


@dataclass
class _Start:
    """A new group waiting for its GPUs (held by retiring groups) before it loads."""

    change: GroupChange
    engine: GroupEngine
    waiting_on: set[int]


class Controller:
    def __init__(
        self,
        config: Config,
        system: SystemSpec,
        cost: CostModel,
        engine_factory: EngineFactory,
        rate_scale: float = 1.0,
        plan: Plan | None = None,
        record: bool = True,
        evaluate: PlanEvaluator | None = None,
    ) -> None:
        self.config = config
        self.system = system
        self.cost = cost
        self.loads = service_loads(config, rate_scale)
        self._evaluate = evaluate  # simulates plans: the placement's finalists, moves' gains
        self.plan = plan or place(system.placement, config, cost, self.loads, evaluate)
        self.engines: dict[int, GroupEngine] = {g.id: engine_factory(g) for g in self.plan.groups}
        self.hosts: dict[str, list[GroupEngine]] = {s.name: [] for s in config.services}
        for g in self.plan.groups:
            for s in g.services:
                self.hosts[s].append(self.engines[g.id])
        self.requests: list[Request] = []
        self.record = record  # keep every submitted request (results); a live server does not
        self.reference = {
            s.name: reference_cost(s.model_spec, config, cost) for s in config.services
        }
        # Arrivals the system drops at the door (system.admission; AlpaServe's SLO-aware drop).
        self.admission = get_admission(system.admission, config, self.loads, self.reference)
        self._init_replacement(engine_factory)

    def submit(self, req: Request, now: float) -> GroupEngine | None:
        """Accept `req` onto the least-loaded group hosting its service, or reject it with a
        reason. Every submitted request is recorded either way (when `record`)."""
        if self.record:
            self.requests.append(req)
        engines = self.hosts.get(req.service)
        if engines is None:
            return self._reject(req, f"unknown service {req.service!r}")
        if self.monitor is not None:
            self.monitor.arrived(req.service, now, req.prompt_tokens)
        if not engines and not self._will_host(req.service):
            return self._reject(req, f"service {req.service!r} is not placed on any group")
        model = self.config.service(req.service).model_spec
        total = req.prompt_tokens + req.output_tokens
        if total > model.max_context:
            return self._reject(
                req, f"{total} tokens exceed {model.name}'s context of {model.max_context}"
            )
        req.standalone = self.reference[req.service].standalone_latency(
            req.prompt_tokens, req.output_tokens
        )
        if self.admission is not None and engines:  # the group _dispatch will choose
            reason = self.admission(req, min(engines, key=lambda e: e.load), now)
            if reason is not None:
                return self._reject(req, reason)
        return self._dispatch(req, now)

    def _dispatch(self, req: Request, now: float) -> GroupEngine | None:
        """Hand `req` to the least-loaded ready host of its service; while its hosts are
        still loading the model, hold it in `pending`."""
        engines = self.hosts[req.service]
        if not engines:
            if not self._will_host(req.service):
                return self._reject(req, f"service {req.service!r} is no longer placed")
            req.status, req.group = Status.QUEUED, None
            self.pending.setdefault(req.service, []).append(req)
            return None
        engine = min(engines, key=lambda e: e.load)
        total = req.prompt_tokens + req.output_tokens
        if total > engine.kv.capacity_tokens(req.service):
            return self._reject(req, f"{total} tokens exceed the group's KV capacity")
        engine.add(req, now)
        return engine

    def _reject(self, req: Request, reason: str) -> None:
        req.status = Status.REJECTED
        req.error = reason
        return None

    # -- re-placement -------------------------------------------------------------------------
    def _init_replacement(self, engine_factory: EngineFactory) -> None:
        rp = self.config.replacement
        self.engine_factory = engine_factory
        self.policy = get_policy(self.system.replacement)
        self.replacing = self.system.replacement not in (None, "none")
        self.monitor = ServiceMonitor(self.hosts, rp.window_s) if self.replacing else None
        self._context = PlanContext(
            self.config,
            self.cost,
            get_placement(self.system.placement),
            rounds=self.system.engine == "rounds",
            evaluate=self._evaluate,
        )
        self.pending: dict[str, list[Request]] = {}
        self.checks: list[CheckRecord] = []
        self.moves: list[MoveRecord] = []
        self.retired: list[GroupEngine] = []  # engines that served and gave their GPUs back
        self._retiring: dict[int, tuple[GroupEngine, MoveRecord]] = {}
        self._starting: list[_Start] = []
        self._group_of = {g.id: g for g in self.plan.groups}  # every engine's GPUs, by id
        self._ready: list[tuple[float, int, GroupEngine, str]] = []  # (time, seq, engine, svc)
        self._seq = 0
        self._next_id = max((g.id for g in self.plan.groups), default=-1) + 1
        self._next_check = first_check(self.system.replacement, rp)
        self._probe = PROBES.get(self.system.replacement or "none")
        self._next_probe = rp.min_interval_s if self._probe is not None else math.inf
        self._last_check = 0.0
        self._plan_rates = {s: ld.rate for s, ld in self.loads.items()}
        self._check_rates = dict(self._plan_rates)
        self._update_next()

    @property
    def moving(self) -> bool:
        """Whether retiring groups still hold GPUs (requests may move at any step's end)."""
        return bool(self._retiring)

    def _will_host(self, service: str) -> bool:
        return any(service in st.change.group.services for st in self._starting) or any(
            s == service for *_, s in self._ready
        )

    def _update_next(self) -> None:
        self.next_event = min(
            self._next_check, self._next_probe, self._ready[0][0] if self._ready else math.inf
        )

    def advance(self, now: float) -> list[GroupEngine]:
        """Run what is due at `now` (a check, models becoming ready); returns the engines
        that received requests."""
        touched: list[GroupEngine] = []
        if self._next_probe <= now < self._next_check:
            assert self._probe is not None and self.monitor is not None
            recent = self.config.replacement.recent_s
            if self._probe(
                self.config.replacement, self.monitor.drift(now, self._check_rates, recent)
            ):
                self._next_check = now
        if self._next_check <= now:
            touched += self.check(now)
        while self._next_probe <= now:
            self._next_probe += self.config.replacement.min_interval_s
        if self._next_probe >= self.config.duration_s:
            self._next_probe = math.inf
        touched += self._serve_ready(now)
        self._update_next()
        return touched

    def step_done(
        self, engine: GroupEngine, finished: list[Request], now: float
    ) -> list[GroupEngine]:
        """An engine ended a step: observe its finished requests; a retiring engine hands
        its requests over. Returns the engines that received requests."""
        if self.monitor is not None:
            for r in finished:
                self.monitor.finished(r.service, now, r.generated)
        if engine.id not in self._retiring:
            return []
        touched = self._retire_step(engine, now)
        self._update_next()
        return touched

    def check(self, now: float) -> list[GroupEngine]:
        """A replacement check: ask the policy, apply its decision."""
        assert self.monitor is not None
        recent = self.config.replacement.recent_s
        loads = self.monitor.loads(now, self.loads)
        state = CheckState(
            now,
            now - self._last_check,
            self.plan,
            loads,
            self.monitor.loads(now, self.loads, recent),
            self.monitor.drift(now, self._plan_rates),
            self.monitor.drift(now, self._check_rates, recent),
            {e.id: self._occupancy(e) for e in self.engines.values()},
            self._next_id,
        )
        decision = self.policy(self.config.replacement, self._context, state)
        basis = decision.basis or {s: ld.rate for s, ld in loads.items()}
        self._last_check, self._check_rates = now, dict(basis)
        nxt = now + decision.interval
        self._next_check = nxt if nxt < self.config.duration_s else math.inf
        cost = decision.cost.delay if decision.cost is not None else 0.0
        replaced = isinstance(decision, Replace)
        self.checks.append(
            CheckRecord(
                now,
                replaced,
                decision.interval,
                decision.reason,
                decision.gain,
                cost,
                state.since_plan.distance,
                state.since_check.distance,
                state.since_plan.noise,
            )
        )
        if not isinstance(decision, Replace):
            return []
        self._plan_rates = dict(basis)
        return self.apply(decision.migration, now)

    def apply(self, migration: Migration, now: float) -> list[GroupEngine]:
        """Start moving to `migration.plan` at `now`."""
        m = migration
        record = MoveRecord(
            now, len(m.changes), len(m.retired), sum(len(c.loads) for c in m.changes), m.load_s
        )
        self.moves.append(record)
        self.plan = m.plan
        self._next_id = max(self._next_id, *(g.id + 1 for g in m.plan.groups))
        for gid in m.retired:
            e = self.engines.pop(gid)
            for s in e.models:
                if e in self.hosts[s]:  # a group retired before it loaded all its models
                    self.hosts[s].remove(e)
            self._retiring[gid] = (e, record)
        # A group of an earlier move may still be waiting for GPUs or loading: it stops too.
        gone = set(m.retired)
        self._starting = [st for st in self._starting if st.engine.id not in gone]
        self._ready = [x for x in self._ready if x[2].id not in gone]
        heapq.heapify(self._ready)
        for c in m.changes:
            e = self.engine_factory(c.group)
            self.engines[e.id] = e
            self._group_of[e.id] = c.group
            gpus = gpus_of(c.group)  # it waits for every retiring group on its GPUs
            holders = {r for r in self._retiring if gpus_of(self._group_of[r]) & gpus}
            self._starting.append(_Start(c, e, holders))
        touched = self._begin_loads(now)
        for gid in m.retired:
            if gid in self._retiring:
                touched += self._retire_step(self._retiring[gid][0], now)
        touched += self._serve_ready(now)
        self._update_next()
        return touched

    def _occupancy(self, e: GroupEngine) -> Occupancy:
        reqs = [*e.waiting, *e.running, *e.swapped]
        release = 0.0
        if self.config.replacement.on_move == "drain":  # running requests finish in place
            release = max(
                (
                    max(0.0, e.profiles[r.service].mean_output - r.generated)
                    * e.profiles[r.service].token_time
                    for r in (*e.running, *e.swapped)
                ),
                default=0.0,
            )
        return Occupancy(
            tuple((r.service, r.context_tokens if r.generated else 0) for r in reqs), release
        )

    def _retire_step(self, e: GroupEngine, now: float) -> list[GroupEngine]:
        """A retiring engine between steps: hand its requests over (all of them, or only the
        queued ones when draining); once it holds none, free its GPUs."""
        if e.busy:
            return []
        _, record = self._retiring[e.id]
        everything = self.config.replacement.on_move == "migrate"
        moved = [*e.waiting, *e.running, *e.swapped] if everything else list(e.waiting)
        for r in moved:
            _withdraw(e, r)
        record.moved += len(moved)
        touched = [t for r in moved if (t := self._dispatch(r, now)) is not None]
        if e.has_work:
            return [*touched, e]
        del self._retiring[e.id]
        self.retired.append(e)
        for st in self._starting:
            st.waiting_on.discard(e.id)
        return touched + self._begin_loads(now)

    def _begin_loads(self, now: float) -> list[GroupEngine]:
        """New groups whose GPUs are free start loading: schedule each model's ready time."""
        free = [st for st in self._starting if not st.waiting_on]
        self._starting = [st for st in self._starting if st.waiting_on]
        for st in free:
            for s, offset in st.change.ready_offsets().items():
                self._seq += 1
                heapq.heappush(self._ready, (now + offset, self._seq, st.engine, s))
        return self._serve_ready(now) if free else []

    def _serve_ready(self, now: float) -> list[GroupEngine]:
        """Models loaded by `now` start serving; held requests go to the hosts now ready (or
        are rejected, with the reason, if their service lost every host)."""
        while self._ready and self._ready[0][0] <= now:
            _, _, e, s = heapq.heappop(self._ready)
            self.hosts[s].append(e)
        touched = []
        for s in [s for s in self.pending if self.hosts[s] or not self._will_host(s)]:
            for r in self.pending.pop(s):
                t = self._dispatch(r, now)
                if t is not None:
                    touched.append(t)
        return touched


def _withdraw(e: GroupEngine, r: Request) -> None:
    """Take `r` out of engine `e` between steps, keeping its progress: it will recompute its
    context wherever it goes next (its device or host KV stays behind)."""
    if r in e.waiting:
        e.waiting.remove(r)
    elif r in e.running:
        e.running.remove(r)
        e.running_count[r.service] -= 1
    else:
        e.swapped.remove(r)
        e.host_used -= r.context_tokens * e.models[r.service].kv_bytes_per_token
    e.kv.release(r)
    release = getattr(e.executor, "release", None)  # executors with per-request state
    if release is not None:
        release(r)
    e.scheduler.release(r)
    r.status, r.group = Status.QUEUED, None
