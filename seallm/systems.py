"""Named serving systems, built from the same parts: seallm, its baselines and ablations."""

from __future__ import annotations

from seallm.config import ConfigError, SystemSpec

SYSTEMS: dict[str, SystemSpec] = {
    s.name: s
    for s in [
        SystemSpec(
            "vllm",
            placement="dedicated",
            scheduler="fcfs",
            kv="static",
            description="vLLM-style dedicated serving: each service on its own groups sized "
            "to its load, FCFS continuous batching, static paged KV, no re-placement",
        ),
    ]
}


def get_system(name: str) -> SystemSpec:
    if name not in SYSTEMS:
        raise ConfigError(f"system: {name!r} is not one of {', '.join(SYSTEMS)}, all")
    return SYSTEMS[name]


def resolve_systems(arg: str) -> list[SystemSpec]:
    """`all`, one name, or a comma-separated list."""
    if arg == "all":
        return list(SYSTEMS.values())
    return [get_system(n.strip()) for n in arg.split(",") if n.strip()]
