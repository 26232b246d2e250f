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
from seallm.placement.plan import GroupPlan, Plan
from seallm.placement.two_stage import place_two_stage

Placement = Callable[[Config, CostModel, dict[str, ServiceLoad]], Plan]

PLACEMENTS: dict[str, Placement] = {
    "dedicated": place_dedicated,
    "colocate": place_colocated,
    "two-stage": place_two_stage,
    "alpaserve": place_alpaserve,
    "muxserve": place_muxserve,
}


def get_placement(name: str) -> Placement:
    if name not in PLACEMENTS:
        raise ValueError(f"placement: {name!r} is not one of {', '.join(sorted(PLACEMENTS))}")
    return PLACEMENTS[name]


__all__ = [
    "PLACEMENTS",
    "GroupPlan",
    "Placement",
    "Plan",
    "ServiceLoad",
    "get_placement",
    "service_loads",
]
