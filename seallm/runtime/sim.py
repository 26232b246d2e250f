"""The virtual-time runtime: drives the Controller and GroupEngines with a simulated clock.

Events are request arrivals and step completions. An idle engine with work starts a step at
the current time; the step's batch may fuse identical decode iterations up to the next
arrival of one of the engine's services (its horizon), which gives the same result as running
them one by one (a test checks this) at a fraction of the cost.

With a replacement policy the controller's own events (checks, models becoming ready after a
load) join the loop at `Controller.next_event`; fused steps end at them too, and while
retiring groups still hold GPUs (requests may move at any step's end) steps are not fused.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from seallm.colocation import round_pricer
from seallm.config import ENGINES, Config, SystemSpec
from seallm.controller import Controller
from seallm.costmodel import CostModel
from seallm.engine import GroupEngine
from seallm.engine_spatial import SpatialEngine
from seallm.executor.sim import SimExecutor
from seallm.executor.spatial import make_spatial_executor
from seallm.kvcache import PagedKVCache, StaticKVCache, UnifiedKVCache
from seallm.placement.demand import kv_bytes
from seallm.placement.plan import GroupPlan, Plan, PlanEvaluator, PlanScore
from seallm.profile import service_profiles
from seallm.request import Request
from seallm.scheduling import make_scheduler
from seallm.specs import ModelSpec
from seallm.workload import TraceRecord


@dataclass
class SimResult:
    system: SystemSpec
    requests: list[Request]
    end_time: float  # simulated seconds at the end of the run
    wall_seconds: float
    controller: Controller


def group_kv(
    system: SystemSpec, group: GroupPlan, specs: dict[str, ModelSpec], pool: float, config: Config
) -> PagedKVCache:
    """The group's KV cache in the system's layout (the simulator's and the live engines')."""
    if system.kv == "unified":
        return UnifiedKVCache(specs, group.size, pool, config.engine.page_bytes)
    if system.kv == "static":
        shares = (
            dict(zip(group.services, group.kv_shares, strict=True)) if group.kv_shares else None
        )
        return StaticKVCache(specs, group.size, pool, config.engine.block_tokens, shares)
    raise ValueError(f"kv: {system.kv!r} is not one of static, unified")


def make_kv(config: Config, system: SystemSpec, group: GroupPlan) -> PagedKVCache:
    models = {s: config.service(s).model_spec for s in group.services}
    pool = config.engine.kv_pool_bytes or kv_bytes(list(models.values()), group.size, config)
    return group_kv(system, group, models, pool, config)


def sim_engine_factory(
    config: Config, system: SystemSpec, cost: CostModel, fuse: bool = True
) -> Callable[[GroupPlan], GroupEngine]:
    if system.engine not in ENGINES:
        raise ValueError(f"engine: {system.engine!r} is not one of {', '.join(ENGINES)}")

    def build(group: GroupPlan) -> GroupEngine:
        models = {s: config.service(s).model_spec for s in group.services}
        costs = {s: cost.for_model(m, group.size) for s, m in models.items()}
        profiles = service_profiles(config, costs)
        engine_cls, executor, rounds = GroupEngine, SimExecutor(costs), None
        if system.engine == "rounds":
            rounds = round_pricer(cost, models, group.size)
            executor = SimExecutor(costs, rounds)
        elif system.engine in ("spatial", "spatial-ideal"):  # MuxServe: processes share GPUs
            engine_cls = SpatialEngine
            shares = (
                dict(zip(group.services, group.decode_shares, strict=True))
                if group.decode_shares
                else None
            )
            executor = make_spatial_executor(system.engine, cost, models, group.size, shares)
        return engine_cls(
            group.id,
            models,
            group.size,
            make_scheduler(system.scheduler, profiles, config.engine, rounds),
            make_kv(config, system, group),
            executor,
            config.engine,
            profiles,
            preemption=system.preemption,
            fuse=fuse,
            swap_time=lambda r: cost.swap_time(models[r.service], group.size, r.context_tokens),
        )

    return build


def simulate(
    config: Config,
    system: SystemSpec,
    records: Sequence[TraceRecord],
    cost: CostModel | None = None,
    rate_scale: float = 1.0,
    fuse: bool = True,
    plan: Plan | None = None,
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    """Run `records` (arrivals within config.duration_s) through `system`."""
    wall0 = time.perf_counter()
    cost = cost or CostModel(config.cluster.device_spec)
    evaluate = None
    if config.placement_check_s > 0:
        evaluate = simulation_evaluator(config, system, cost, rate_scale)
    ctl = Controller(
        config,
        system,
        cost,
        sim_engine_factory(config, system, cost, fuse),
        rate_scale,
        plan,
        evaluate=evaluate,
    )
    reqs = [
        Request(i, r.service, r.prompt_tokens, r.output_tokens, r.arrival_s)
        for i, r in enumerate(records)
        if r.arrival_s <= config.duration_s
    ]
    # Per-service arrival times give each engine its horizon (next arrival it may receive).
    times: dict[str, list[float]] = {s.name: [] for s in config.services}
    for r in reqs:
        times.setdefault(r.service, []).append(r.arrival)
    nxt = {s: 0 for s in times}
    replacing = ctl.replacing

    def horizon(engine: GroupEngine) -> float:
        h = min((times[s][nxt[s]] if nxt[s] < len(times[s]) else math.inf) for s in engine.models)
        if replacing:
            return now if ctl.moving else min(h, ctl.next_event)
        return h

    end_limit = config.duration_s + config.drain_seconds
    events: list[tuple[float, int, GroupEngine, object, object]] = []
    dirty: dict[int, GroupEngine] = {}
    seq = 0
    now = 0.0
    i = 0
    last_progress = 0.0
    while True:
        t_arr = reqs[i].arrival if i < len(reqs) else math.inf
        t_step = events[0][0] if events else math.inf
        t_next = min(t_arr, t_step, ctl.next_event)
        if dirty and t_next > now:
            for e in dirty.values():
                batch = e.plan(now, horizon(e))
                if batch is not None:
                    out = e.execute(batch, now)
                    seq += 1
                    heapq.heappush(events, (now + out.duration, seq, e, batch, out))
            dirty.clear()
            continue
        if t_next > end_limit:
            break
        now = t_next
        if t_arr <= now:
            r = reqs[i]
            i += 1
            nxt[r.service] += 1
            e = ctl.submit(r, now)
            if e is not None and not e.busy:
                dirty[e.id] = e
        elif t_step <= now:
            _, _, e, batch, out = heapq.heappop(events)
            e.commit(batch, out, now)
            if replacing:
                for t in ctl.step_done(e, out.finished, now):
                    if not t.busy:
                        dirty[t.id] = t
            if e.has_work:
                dirty[e.id] = e
        else:
            for t in ctl.advance(now):
                if not t.busy:
                    dirty[t.id] = t
        if progress is not None and now - last_progress >= 1.0:
            progress(now)
            last_progress = now
    end = end_limit if events or i < len(reqs) or ctl.next_event < math.inf else now
    return SimResult(system, reqs, end, time.perf_counter() - wall0, ctl)


def simulation_evaluator(
    config: Config, system: SystemSpec, cost: CostModel, rate_scale: float = 1.0
) -> PlanEvaluator:
    """Scores a plan by simulating `system` on it over `placement_check_s` seconds of the
    expected workload: the deployment's arrival process and lengths with another seed (the
    placement sees what traffic to expect, not the arrivals it will be measured on), without
    re-placement; or, given per-service rates (the service monitor's), that process at those
    rates, without the deployment's scheduled shifts. Requests left unfinished count at the
    end of the check."""
    seconds = config.placement_check_s
    guide = dataclasses.replace(
        config,
        duration_s=min(seconds, config.duration_s),
        drain_s=seconds,
        seed=config.seed + 1,
        placement_check_s=0.0,
    )
    expected = guide.records(rate_scale)
    checked = dataclasses.replace(system, replacement=None)
    slo = {s.name: s.slo_scale for s in config.services}

    def evaluate(plan: Plan, rates: Mapping[str, float] | None) -> PlanScore:
        cfg, records, scale = guide, expected, rate_scale
        if rates is not None:
            cfg = at_rates(guide, rates)
            records, scale = cfg.records(), 1.0
        res = simulate(cfg, checked, records, cost, scale, plan=plan)
        reqs = [r for r in res.requests if r.output_tokens > 0]
        if not reqs:
            return PlanScore(0.0, 0.0, 0.0)
        met = norm = latency = 0.0
        for r in reqs:
            end = r.finish_time if r.finish_time is not None else res.end_time
            latency += end - r.arrival
            norm += (end - r.arrival) / r.output_tokens
            met += r.finish_time is not None and end - r.arrival <= slo[r.service] * r.standalone
        return PlanScore(
            max(0.0, config.slo_target - met / len(reqs)),
            norm / len(reqs),
            latency / cfg.duration_s,
        )

    return evaluate


def at_rates(config: Config, rates: Mapping[str, float]) -> Config:
    """The deployment's arrival process at these per-service rates, with no scheduled shift."""
    total = sum(rates.values())
    services = [dataclasses.replace(s, weight=rates.get(s.name, 0.0)) for s in config.services]
    workload = dataclasses.replace(
        config.workload,
        rate=max(total, 1e-6),
        shift_times=[],
        shift_period_s=0.0,
        rate_schedule=[],
        bursts=[],
    )
    return dataclasses.replace(config, services=services, workload=workload)
