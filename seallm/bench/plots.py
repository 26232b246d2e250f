"""PNG plots of a run: latency CDF per system, per-service bars of a metric."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from seallm.metrics import ResultRow


def latency_cdf(latencies: Mapping[str, Sequence[float]], path: Path) -> Path:
    """One CDF curve of end-to-end latency per system (log x axis)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for system, xs in latencies.items():
        if len(xs) == 0:
            continue
        xs = np.sort(np.asarray(xs))
        ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=system)
    ax.set_xscale("log")
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("fraction of requests")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def per_service_bars(
    rows: Mapping[str, Sequence[ResultRow]], metric: str, path: Path, ylabel: str | None = None
) -> Path:
    """Grouped bars: one group per service, one bar per system."""
    systems = list(rows)
    services = [r.service for r in rows[systems[0]]] if systems else []
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(services) * max(1, len(systems))), 4))
    width = 0.8 / max(1, len(systems))
    x = np.arange(len(services))
    for i, system in enumerate(systems):
        values = {r.service: getattr(r, metric) for r in rows[system]}
        ax.bar(x + i * width, [values.get(s, 0.0) for s in services], width, label=system)
    ax.set_xticks(x + width * (len(systems) - 1) / 2, services, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel or metric)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def metric_vs_load(
    series: Mapping[str, Sequence[tuple[float, float]]],
    metric: str,
    path: Path,
    xlabel: str = "request rate (req/s)",
) -> Path:
    """One line per system: a metric against the request rate (or another swept knob)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for system, pts in series.items():
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=system)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
