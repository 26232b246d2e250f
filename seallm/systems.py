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
        SystemSpec(
            "alpaserve",
            placement="alpaserve",
            scheduler="fcfs",
            kv="static",
            admission="slo-drop",
            description="AlpaServe (OSDI'23): model-parallel groups with greedy selective "
            "replication maximizing SLO attainment, FCFS across co-located models, static KV, "
            "requests predicted to miss their SLO dropped",
        ),
        SystemSpec(
            "muxserve",
            placement="muxserve",
            scheduler="adbs",
            kv="unified",
            engine="spatial",
            description="MuxServe (ICML'24): enumeration + greedy placement by computation "
            "demand, ADBS (prefill first, round-robin KV quotas), unified KV, prefill and "
            "decode of co-located models sharing the GPUs spatially",
        ),
        SystemSpec(
            "muxserve-ideal",
            placement="muxserve",
            scheduler="adbs",
            kv="unified",
            engine="spatial-ideal",
            description="upper bound: muxserve with fluid overlap (no SM budget, every job "
            "at full speed, compute and bandwidth split perfectly)",
        ),
        SystemSpec(
            "seallm",
            engine="rounds",
            placement="two-stage",
            scheduler="slack",
            kv="unified",
            preemption="cost",
            replacement="adaptive",
            description="SeaLLM: services share groups and run in rounds; slack-aware "
            "doubling-budget priority scheduling, unified KV cache, swap-or-recompute "
            "preemption, adaptive re-placement",
        ),
        SystemSpec(
            "seallm-noreplace",
            engine="rounds",
            placement="two-stage",
            scheduler="slack",
            kv="unified",
            preemption="cost",
            replacement="none",
            description="ablation: seallm keeping its initial placement (no re-placement)",
        ),
        SystemSpec(
            "seallm-fixed-interval",
            engine="rounds",
            placement="two-stage",
            scheduler="slack",
            kv="unified",
            preemption="cost",
            replacement="fixed",
            description="ablation: seallm re-placing every replacement.fixed_interval_s "
            "whenever the fresh plan is estimated better, whatever the move costs",
        ),
        SystemSpec(
            "seallm-fcfs",
            engine="rounds",
            placement="two-stage",
            scheduler="fcfs",
            kv="unified",
            description="ablation: seallm with FCFS scheduling (vLLM's) instead of DB",
        ),
        SystemSpec(
            "seallm-nodoubling",
            engine="rounds",
            placement="two-stage",
            scheduler="fixed-budget",
            kv="unified",
            preemption="cost",
            description="ablation: seallm with fixed budgets per level instead of doubling",
        ),
        SystemSpec(
            "seallm-lhat-request",
            engine="rounds",
            placement="two-stage",
            scheduler="doubling-budget-lhat-request",
            kv="unified",
            preemption="cost",
            description="ablation: O_r normalized by the request's standalone estimate",
        ),
        SystemSpec(
            "seallm-no-prefill-first",
            engine="rounds",
            placement="two-stage",
            scheduler="doubling-budget-no-prefill-first",
            kv="unified",
            preemption="cost",
            description="ablation: new requests start at level 0 (no skip-join for prefill)",
        ),
        SystemSpec(
            "seallm-db",
            engine="rounds",
            placement="two-stage",
            scheduler="doubling-budget",
            kv="unified",
            preemption="cost",
            replacement="adaptive",
            description="ablation: seallm with the doubling-budget order alone (no slack)",
        ),
        SystemSpec(
            "seallm-slack-keep-late",
            engine="rounds",
            placement="two-stage",
            scheduler="slack-keep-late",
            kv="unified",
            preemption="cost",
            replacement="adaptive",
            description="ablation: seallm keeping requests past their deadline urgent",
        ),
        SystemSpec(
            "seallm-slack-budget-prefill",
            engine="rounds",
            placement="two-stage",
            scheduler="slack-budget-prefill",
            kv="unified",
            preemption="cost",
            replacement="adaptive",
            description="ablation: seallm ordering new requests by DB's budget, not deadline",
        ),
        SystemSpec(
            "seallm-temporal",
            placement="two-stage",
            scheduler="slack",
            kv="unified",
            preemption="cost",
            replacement="adaptive",
            description="ablation: seallm running one model per step (no rounds)",
        ),
        SystemSpec(
            "seallm-static-kv",
            engine="rounds",
            placement="two-stage",
            scheduler="slack",
            kv="static",
            preemption="cost",
            description="ablation: seallm with static per-model KV partitions",
        ),
        SystemSpec(
            "seallm-oracle",
            engine="rounds",
            placement="two-stage",
            scheduler="oracle",
            kv="unified",
            preemption="cost",
            description="upper bound: seallm knowing output lengths, shortest remaining first",
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
