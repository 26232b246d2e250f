"""Build a multi-service workload: generated arrivals and lengths, or a replayed trace."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .arrivals import arrival_times, rate_profile
from .lengths import get_length_distribution
from .popularity import Services, has_service_column, service_shares, trace_service_map
from .readers import read_trace
from .records import TraceRecord, WorkloadError, WorkloadSpec
from .shifting import is_time_varying, service_profiles, shares_at, shift_index, shifting


def generate(
    spec: WorkloadSpec,
    services: Services,
    duration_s: float,
    seed: int,
    rate_scale: float = 1.0,
    lengths: Mapping[str, str] | None = None,
) -> list[TraceRecord]:
    """Requests for `services` over [0, duration_s), sorted by arrival.
    `lengths` overrides spec.lengths for the services it names.

    Generated arrivals: every service has its own independent process (poisson, gamma with
    spec.cv, or onoff = gamma(cv) while on) at its service_rates() rate, multiplied by the
    rate_schedule; lengths from spec.lengths. arrival == "trace": see `replay_trace`.
    A shifting workload (popularity shifts, bursts) gives each service its own time-varying
    rate (`shifting.service_profiles`).
    The same seed gives the same list; every service draws from its own child seed, so the
    streams do not shift when another service's rate changes.
    """
    spec.validate()
    if not (isinstance(duration_s, (int, float)) and math.isfinite(duration_s)) or duration_s < 0:
        raise WorkloadError(f"duration_s must be a finite number >= 0, got {duration_s!r}")
    if not (isinstance(rate_scale, (int, float)) and math.isfinite(rate_scale)) or rate_scale <= 0:
        raise WorkloadError(f"rate_scale must be a finite number > 0, got {rate_scale!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise WorkloadError(f"seed must be an integer >= 0, got {seed!r}")
    shares = service_shares(spec, services)
    names = [name for name, _ in services]
    if spec.arrival == "trace":
        return replay_trace(spec, names, shares, duration_s, seed, rate_scale)

    lengths = lengths or {}
    edges, mult = rate_profile(spec, float(duration_s))
    profiles = (
        service_profiles(spec, names, shares, float(duration_s)) if is_time_varying(spec) else None
    )
    children = np.random.SeedSequence(seed).spawn(len(names))
    times, which, prompts, outputs = [], [], [], []
    for i, share in enumerate(shares):
        arrival_seed, length_seed = children[i].spawn(2)
        rng = np.random.default_rng(arrival_seed)
        poisson = spec.arrival == "poisson"
        if profiles is None:
            t = arrival_times(spec.rate * rate_scale * share, spec.cv, edges, mult, rng, poisson)
        else:
            t = arrival_times(spec.rate * rate_scale, spec.cv, *profiles[i], rng, poisson)
        dist = get_length_distribution(
            lengths.get(names[i], spec.lengths), spec.max_prompt_tokens, spec.max_output_tokens
        )
        p, o = dist.sample(len(t), np.random.default_rng(length_seed))
        times.append(t)
        which.append(np.full(len(t), i, dtype=np.int64))
        prompts.append(p)
        outputs.append(o)
    if not times:
        return []
    t_all = np.concatenate(times)
    order = np.argsort(t_all, kind="stable")  # stable: equal times stay in service order
    svc = [names[i] for i in np.concatenate(which)[order].tolist()]
    return [
        TraceRecord(t, s, p, o)
        for t, s, p, o in zip(
            t_all[order].tolist(),
            svc,
            np.concatenate(prompts)[order].tolist(),
            np.concatenate(outputs)[order].tolist(),
            strict=True,
        )
    ]


def replay_trace(
    spec: WorkloadSpec,
    names: Sequence[str],
    shares: Sequence[float],
    duration_s: float,
    seed: int,
    rate_scale: float = 1.0,
) -> list[TraceRecord]:
    """The trace's own arrivals (time divided by rate_scale, cut at duration_s) and lengths.

    A trace with a model column keeps it: models are ranked by frequency over the whole file
    and mapped onto the services in order (wrapping around when there are more models).
    A single-stream trace is split by drawing each request's service with `shares` (rotated
    by the popularity shifts in effect at its arrival, for a shifting workload).
    """
    assert spec.trace is not None  # validate() checked it
    records = read_trace(spec.trace)
    kept = [r for r in records if r.arrival_s / rate_scale < duration_s]
    if has_service_column(records):
        mapping = trace_service_map(records, names)
        svc = [mapping[r.service] for r in kept]
    else:
        rng = np.random.default_rng(np.random.SeedSequence(seed))
        if not shifting(spec):
            idx = rng.choice(len(names), size=len(kept), p=np.asarray(shares) / np.sum(shares))
        else:
            k = shift_index(spec, np.array([r.arrival_s / rate_scale for r in kept]))
            idx = np.empty(len(kept), dtype=np.int64)
            for shift in np.unique(k).tolist():
                p = np.asarray(shares_at(shares, shift, spec.shift_step))
                at = k == shift
                idx[at] = rng.choice(len(names), size=int(at.sum()), p=p / p.sum())
        svc = [names[i] for i in idx.tolist()]
    return [
        TraceRecord(r.arrival_s / rate_scale, s, r.prompt_tokens, r.output_tokens)
        for r, s in zip(kept, svc, strict=True)
    ]
