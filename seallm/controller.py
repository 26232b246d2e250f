"""The cluster manager: applies a placement plan, dispatches requests, tracks outcomes.

The controller is clock-free: the simulator and the live runtime both call `submit` when a
request arrives and `finish` when an engine completes one.
"""

from __future__ import annotations

from collections.abc import Callable

from seallm.config import Config, SystemSpec
from seallm.costmodel import CostModel
from seallm.engine import GroupEngine
from seallm.placement import Plan, get_placement, service_loads
from seallm.placement.demand import reference_cost
from seallm.placement.plan import GroupPlan
from seallm.request import Request, Status

EngineFactory = Callable[[GroupPlan], GroupEngine]


class Controller:
    def __init__(
        self,
        config: Config,
        system: SystemSpec,
        cost: CostModel,
        engine_factory: EngineFactory,
        rate_scale: float = 1.0,
        plan: Plan | None = None,
    ) -> None:
        self.config = config
        self.system = system
        self.cost = cost
        self.loads = service_loads(config, rate_scale)
        self.plan = plan or get_placement(system.placement)(config, cost, self.loads)
        self.engines: dict[int, GroupEngine] = {g.id: engine_factory(g) for g in self.plan.groups}
        self.hosts: dict[str, list[GroupEngine]] = {s.name: [] for s in config.services}
        for g in self.plan.groups:
            for s in g.services:
                self.hosts[s].append(self.engines[g.id])
        self.requests: list[Request] = []
        self.reference = {
            s.name: reference_cost(s.model_spec, config, cost) for s in config.services
        }

    def submit(self, req: Request, now: float) -> GroupEngine | None:
        """Accept `req` onto the least-loaded group hosting its service, or reject it with a
        reason. Every submitted request is recorded either way."""
        self.requests.append(req)
        engines = self.hosts.get(req.service)
        if engines is None:
            return self._reject(req, f"unknown service {req.service!r}")
        if not engines:
            return self._reject(req, f"service {req.service!r} is not placed on any group")
        model = self.config.service(req.service).model_spec
        total = req.prompt_tokens + req.output_tokens
        if total > model.max_context:
            return self._reject(
                req, f"{total} tokens exceed {model.name}'s context of {model.max_context}"
            )
        engine = min(engines, key=lambda e: e.load)
        if total > engine.kv.capacity_tokens(req.service):
            return self._reject(req, f"{total} tokens exceed the group's KV capacity")
        req.standalone = self.reference[req.service].standalone_latency(
            req.prompt_tokens, req.output_tokens
        )
        engine.add(req, now)
        return engine

    def _reject(self, req: Request, reason: str) -> None:
        req.status = Status.REJECTED
        req.error = reason
        return None
