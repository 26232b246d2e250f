"""How the total request rate splits over services: a power law, or explicit weights."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from .readers import read_trace
from .records import TraceRecord, WorkloadError, WorkloadSpec
from .shifting import mean_shares, shifting

Services = Sequence[tuple[str, float | None]]


def popularity_weights(n: int, alpha: float) -> list[float]:
    """Normalized weights ∝ (i+1)^-alpha: the first service is the most popular."""
    if n <= 0:
        return []
    raw = [(i + 1) ** -alpha for i in range(n)]
    total = sum(raw)
    return [w / total for w in raw]


def service_shares(spec: WorkloadSpec, services: Services) -> list[float]:
    """Each service's fraction of the traffic, in the order given.

    Explicit weights win over the power law: once any service has one, a missing weight
    counts as 1.0 and the weights are normalized.
    """
    names = [name for name, _ in services]
    if not names:
        raise WorkloadError("workload: no services given")
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise WorkloadError(f"workload: duplicate service name(s) {', '.join(dupes)}")
    weights = [w for _, w in services]
    if all(w is None for w in weights):
        return popularity_weights(len(names), spec.alpha)
    explicit = [1.0 if w is None else float(w) for w in weights]
    for name, w in zip(names, explicit, strict=True):
        if not math.isfinite(w) or w < 0:
            raise WorkloadError(f"service {name}: weight must be a finite number >= 0, got {w}")
    total = sum(explicit)
    if total <= 0:
        raise WorkloadError("workload: service weights sum to 0")
    return [w / total for w in explicit]


def trace_service_map(records: Sequence[TraceRecord], names: Sequence[str]) -> dict[str, str]:
    """Map a trace's own model column onto services: the most frequent model goes to the
    first service, the next to the second, ...; extra models wrap around."""
    counts = Counter(r.service for r in records)
    # Counter keeps first-seen order, and sorted() is stable: ties go to the earlier model.
    models = sorted(counts, key=lambda m: -counts[m])
    return {m: names[i % len(names)] for i, m in enumerate(models)}


def has_service_column(records: Sequence[TraceRecord]) -> bool:
    return any(r.service for r in records)


def service_rates(
    spec: WorkloadSpec, services: Services, rate_scale: float = 1.0
) -> dict[str, float]:
    """Expected mean arrival rate (requests/s) per service name.

    For generated arrivals: spec.rate * rate_scale split by service_shares (onoff keeps the
    mean; a rate_schedule multiplier or a burst is not applied since it depends on the time;
    shifting popularity gives each service its share averaged over a full rotation). For
    arrival == "trace": the trace's own mean rate * rate_scale, split by its model column
    when it has one, else by service_shares.
    """
    shares = service_shares(spec, services)
    if shifting(spec):  # shifting popularity: the long-run mean shares
        shares = mean_shares(spec, shares)
    names = [name for name, _ in services]
    if spec.arrival != "trace":
        total = spec.rate * rate_scale
        return {n: total * s for n, s in zip(names, shares, strict=True)}
    if not spec.trace:
        raise WorkloadError("workload.trace: a trace path is required when arrival is 'trace'")
    records = read_trace(spec.trace)
    span = records[-1].arrival_s if records else 0.0
    total = len(records) / span * rate_scale if span > 0 else 0.0
    if not has_service_column(records):
        return {n: total * s for n, s in zip(names, shares, strict=True)}
    mapping = trace_service_map(records, names)
    counts = Counter(mapping[r.service] for r in records)
    return {n: total * counts[n] / len(records) for n in names}
