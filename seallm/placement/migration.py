"""From one placement plan to the next: which groups change, what loads, what a move costs.

A candidate plan comes from a placement search that knows nothing of the current one, so it
is first aligned to it: nodes are interchangeable and a node's groups may sit at any aligned
offset, so each candidate node is mapped onto a current node, and each of its groups onto a
position, to keep as many groups and loaded weights where they are as possible. Then:

- a group with the same GPUs and services as a current group is unchanged: its engine goes
  on serving, untouched;
- any other group is (re)built: the current groups on its GPUs stop admitting and retire;
  once their GPUs are free, it loads the weights it lacks, one model after another from host
  memory or disk (`CostModel.load_time`). Weights already on the same GPUs with the same
  tensor parallelism (a service kept on a group of the same span) need no load.

Requests on a retiring group are never dropped (the controller acts; see controller.py):
- "migrate" (default): at the end of its current step the group hands every request to a new
  host of its service; a request that had started recomputes its context there (as after a
  recompute preemption), keeping the tokens it has generated;
- "drain": queued requests move at once; running and swapped ones finish in place, and the
  GPUs are freed only when the last one ends.
Migrate frees GPUs within one step; drain can hold them for a long request's whole decode,
while migrating costs one prefill of each moved request's context, far less. Requests that
arrive while no host of their service is ready wait at the controller and go to the first
host that is.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from seallm.config import ClusterSpec
from seallm.placement.plan import GroupPlan, Plan

IDENTICAL_BONUS = 1e15  # alignment: a group kept exactly as it is beats any weights saved


@dataclass(frozen=True)
class GroupChange:
    """A group (re)built by a move."""

    group: GroupPlan  # the new group, with its final id
    replaces: tuple[int, ...]  # current groups on its GPUs: they retire before it loads
    kept: tuple[str, ...]  # services whose weights are already on these GPUs
    loads: tuple[tuple[str, float], ...]  # services to load, in order, with their seconds

    @property
    def load_s(self) -> float:
        return sum(t for _, t in self.loads)

    def ready_offsets(self) -> dict[str, float]:
        """Seconds after the GPUs are free until each service can serve on the group."""
        out = dict.fromkeys(self.kept, 0.0)
        t = 0.0
        for s, dt in self.loads:
            t += dt
            out[s] = t
        return out


@dataclass(frozen=True)
class Migration:
    plan: Plan  # the new plan: unchanged groups keep their ids, new ones get fresh ids
    changes: tuple[GroupChange, ...]
    retired: tuple[int, ...]  # current groups that stop serving

    @property
    def empty(self) -> bool:
        return not self.changes and not self.retired

    @property
    def load_s(self) -> float:
        return sum(c.load_s for c in self.changes)


@dataclass(frozen=True)
class Occupancy:
    """What a current group holds when a move is considered."""

    contexts: tuple[tuple[str, int], ...] = ()  # (service, KV tokens to recompute) per request
    release_s: float = 0.0  # seconds until its GPUs are free once it stops admitting


@dataclass(frozen=True)
class MoveCost:
    load_s: float  # seconds of weight loading, summed over groups
    moved: int  # requests handed to another group
    delay: float  # request-seconds of latency the move adds (the policy's cost)


def _span(g: GroupPlan) -> tuple[int, int, int]:
    return (g.node, g.first_gpu, g.size)


def gpus_of(g: GroupPlan) -> set[tuple[int, int]]:
    """The (node, GPU index) pairs a group occupies."""
    return {(g.node, g.first_gpu + i) for i in range(g.size)}


def _saving(new: GroupPlan, old: GroupPlan, weight: Callable[[str], float]) -> float:
    """What putting `new` where `old` is saves: the weights it need not load."""
    if new.size != old.size:
        return 0.0
    if set(new.services) == set(old.services) and new.kv_shares == old.kv_shares:
        return IDENTICAL_BONUS
    return sum(weight(s) for s in set(new.services) & set(old.services))


def align(
    current: Plan, candidate: Plan, cluster: ClusterSpec, weight: Callable[[str], float]
) -> Plan:
    """`candidate` moved onto nodes and offsets so that it keeps most of `current` in place
    (same group sizes and services; ids are left as they are)."""
    n = cluster.num_nodes
    new_by = [[g for g in candidate.groups if g.node == k] for k in range(n)]
    old_by = [[g for g in current.groups if g.node == k] for k in range(n)]

    def node_score(c: int, o: int) -> float:
        return sum(max((_saving(g, h, weight) for h in old_by[o]), default=0.0) for g in new_by[c])

    scores = [[node_score(c, o) for o in range(n)] for c in range(n)]
    if n <= 6:
        perm = max(
            itertools.permutations(range(n)),
            key=lambda p: sum(scores[c][p[c]] for c in range(n)),
        )
    else:  # greedy: the best-matching pairs first
        pairs = sorted((-scores[c][o], c, o) for c in range(n) for o in range(n))
        mapping: dict[int, int] = {}
        for _, c, o in pairs:
            if c not in mapping and o not in mapping.values():
                mapping[c] = o
        perm = tuple(mapping[c] for c in range(n))
    groups = []
    for c in range(n):
        o = perm[c]
        old_at = {h.first_gpu: h for h in old_by[o]}
        free = [True] * cluster.gpus_per_node
        for g in sorted(new_by[c], key=lambda g: -g.size):
            offsets = [
                f for f in range(0, cluster.gpus_per_node, g.size) if all(free[f : f + g.size])
            ]
            best = max(
                offsets,
                key=lambda f: (_saving(g, old_at[f], weight) if f in old_at else 0.0, -f),
            )
            free[best : best + g.size] = [False] * g.size
            groups.append(replace(g, node=o, first_gpu=best))
    groups.sort(key=lambda g: (g.node, g.first_gpu))
    return Plan(groups).validate(cluster)


def diff(
    current: Plan,
    aligned: Plan,
    next_id: int,
    load_time: Callable[[str, int], float],
    rates: Mapping[str, float],
) -> Migration:
    """The move from `current` to `aligned` (an `align`ed candidate). Changed groups get ids
    from `next_id` on; each loads its missing models hottest first."""
    old_at = {_span(g): g for g in current.groups}
    groups: list[GroupPlan] = []
    changes: list[GroupChange] = []
    kept_ids: set[int] = set()
    for g in aligned.groups:
        old = old_at.get(_span(g))
        if old is not None and _saving(g, old, lambda s: 0.0) == IDENTICAL_BONUS:
            groups.append(old)
            kept_ids.add(old.id)
            continue
        new = replace(g, id=next_id)
        next_id += 1
        groups.append(new)
        gpus = gpus_of(new)
        replaces = tuple(h.id for h in current.groups if gpus_of(h) & gpus)
        kept = tuple(s for s in new.services if old is not None and s in old.services)
        missing = sorted((s for s in new.services if s not in kept), key=lambda s: -rates[s])
        loads = tuple((s, load_time(s, new.size)) for s in missing)
        changes.append(GroupChange(new, replaces, kept, loads))
    retired = tuple(g.id for g in current.groups if g.id not in kept_ids)
    return Migration(Plan(groups), tuple(changes), retired)


def move_cost(
    migration: Migration,
    occupancy: Mapping[int, Occupancy],
    rates: Mapping[str, float],
    recompute_s: Callable[[str, int], float],
) -> MoveCost:
    """The latency a move adds, in request-seconds: every request on a retiring group waits
    until a host of its service is ready, then for the recomputation of the contexts moved
    ahead of it to the same hosts (n moved requests that each recompute R seconds wait
    n x R / 2 on average, spread over the service's new hosts); arrivals of a service with no
    ready host wait for the first one (rate x gap² / 2)."""
    unchanged = {s for g in migration.plan.groups for s in g.services} - {
        s for c in migration.changes for s in c.group.services
    }
    gap: dict[str, float] = {}
    for c in migration.changes:
        release = max((occupancy.get(h, Occupancy()).release_s for h in c.replaces), default=0.0)
        for s, offset in c.ready_offsets().items():
            gap[s] = min(gap.get(s, float("inf")), release + offset)
    for s in unchanged:
        gap[s] = 0.0
    reps = hosts_of(migration.plan)
    count: dict[str, int] = {}
    work: dict[str, float] = {}  # seconds of recomputation moved, per service
    delay, moved = 0.0, 0
    for gid in migration.retired:
        for s, tokens in occupancy.get(gid, Occupancy()).contexts:
            moved += 1
            count[s] = count.get(s, 0) + 1
            work[s] = work.get(s, 0.0) + (recompute_s(s, tokens) if tokens else 0.0)
            delay += gap.get(s, 0.0)
    delay += sum(count[s] * work[s] / 2 / max(1, reps.get(s, 1)) for s in count)
    delay += sum(rates.get(s, 0.0) * g * g / 2 for s, g in gap.items() if g != float("inf"))
    return MoveCost(migration.load_s, moved, delay)


def hosts_of(plan: Plan) -> dict[str, int]:
    """Replicas per service."""
    out: dict[str, int] = {}
    for g in plan.groups:
        for s in g.services:
            out[s] = out.get(s, 0) + 1
    return out


def plan_move(
    current: Plan,
    candidate: Plan,
    cluster: ClusterSpec,
    next_id: int,
    load_time: Callable[[str, int], float],
    weight: Callable[[str], float],
    rates: Mapping[str, float],
) -> Migration:
    """Align `candidate` to `current` and diff them."""
    return diff(current, align(current, candidate, cluster, weight), next_id, load_time, rates)
