"""`seallm experiment NAME`: named experiments that print tables and write JSON and PNGs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

from seallm.bench import shared_group as sg

EXPERIMENTS: dict[str, Callable[..., None]] = {}


def experiment(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        EXPERIMENTS[name] = fn
        return fn

    return deco


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


@experiment("shared-group")
def shared_group(out: Path, quick: bool = False, duration_s: float = 600.0, seeds: int = 3) -> None:
    """Co-located services on one group: seallm vs its ablations and vllm, swept over load."""
    console = Console(width=170)
    out.mkdir(parents=True, exist_ok=True)

    def show(p: sg.SweepPoint) -> None:
        sc = p.scenario
        t = Table(
            title=f"{sc.name}: {sc.gpus} x A100 shared group, {p.rate:g} req/s "
            f"(mean of {seeds} seeds)"
        )
        for h in [
            "system",
            "norm lat s/tok",
            "P99 lat s",
            "SLO",
            "TTFT s",
            "slowdown",
            "fcfs/x norm",
            "x/oracle norm",
            "static/x norm",
            "done/reqs",
        ]:
            t.add_column(h, justify="right")
        base = p.rows
        for name, r in p.rows.items():
            t.add_row(
                name,
                f"{r.mean_normalized_latency:.4f}",
                f"{r.p99_latency:.1f}",
                f"{r.slo_attainment:.3f}",
                f"{r.mean_ttft:.2f}",
                f"{r.mean_slowdown:.2f}",
                _ratio(base["seallm-fcfs"].mean_normalized_latency, r.mean_normalized_latency)
                if "seallm-fcfs" in base
                else "-",
                _ratio(r.mean_normalized_latency, base["seallm-oracle"].mean_normalized_latency)
                if "seallm-oracle" in base
                else "-",
                _ratio(base["seallm-static-kv"].mean_normalized_latency, r.mean_normalized_latency)
                if "seallm-static-kv" in base
                else "-",
                f"{r.completed}/{r.requests}",
            )
        console.print(t)

    points = sg.run_sweep(sg.default_scenarios(quick), duration_s, list(range(1, seeds + 1)), show)
    doc = {
        "experiment": "shared-group",
        "duration_s": duration_s,
        "seeds": seeds,
        "points": [
            {
                "scenario": p.scenario.name,
                "gpus": p.scenario.gpus,
                "rate": p.rate,
                "results": [
                    {
                        **r.to_dict(),
                        "kv_utilization": p.kv_utilization[r.system],
                        "preemptions": p.preemptions[r.system],
                    }
                    for r in p.rows.values()
                ],
            }
            for p in points
        ],
    }
    (out / "shared_group.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out / "shared_group.md").write_text(markdown(points))
    _plot(points, out)
    console.print(f"wrote {out / 'shared_group.json'} and plots in {out}")


def markdown(points: list[sg.SweepPoint]) -> str:
    """One table per scenario: each system's metrics at every rate, and seallm's ratios."""
    lines: list[str] = []
    for name in dict.fromkeys(p.scenario.name for p in points):
        sel = [p for p in points if p.scenario.name == name]
        sc = sel[0].scenario
        lines += [
            f"### {name}: {sc.gpus} x A100-80GB shared group",
            "",
            "| req/s | system | norm. latency s/tok | P99 latency s | SLO attainment | "
            "mean TTFT s | completed | KV pool used | preemptions | seallm's gain |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in sel:
            me = p.rows["seallm"].mean_normalized_latency
            for system, r in p.rows.items():
                gain = _ratio(r.mean_normalized_latency, me) if system != "seallm" else ""
                lines.append(
                    f"| {p.rate:g} | {system} | {r.mean_normalized_latency:.4f} | "
                    f"{r.p99_latency:.1f} | {r.slo_attainment:.3f} | {r.mean_ttft:.2f} | "
                    f"{r.completed}/{r.requests} | {p.kv_utilization[system]:.2f} | "
                    f"{p.preemptions[system]:.0f} | {gain} |"
                )
        lines.append("")
    return "\n".join(lines)


def _plot(points: list[sg.SweepPoint], out: Path) -> None:
    from seallm.bench.plots import metric_vs_load

    for name in dict.fromkeys(p.scenario.name for p in points):
        sel = [p for p in points if p.scenario.name == name]
        for metric in ["mean_normalized_latency", "p99_latency", "slo_attainment"]:
            series = {
                name: [(p.rate, getattr(p.rows[name], metric)) for p in sel if name in p.rows]
                for name in sel[0].rows
            }
            metric_vs_load(series, metric, out / f"shared_group_{name}_{metric}.png")


@experiment("paper")
def paper(
    out: Path,
    quick: bool = False,
    duration_s: float = 600.0,
    seeds: int = 1,
    sweeps: str | None = None,
    systems: str | None = None,
    jobs: int | None = None,
) -> None:
    """The paper's evaluation on paper32: sweeps over rate, SLO scale, CV and services for
    seallm, vllm, alpaserve, muxserve and seallm's ablations."""
    from rich.progress import Progress

    from seallm.bench import paper as pp
    from seallm.bench import paper_report as report

    console = Console(width=170)
    chosen = report.sweep_named(list(pp.SWEEPS), sweeps)
    names = systems.split(",") if systems else pp.default_systems()
    if quick:
        chosen = [pp.Sweep(s.name, s.label, s.values[-1:], 0.0) for s in chosen[:1]]
        duration_s = min(duration_s, 60.0)
    total = sum(len(s.values) for s in chosen) * len(names) * seeds
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("paper32 runs", total=total)
        res = pp.run_paper(
            chosen, names, duration_s, seeds, jobs, on_run=lambda r: bar.advance(task)
        )
    console.print(report.markdown(res))
    for path in report.write(res, out):
        console.print(f"wrote {path}")
