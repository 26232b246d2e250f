"""PNG plots of a run: latency CDF per system, per-service bars of a metric, a metric against
the load. Each has a title, axis labels with units and its legend outside the data, and is
sized to what it shows (bar charts grow with the number of bars, up to a cap)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from seallm.metrics import ResultRow

DPI = 120
# Axis labels (with units) of the result rows' metrics; other names are shown as they are.
METRIC_LABELS = {
    "mean_normalized_latency": "mean normalized latency (s/token)",
    "mean_slowdown": "mean slowdown (x standalone latency)",
    "mean_latency": "mean latency (s)",
    "p99_latency": "P99 latency (s)",
    "mean_ttft": "mean TTFT (s)",
    "p99_ttft": "P99 TTFT (s)",
    "mean_tpot": "mean TPOT (s/token)",
    "slo_attainment": "SLO attainment (fraction of requests)",
    "throughput_tokens_s": "throughput (tokens/s)",
}
LINE_STYLES = ("-", "--", "-.", ":")


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _colors(n: int) -> list:
    """Distinct colours for n series: tab10 up to 10, tab20 beyond (then cycling)."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _legend_right(ax, n: int, title: str = "system") -> None:
    """The legend beside the axes, on the right, in as many columns as fit the height."""
    if n:
        ax.legend(
            title=title,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
            fontsize=8,
            title_fontsize=9,
            ncol=1 if n <= 16 else 2,
            frameon=False,
        )


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def latency_cdf(
    latencies: Mapping[str, Sequence[float]], path: Path, title: str | None = None
) -> Path:
    """One CDF curve of end-to-end latency per system (log x axis). Systems whose curves
    coincide are told apart by line style."""
    systems = [s for s, xs in latencies.items() if len(xs)]
    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    for i, (system, color) in enumerate(zip(systems, _colors(len(systems)), strict=True)):
        xs = np.sort(np.asarray(latencies[system]))
        ax.plot(
            xs,
            np.arange(1, len(xs) + 1) / len(xs),
            label=system,
            color=color,
            linestyle=LINE_STYLES[(i // 10) % len(LINE_STYLES)] if len(systems) > 10 else "-",
            linewidth=1.4,
        )
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end latency (s, log scale)")
    ax.set_ylabel("fraction of requests")
    ax.set_ylim(0, 1.02)
    ax.set_title(title or "Latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    _legend_right(ax, len(systems))
    return _save(fig, path)


def per_service_bars(
    rows: Mapping[str, Sequence[ResultRow]],
    metric: str,
    path: Path,
    ylabel: str | None = None,
    title: str | None = None,
) -> Path:
    """Grouped bars: one group per service (x axis), one bar per system (legend on the
    right). The figure widens with the number of bars, from 7 to 16 inches."""
    systems = list(rows)
    services = [r.service for r in rows[systems[0]]] if systems else []
    bars = max(1, len(services) * max(1, len(systems)))
    width_in = float(np.clip(2.5 + 0.12 * bars + 0.4 * len(services), 7.0, 16.0))
    fig, ax = plt.subplots(figsize=(width_in, 4.8))
    width = 0.8 / max(1, len(systems))
    x = np.arange(len(services))
    for i, (system, color) in enumerate(zip(systems, _colors(len(systems)), strict=True)):
        values = {r.service: getattr(r, metric) for r in rows[system]}
        ax.bar(
            x - 0.4 + (i + 0.5) * width,
            [values.get(s, 0.0) for s in services],
            width,
            label=system,
            color=color,
        )
    # Long names (paper32's "s05-llama-2-70b") are tilted a little once the groups get narrow.
    per_group_in = (width_in - 2.5) / max(1, len(services))  # the legend takes ~2.5 in
    longest = max((len(s) for s in services), default=0)
    tilt = 0 if longest * 0.08 < per_group_in else 25  # ~0.08 in per character at 9 pt
    ax.set_xticks(x, services, rotation=tilt, ha="right" if tilt else "center", fontsize=9)
    ax.set_xlim(-0.6, len(services) - 0.4)
    ax.set_xlabel("service")
    ax.set_ylabel(ylabel or metric_label(metric))
    if metric == "slo_attainment":
        ax.set_ylim(0, 1.05)
    ax.set_title(title or _capital(f"{metric_label(metric).split(' (')[0]} per service"))
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _legend_right(ax, len(systems))
    return _save(fig, path)


def metric_vs_load(
    series: Mapping[str, Sequence[tuple[float, float]]],
    metric: str,
    path: Path,
    xlabel: str = "request rate (req/s)",
    title: str | None = None,
) -> Path:
    """One line per system: a metric against the request rate (or another swept knob)."""
    systems = [s for s, pts in series.items() if pts]
    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    for i, (system, color) in enumerate(zip(systems, _colors(len(systems)), strict=True)):
        xs, ys = zip(*series[system], strict=True)
        ax.plot(
            xs,
            ys,
            marker="o",
            markersize=4,
            label=system,
            color=color,
            linestyle=LINE_STYLES[(i // 10) % len(LINE_STYLES)] if len(systems) > 10 else "-",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric_label(metric))
    if metric == "slo_attainment":
        ax.set_ylim(0, 1.05)
    name, knob = metric_label(metric).split(" (")[0], xlabel.split(" (")[0]
    ax.set_title(title or _capital(f"{name} against {knob}"))
    ax.grid(True, alpha=0.3)
    _legend_right(ax, len(systems))
    return _save(fig, path)
