"""Service profiles: what the scheduler knows of a service on its group.

A profile holds the service's iteration-time function (its ModelCost on the group) and the
distribution of request standalone execution time, mean μ_s and standard deviation σ_s,
derived offline from the service's input/output length statistics and the cost model, then
refreshed online from the requests the service finishes (a sliding window).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from seallm.costmodel import ModelCost
from seallm.request import Request
from seallm.workload import LengthDistribution, get_length_distribution

if TYPE_CHECKING:
    from seallm.config import Config

OFFLINE_SAMPLES = 512  # length pairs drawn to estimate μ_s and σ_s before any request finishes
WINDOW = 256  # finished requests the online refresh keeps per service


@dataclass
class ServiceProfile:
    service: str
    cost: ModelCost
    mean_output: float
    mu: float  # mean standalone execution time (s)
    sigma: float  # its standard deviation (s)
    token_time: float  # one decode iteration alone, at the mean context (s)
    slo_scale: float = 5.0  # the service's SLO: latency <= slo_scale x standalone latency
    _window: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=WINDOW))

    @property
    def budget(self) -> float:
        """The doubling-budget scheduler's initial budget: μ_s + σ_s."""
        return self.mu + self.sigma

    def estimate(self, req: Request) -> float:
        """L̂_r: standalone time of `req` with its known prompt and the service's mean output."""
        return self.cost.standalone_latency(req.prompt_tokens, max(1, round(self.mean_output)))

    def observe(self, req: Request) -> None:
        """Fold a finished request into the online statistics: its standalone time on this
        group, from the lengths it actually had."""
        standalone = self.cost.standalone_latency(req.prompt_tokens, max(1, req.generated))
        self._window.append((standalone, req.generated))
        if len(self._window) >= 16:  # enough to trust over the offline estimate
            times = np.fromiter((t for t, _ in self._window), float, len(self._window))
            self.mu, self.sigma = float(times.mean()), float(times.std())
            self.mean_output = float(np.mean([n for _, n in self._window]))


def offline_profile(
    service: str,
    cost: ModelCost,
    lengths: LengthDistribution,
    seed: int = 0,
    slo_scale: float = 5.0,
) -> ServiceProfile:
    prompts, outputs = lengths.sample(OFFLINE_SAMPLES, np.random.default_rng(seed))
    times = np.array(
        [cost.standalone_latency(int(p), int(o)) for p, o in zip(prompts, outputs, strict=True)]
    )
    ctx = int(prompts.mean() + outputs.mean() / 2)
    return ServiceProfile(
        service,
        cost,
        float(outputs.mean()),
        float(times.mean()),
        float(times.std()),
        cost.iteration_time(0, 0.0, 1, ctx),
        slo_scale,
    )


def service_profiles(config: Config, costs: dict[str, ModelCost]) -> dict[str, ServiceProfile]:
    """The offline profile of each service of a group, from its configured lengths."""
    wl = config.workload
    return {
        s: offline_profile(
            s,
            c,
            get_length_distribution(
                config.lengths_of(s), wl.max_prompt_tokens, wl.max_output_tokens
            ),
            config.seed,
            config.service(s).slo_scale,
        )
        for s, c in costs.items()
    }
