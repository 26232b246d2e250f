"""Placement algorithms behind one signature: (config, cost model, service loads) -> Plan."""

from __future__ import annotations

from collections.abc import Callable

from seallm.config import Config
from seallm.costmodel import CostModel
from seallm.placement.alpaserve import place_alpaserve
from seallm.placement.colocate import place_colocated
from seallm.placement.dedicated import place_dedicated
from seallm.placement.demand import ServiceLoad, service_loads
from seallm.placement.muxserve import place_muxserve
from seallm.placement.plan import GroupPlan, Plan, PlanEvaluator
from seallm.placement.two_stage import place_two_stage

Placement = Callable[[Config, CostModel, dict[str, ServiceLoad]], Plan]

PLACEMENTS: dict[str, Placement] = {
    "dedicated": place_dedicated,
    "colocate": place_colocated,
    "two-stage": place_two_stage,
    "alpaserve": place_alpaserve,
    "muxserve": place_muxserve,
}


# Placements that choose between their finalists by simulating them, given an evaluator.
SIMULATION_CHECKED = {"two-stage": place_two_stage}


def get_placement(name: str) -> Placement:
    if name not in PLACEMENTS:
        raise ValueError(f"placement: {name!r} is not one of {', '.join(sorted(PLACEMENTS))}")
    return PLACEMENTS[name]


def place(
    name: str,
    config: Config,
    cost: CostModel,
    loads: dict[str, ServiceLoad],
    evaluate: PlanEvaluator | None = None,
) -> Plan:
    """The named placement's plan; `evaluate` (a short simulation) decides between the
    finalists of the placements that check theirs by simulation."""
    if evaluate is not None and name in SIMULATION_CHECKED:
        return SIMULATION_CHECKED[name](config, cost, loads, evaluate=evaluate)
    return get_placement(name)(config, cost, loads)


__all__ = [
    "PLACEMENTS",
    "GroupPlan",
    "Placement",
    "Plan",
    "PlanEvaluator",
    "ServiceLoad",
    "get_placement",
    "place",
    "service_loads",
]
