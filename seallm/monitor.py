"""The service monitor: per-service arrival rates and request lengths over a sliding window.

The controller tells it of every arrival (service, time, prompt tokens) and every finished
request (its output tokens: a live server only learns an output length at the end). At a
replacement check it turns its window into `ServiceLoad`s for the placement, and says how far
traffic has moved from a reference mix (`drift`), with the noise a window of that many
arrivals shows anyway, so that a policy can tell drift from chance. Every query may look at a
shorter span than the window (the latest seconds), to see a shift before the window does.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from seallm.placement.demand import ServiceLoad

MIN_LENGTH_SAMPLES = 16  # finished requests in the window before their lengths replace the prior
MIN_GAP_SAMPLES = 8  # inter-arrival gaps before a service's burstiness is estimated
NOISE_LEVELS = 2.0  # drift is significant beyond the threshold plus this many noise levels


@dataclass(frozen=True)
class ServiceWindow:
    """What the window saw of one service."""

    service: str
    arrivals: int
    rate: float  # arrivals / window span (requests/s)
    cv: float  # inter-arrival coefficient of variation (1.0 until enough gaps)
    mean_prompt: float | None  # None until the window holds a sample
    mean_output: float | None  # from finished requests; None until MIN_LENGTH_SAMPLES


@dataclass(frozen=True)
class Drift:
    """How far the observed rate mix is from a reference: relative L1 distance of the rate
    vectors, and the distance the window's counting noise alone would give."""

    distance: float
    noise: float

    def significant(self, threshold: float) -> bool:
        """Beyond `threshold` plus two noise levels: probes run every few tens of seconds,
        and bursty arrivals in a short window would otherwise pass for drift now and then."""
        return self.distance > threshold + NOISE_LEVELS * self.noise


class ServiceMonitor:
    def __init__(self, services: Iterable[str], window_s: float) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = window_s
        self._arrivals: dict[str, deque[tuple[float, int]]] = {s: deque() for s in services}
        self._finished: dict[str, deque[tuple[float, int]]] = {s: deque() for s in self._arrivals}

    def arrived(self, service: str, now: float, prompt_tokens: int) -> None:
        q = self._arrivals.get(service)
        if q is not None:  # unknown services are rejected at the door
            self._push(q, now, prompt_tokens)

    def finished(self, service: str, now: float, output_tokens: int) -> None:
        q = self._finished.get(service)
        if q is not None:
            self._push(q, now, output_tokens)

    def _push(self, q: deque[tuple[float, int]], now: float, value: int) -> None:
        q.append((now, value))
        while q[0][0] < now - self.window_s:  # bounded memory however rarely it is queried
            q.popleft()

    def _trim(self, now: float) -> None:
        start = now - self.window_s
        for q in (*self._arrivals.values(), *self._finished.values()):
            while q and q[0][0] < start:
                q.popleft()

    def windows(self, now: float, span: float | None = None) -> dict[str, ServiceWindow]:
        """Per service, what arrived (and finished) in the last `span` seconds (default: the
        whole window)."""
        self._trim(now)
        span = min(span or self.window_s, self.window_s, now)
        start = now - span
        out = {}
        for s, all_arrivals in self._arrivals.items():
            q = [a for a in all_arrivals if a[0] >= start]
            fin = [f for f in self._finished[s] if f[0] >= start]
            n = len(q)
            out[s] = ServiceWindow(
                s,
                n,
                n / span if span > 0 else 0.0,
                _gap_cv([t for t, _ in q]),
                sum(p for _, p in q) / n if n else None,
                sum(o for _, o in fin) / len(fin) if len(fin) >= MIN_LENGTH_SAMPLES else None,
            )
        return out

    def loads(
        self, now: float, prior: Mapping[str, ServiceLoad], span: float | None = None
    ) -> dict[str, ServiceLoad]:
        """Observed loads: the window's rates, and its mean lengths where it has enough
        samples (the prior's otherwise)."""
        out = {}
        for s, w in self.windows(now, span).items():
            p = prior[s]
            out[s] = dataclasses.replace(
                p,
                rate=w.rate,
                mean_prompt=w.mean_prompt if w.mean_prompt is not None else p.mean_prompt,
                mean_output=w.mean_output if w.mean_output is not None else p.mean_output,
            )
        return out

    def drift(self, now: float, reference: Mapping[str, float], span: float | None = None) -> Drift:
        """Distance of the window's rates from `reference` rates (requests/s by service)."""
        windows = self.windows(now, span)
        ref_total = sum(reference.values())
        obs_total = sum(w.rate for w in windows.values())
        scale = max(ref_total, obs_total)
        if scale <= 0:
            return Drift(0.0, 0.0)
        dist = sum(abs(w.rate - reference.get(s, 0.0)) for s, w in windows.items()) / scale
        # A renewal process's count over a window has a standard deviation of about
        # cv x sqrt(count); summed over services and taken relative to the total count.
        count = sum(w.arrivals for w in windows.values())
        noise = (
            sum(w.cv * math.sqrt(w.arrivals) for w in windows.values()) / count if count else 1.0
        )
        return Drift(dist, noise)


def _gap_cv(times: list[float]) -> float:
    if len(times) <= MIN_GAP_SAMPLES:
        return 1.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = sum(gaps) / len(gaps)
    if mean <= 0:
        return 1.0
    var = sum((g - mean) ** 2 for g in gaps) / len(gaps)
    return math.sqrt(var) / mean
