"""Arrival processes: Poisson, Gamma renewal and on/off bursts, with time-varying rates.

All of them are one construction, time-rescaling: draw a unit-rate renewal process in
"operational time" tau, then map tau back to wall time through the inverse of the cumulative
intensity Lambda(t) = integral of rate * m(s) ds, where m(t) is the piecewise-constant
multiplier from the rate schedule times the on/off gate. A Poisson process stays Poisson
under this map, and a Gamma process keeps its CV within each constant-rate stretch; no rate
is ever exceeded, so nothing needs thinning and the result is exact.
"""

from __future__ import annotations

import numpy as np

from .records import WorkloadSpec


def rate_profile(spec: WorkloadSpec, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-constant multiplier of the mean rate over [0, duration_s].

    Returns (edges, mult): len(edges) == len(mult) + 1, mult[j] applies on
    [edges[j], edges[j+1]). Combines spec.rate_schedule and, for "onoff", the on/off gate
    (on first, from t = 0; the on-rate is raised by (on+off)/on so the mean stays `rate`).
    """
    sched = sorted((float(t), float(m)) for t, m in spec.rate_schedule)
    cuts = [0.0, duration_s] + [t for t, _ in sched if 0.0 < t < duration_s]
    onoff = spec.arrival == "onoff" and spec.off_s > 0
    if onoff:
        cycle = spec.on_s + spec.off_s
        starts = np.arange(0.0, duration_s, cycle)
        cuts_arr = np.concatenate([cuts, starts, starts + spec.on_s])
    else:
        cuts_arr = np.asarray(cuts)
    edges = np.unique(cuts_arr[(cuts_arr >= 0.0) & (cuts_arr <= duration_s)])
    mids = 0.5 * (edges[:-1] + edges[1:])  # judge each stretch by its midpoint: no edge ties
    mult = np.ones_like(mids)
    if sched:
        times = np.array([t for t, _ in sched])
        values = np.array([m for _, m in sched])
        j = np.searchsorted(times, mids, side="right") - 1  # last schedule entry at or before
        mult = np.where(j >= 0, values[np.maximum(j, 0)], 1.0)
    if onoff:
        cycle = spec.on_s + spec.off_s
        on = (mids % cycle) < spec.on_s
        mult = mult * np.where(on, cycle / spec.on_s, 0.0)
    return edges, mult


def unit_gaps(n: int, cv: float, rng: np.random.Generator, poisson: bool) -> np.ndarray:
    """n inter-arrival gaps with mean 1: exponential, or Gamma(k = 1/cv², scale = 1/k)."""
    if poisson:
        return rng.exponential(1.0, size=n)
    k = 1.0 / (cv * cv)
    return rng.gamma(k, 1.0 / k, size=n)


def arrival_times(
    rate: float,
    cv: float,
    edges: np.ndarray,
    mult: np.ndarray,
    rng: np.random.Generator,
    poisson: bool = False,
) -> np.ndarray:
    """Sorted arrival times in [edges[0], edges[-1]) of a renewal process whose mean rate is
    rate * mult[j] on each stretch [edges[j], edges[j+1])."""
    if rate <= 0.0 or len(mult) == 0:
        return np.empty(0)
    slope = rate * mult  # operational time per second on each stretch
    cum = np.concatenate([[0.0], np.cumsum(slope * np.diff(edges))])  # Lambda at the edges
    total = float(cum[-1])
    if total <= 0.0:
        return np.empty(0)
    tau = _renewal_until(total, cv, rng, poisson)
    # Which stretch each tau falls in; side="right" skips zero-rate stretches (flat Lambda).
    j = np.clip(np.searchsorted(cum, tau, side="right") - 1, 0, len(slope) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = edges[j] + np.where(slope[j] > 0, (tau - cum[j]) / slope[j], 0.0)
    return np.minimum(t, np.nextafter(edges[-1], -np.inf))


def _renewal_until(total: float, cv: float, rng: np.random.Generator, poisson: bool) -> np.ndarray:
    """Arrival times in [0, total) of a unit-rate renewal process, drawn in vector chunks."""
    chunks: list[np.ndarray] = []
    last = 0.0
    while True:
        left = total - last
        # Enough draws to pass `total` almost always in one go (mean + 6 standard deviations).
        n = int(left + 6.0 * max(cv, 1.0) * np.sqrt(left) + 32)
        times = last + np.cumsum(unit_gaps(n, cv, rng, poisson))
        if times[-1] >= total:
            chunks.append(times[: np.searchsorted(times, total, side="left")])
            break
        chunks.append(times)
        last = float(times[-1])
    return np.concatenate(chunks)
