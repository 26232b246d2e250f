"""Time-varying multi-service workloads: popularity that shifts over the run, and bursts.

A shifting workload keeps the total rate (and the global rate schedule, on/off gate) but moves
popularity between services: after k shifts (at `shift_times`, and every `shift_period_s`
seconds), service i takes
the base share of popularity rank (i - k * shift_step) mod n, so the hot spot walks down the
service list. A burst multiplies one service's rate (or every service's) over a stretch.

Each service then has its own piecewise-constant multiplier, and its arrivals are drawn with
the same time-rescaling construction as a stationary workload (`arrivals.arrival_times`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .arrivals import rate_profile
from .records import WorkloadError, WorkloadSpec


def is_time_varying(spec: WorkloadSpec) -> bool:
    """Whether services' shares change over time (popularity shifts or bursts)."""
    return shifting(spec) or bool(spec.bursts)


def shifting(spec: WorkloadSpec) -> bool:
    """Whether popularity shifts at all."""
    return spec.shift_period_s > 0 or bool(spec.shift_times)


def shares_at(base: Sequence[float], shifts: int, step: int) -> list[float]:
    """Shares after `shifts` shifts: service i takes base rank (i - shifts * step) mod n."""
    n = len(base)
    return [base[(i - shifts * step) % n] for i in range(n)]


def mean_shares(spec: WorkloadSpec, base: Sequence[float]) -> list[float]:
    """Each service's share averaged over one full rotation of the popularity order: the
    long-run mean a planner without foresight of the run would use. Bursts are left out, as
    rate_schedule multipliers are."""
    n = len(base)
    if not shifting(spec) or n == 0 or spec.shift_step % n == 0:
        return list(base)
    cycle = n // math.gcd(n, spec.shift_step % n)
    rows = [shares_at(base, k, spec.shift_step) for k in range(cycle)]
    return [sum(col) / cycle for col in zip(*rows, strict=True)]


def shift_index(spec: WorkloadSpec, t: np.ndarray) -> np.ndarray:
    """How many popularity shifts have happened by each time in `t`."""
    t = np.asarray(t, dtype=float)
    k = np.searchsorted(np.asarray(spec.shift_times, dtype=float), t, side="right")
    if spec.shift_period_s > 0:
        k = k + np.floor(t / spec.shift_period_s).astype(np.int64)
    return k.astype(np.int64)


def service_profiles(
    spec: WorkloadSpec, names: Sequence[str], base: Sequence[float], duration_s: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per service, (edges, mult): its rate is spec.rate x mult[j] on [edges[j], edges[j+1]).
    mult combines the global profile (rate_schedule, on/off), the service's shifting share and
    its bursts."""
    unknown = sorted({b[3] for b in spec.bursts if b[3] and b[3] not in names})
    if unknown:
        raise WorkloadError(f"workload.bursts: unknown service(s) {', '.join(unknown)}")
    g_edges, g_mult = rate_profile(spec, duration_s)
    cuts = [g_edges]
    if spec.shift_period_s > 0:
        cuts.append(np.arange(spec.shift_period_s, duration_s, spec.shift_period_s))
    cuts.append(np.asarray(spec.shift_times, dtype=float))
    for start, length, _, _ in spec.bursts:
        cuts.append(np.array([start, start + length], dtype=float))
    edges = np.concatenate(cuts)
    edges = np.unique(edges[(edges >= 0.0) & (edges <= duration_s)])
    if len(edges) < 2:
        return [(edges, np.empty(0)) for _ in names]
    mids = 0.5 * (edges[:-1] + edges[1:])
    j = np.clip(np.searchsorted(g_edges, mids, side="right") - 1, 0, len(g_mult) - 1)
    glob = g_mult[j]
    k = shift_index(spec, mids)
    base_arr = np.asarray(base, dtype=float)
    n = len(names)
    out = []
    for i, name in enumerate(names):
        mult = glob * base_arr[(i - k * spec.shift_step) % n]
        for start, length, factor, service in spec.bursts:
            if service in ("", name):
                inside = (mids >= start) & (mids < start + length)
                mult = np.where(inside, mult * factor, mult)
        out.append((edges, mult))
    return out
