"""Tables, ratios and plots for `seallm experiment paper` (see `paper.py`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from seallm.bench.paper import BASELINES, METRICS, PaperResult, Sweep

# The paper's largest reported gains (normalized latency, tail latency, SLO attainment).
PAPER_GAINS = {"mean_normalized_latency": 13.60, "p99_latency": 18.69, "slo_attainment": 3.64}
LABELS = {
    "mean_normalized_latency": "mean normalized latency",
    "p99_latency": "P99 latency",
    "slo_attainment": "SLO attainment",
}


def gain(metric: str, seallm: float, other: float) -> float:
    """How many times better seallm is (> 1: seallm wins). Latencies: other / seallm;
    attainment: seallm / other."""
    if metric == "slo_attainment":
        seallm, other = other, seallm
    if seallm <= 0:
        return math.inf if other > 0 else 1.0
    return other / seallm


@dataclass
class Best:
    metric: str
    baseline: str
    ratio: float
    where: str


def _fmt(r: float) -> str:
    return "inf" if math.isinf(r) else f"{r:.2f}x"


def gains_table(res: PaperResult) -> tuple[list[str], list[Best], list[str]]:
    """Per loaded point: seallm's gain over each baseline for each metric. Returns markdown
    lines, the largest gain per (metric, baseline), and the points where seallm is not best."""
    baselines = [b for b in BASELINES if b in res.systems]
    heads = [f"{b} {LABELS[m]}" for b in baselines for m in METRICS]
    lines = [
        "| sweep | x | " + " | ".join(heads) + " |",
        "|---|---|" + "---|" * (len(baselines) * len(METRICS)),
    ]
    best: dict[tuple[str, str], Best] = {}
    losses: list[str] = []
    for sw in res.sweeps:
        for x in sw.values:
            if not sw.loaded(x) or (sw.name, x, "seallm") not in res.rows:
                continue
            me = res.rows[(sw.name, x, "seallm")]
            cells = []
            for b in baselines:
                other = res.rows[(sw.name, x, b)]
                for m in METRICS:
                    g = gain(m, getattr(me, m), getattr(other, m))
                    cells.append(_fmt(g))
                    key = (m, b)
                    if key not in best or g > best[key].ratio:
                        best[key] = Best(m, b, g, f"{sw.name}={x:g}")
                    if g < 1.0:
                        losses.append(f"{sw.name}={x:g}: {LABELS[m]} vs {b} ({g:.2f}x)")
            lines.append(f"| {sw.name} | {x:g} | " + " | ".join(cells) + " |")
    return lines, list(best.values()), losses


def markdown(res: PaperResult) -> str:
    lines = [
        f"paper32, {res.duration_s:g} s of arrivals per run, mean of {res.seeds} seed(s).",
        "",
    ]
    for sw in res.sweeps:
        lines += [
            f"### {sw.label}",
            "",
            "| x | system | norm. latency s/tok | P99 latency s | SLO attainment | "
            "mean TTFT s | completed | moves |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for x in sw.values:
            for system in res.systems:
                r = res.rows.get((sw.name, x, system))
                if r is None:
                    continue
                lines.append(
                    f"| {x:g} | {system} | {r.mean_normalized_latency:.4f} | "
                    f"{r.p99_latency:.1f} | {r.slo_attainment:.3f} | {r.mean_ttft:.2f} | "
                    f"{r.completed}/{r.requests} | {res.moves.get((sw.name, x, system), 0):.0f} |"
                )
        lines.append("")
    table, best, losses = gains_table(res)
    lines += ["### seallm's gain over each baseline at moderate to high load", "", *table, ""]
    lines += [
        "### Largest gains, next to the paper's",
        "",
        "| metric | baseline | largest gain | at | paper's largest |",
        "|---|---|---|---|---|",
    ]
    for b in sorted(best, key=lambda b: (METRICS.index(b.metric), b.baseline)):
        lines.append(
            f"| {LABELS[b.metric]} | {b.baseline} | {_fmt(b.ratio)} | {b.where} | "
            f"{PAPER_GAINS[b.metric]:.2f}x |"
        )
    lines += ["", f"Points where seallm is not best: {len(losses)}"]
    lines += [f"- {loss}" for loss in losses]
    return "\n".join(lines) + "\n"


def to_json(res: PaperResult) -> dict:
    return {
        "experiment": "paper",
        "preset": "paper32",
        "duration_s": res.duration_s,
        "seeds": res.seeds,
        "sweeps": [
            {
                "name": sw.name,
                "label": sw.label,
                "points": [
                    {
                        "x": x,
                        "results": [
                            {**r.to_dict(), "moves": res.moves.get((sw.name, x, s), 0)}
                            for s in res.systems
                            if (r := res.rows.get((sw.name, x, s))) is not None
                        ],
                    }
                    for x in sw.values
                ],
            }
            for sw in res.sweeps
        ],
    }


def plot(res: PaperResult, out: Path) -> list[Path]:
    from seallm.bench.plots import metric_vs_load

    paths = []
    for sw in res.sweeps:
        for m in METRICS:
            series = {
                s: [(x, getattr(res.rows[(sw.name, x, s)], m)) for x in sw.values]
                for s in res.systems
                if all((sw.name, x, s) in res.rows for x in sw.values)
            }
            paths.append(metric_vs_load(series, m, out / f"paper_{sw.name}_{m}.png", sw.label))
    return paths


def write(res: PaperResult, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper.json").write_text(json.dumps(to_json(res), indent=2) + "\n")
    (out / "paper.md").write_text(markdown(res))
    return [out / "paper.json", out / "paper.md", *plot(res, out)]


def sweep_named(sweeps: list[Sweep], names: str | None) -> list[Sweep]:
    if not names:
        return sweeps
    wanted = names.split(",")
    unknown = [n for n in wanted if n not in {s.name for s in sweeps}]
    if unknown:
        raise ValueError(f"sweeps: {unknown} not among {[s.name for s in sweeps]}")
    return [s for s in sweeps if s.name in wanted]
