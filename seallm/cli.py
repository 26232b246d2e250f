"""The `seallm` command line: simulate, plan, experiment, serve, bench, profile and config
(README.md, "Command line"; docs/architecture.md places it on top of the layers)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seallm.cli_config import config_list_cmd, config_show_cmd
from seallm.cli_live import bench_cmd, profile_cmd, serve_cmd
from seallm.cli_output import (
    PRESET_HELP,
    SYSTEMS_EPILOG,
    console,
    fail,
    load_deployment,
    out,
    print_rows,
)
from seallm.config import ConfigError
from seallm.costmodel import CostModel
from seallm.metrics import GroupRow, ResultRow, group_rows, per_service, summarize
from seallm.placement import place, service_loads
from seallm.runtime.sim import SimResult, simulate, simulation_evaluator
from seallm.systems import get_system, resolve_systems
from seallm.workload import WorkloadError

# Plain (click) help: typer's rich help prints a type column that reads `<bool>` beside every
# flag, --help included; click's lists a flag as a flag and options as `--name <type>`.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="seallm: many LLMs, shared GPUs, low latency.",
)
config_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Show the named deployments (presets) as YAML configs.",
)
app.add_typer(config_app, name="config")


@app.command("simulate", epilog=SYSTEMS_EPILOG)
def simulate_cmd(
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
    preset: Annotated[str | None, typer.Option(help=PRESET_HELP, show_default=False)] = None,
    system: Annotated[
        str, typer.Option(help="a system (see below), a comma list of systems, or all")
    ] = "all",
    trace: Annotated[Path | None, typer.Option(help="replay this trace's arrivals")] = None,
    rate_scale: Annotated[float, typer.Option(help="multiply every arrival rate")] = 1.0,
    slo_scale: Annotated[
        float | None, typer.Option(help="override every service's SLO scale")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="seconds of arrivals")] = None,
    seed: Annotated[int | None, typer.Option(help="workload seed")] = None,
    json_out: Annotated[
        str | None, typer.Option("--json", metavar="<file>", help="write results; - for stdout")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="write PNG plots into this folder")] = None,
    per_service_table: Annotated[
        bool, typer.Option("--per-service", help="also print per-service rows")
    ] = False,
    profile: Annotated[
        Path | None, typer.Option(help="measured profile (seallm profile) for iteration times")
    ] = None,
) -> None:
    """Simulate serving systems on one workload and compare them.

    Every system of one run sees the same arrivals. Prints one result row per system (and per
    service with --per-service); --json and --plot write them to files.
    """
    try:
        cfg = load_deployment(config, preset)
        if duration is not None:
            cfg.duration_s = duration
        if seed is not None:
            cfg.seed = seed
        if slo_scale is not None:
            cfg.services = [replace(s, slo_scale=slo_scale) for s in cfg.services]
        if trace is not None:
            cfg.workload = replace(cfg.workload, arrival="trace", trace=str(trace))
        if rate_scale <= 0:
            raise ConfigError(f"--rate-scale must be positive, got {rate_scale}")
        cfg.validate()
        systems = resolve_systems(system)
        records = cfg.records(rate_scale)
    except (ConfigError, WorkloadError, ValueError) as err:
        raise fail(err) from err
    console.print(
        f"{cfg.name}: {cfg.cluster.num_gpus} x {cfg.cluster.device}, {len(cfg.services)} services, "
        f"{len(records)} requests over {cfg.duration_s:.0f} s"
    )
    cost = CostModel(cfg.cluster.device_spec)
    if profile is not None:
        from seallm.profiled import Profile, ProfiledCostModel

        try:
            cost = ProfiledCostModel(cfg.cluster.device_spec, Profile.load(profile))
        except ValueError as err:
            raise fail(err) from err
    results: list[SimResult] = []
    for spec in systems:
        with _progress() as bar:
            task = bar.add_task(spec.name, total=cfg.duration_s + cfg.drain_seconds)
            try:
                res = simulate(
                    cfg,
                    spec,
                    records,
                    cost,
                    rate_scale,
                    progress=lambda t, task=task: bar.update(task, completed=t),
                )
            except (ConfigError, ValueError) as err:
                raise fail(err) from err
            bar.update(task, completed=bar.tasks[0].total)
        results.append(res)
    slo = {s.name: s.slo_scale for s in cfg.services}
    rows = [summarize(r.requests, slo, r.end_time, r.system.name, r.wall_seconds) for r in results]
    print_rows(rows, f"{cfg.name} (rate x{rate_scale:g}, {len(records)} requests)")
    svc_rows = {  # a service's row carries its system's wall time (the run's, not the service's)
        r.system.name: [
            replace(row, wall_seconds=r.wall_seconds)
            for row in per_service(r.requests, slo, r.end_time, r.system.name, slo)
        ]
        for r in results
    }
    groups = {
        r.system.name: group_rows(r.system.name, r.controller.engines.values(), r.end_time)
        for r in results
    }
    if per_service_table:
        for name, srows in svc_rows.items():
            print_rows(srows, f"{name}: per service", first="service", note="")
        print_groups([g for rows in groups.values() for g in rows])
    if json_out is not None:
        doc = {
            "preset": cfg.name,
            "rate_scale": rate_scale,
            "duration_s": cfg.duration_s,
            "results": [r.to_dict() for r in rows],
            "per_service": {k: [r.to_dict() for r in v] for k, v in svc_rows.items()},
            "groups": {k: [g.to_dict() for g in v] for k, v in groups.items()},
        }
        text = json.dumps(doc, indent=2)
        if json_out == "-":
            sys.stdout.write(text + "\n")
        else:
            Path(json_out).write_text(text + "\n")
    if plot is not None:
        _plots(
            results, svc_rows, plot, f"{cfg.name}, rate x{rate_scale:g}, {len(records)} requests"
        )


def print_groups(rows: list[GroupRow]) -> None:
    table = Table(title="group engines")
    heads = [
        "system",
        "group",
        "GPUs",
        "services",
        "busy",
        "batch",
        "KV util",
        "KV frag",
        "preempt",
        "swaps",
    ]
    for h in heads:
        table.add_column(h, justify="right")
    for g in rows:
        table.add_row(
            g.system,
            str(g.group),
            str(g.gpus),
            g.services,
            f"{g.busy_fraction:.2f}",
            f"{g.mean_batch:.1f}",
            f"{g.kv_utilization:.2f}",
            f"{g.kv_fragmentation:.3f}",
            str(g.preemptions),
            str(g.swaps),
        )
    out.print(table)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} sim s"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # a log or a pipe gets no bar (nor blank lines)
    )


def _plots(
    results: list[SimResult], svc_rows: dict[str, list[ResultRow]], out: Path, run: str
) -> None:
    from seallm.bench.plots import latency_cdf, per_service_bars

    out.mkdir(parents=True, exist_ok=True)
    lat = {
        r.system.name: [q.finish_time - q.arrival for q in r.requests if q.finish_time is not None]
        for r in results
    }
    paths = [
        latency_cdf(lat, out / "latency_cdf.png", f"Latency CDF of completed requests ({run})"),
        per_service_bars(
            svc_rows,
            "mean_normalized_latency",
            out / "per_service_norm_latency.png",
            title=f"Mean normalized latency per service ({run}); lower is better",
        ),
        per_service_bars(
            svc_rows,
            "slo_attainment",
            out / "per_service_slo.png",
            title=f"SLO attainment per service ({run}); higher is better",
        ),
    ]
    for p in paths:
        console.print(f"wrote {p}")


@app.command("plan", epilog=SYSTEMS_EPILOG)
def plan_cmd(
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
    preset: Annotated[str | None, typer.Option(help=PRESET_HELP, show_default=False)] = None,
    system: Annotated[
        str, typer.Option(help="the system whose placement to show (see below)")
    ] = "seallm",
    rate_scale: Annotated[float, typer.Option(help="multiply every arrival rate")] = 1.0,
) -> None:
    """Print the placement plan a system computes.

    One row per group: its GPUs and services, and the placement estimator's view of it
    (utilization, each service's normalized latency and SLO attainment).
    """
    import time

    from seallm.placement.demand import kv_bytes
    from seallm.placement.estimator import Estimator

    try:
        cfg = load_deployment(config, preset)
        spec = get_system(system)
        cost = CostModel(cfg.cluster.device_spec)
        loads = service_loads(cfg, rate_scale)
        t0 = time.perf_counter()
        # As the simulator places: finalists checked by a short simulation where it applies.
        evaluate = simulation_evaluator(cfg, spec, cost, rate_scale)
        plan = place(spec.placement, cfg, cost, loads, evaluate)
        solve = time.perf_counter() - t0
    except (ConfigError, ValueError) as err:
        raise fail(err) from err
    est = Estimator(cfg, cost, loads, rounds=spec.engine == "rounds")
    table = Table(title=f"{cfg.name}: {spec.name} placement ({spec.placement}, {solve:.2f} s)")
    heads = [
        "group",
        "node",
        "GPUs",
        "services (req/s)",
        "weights GB",
        "KV GB",
        "est. util",
        "est. norm lat",
        "est. SLO",
    ]
    for h in heads:
        table.add_column(h, justify="right")
    for g in plan.groups:
        models = [cfg.service(s).model_spec for s in g.services]
        shares = [(s, loads[s].rate / len(plan.hosts(s))) for s in g.services]
        e = est.group(g.size, shares)
        table.add_row(
            str(g.id),
            str(g.node),
            f"{g.first_gpu}-{g.first_gpu + g.size - 1}",
            ", ".join(f"{s} ({r:.2f})" for s, r in shares),
            f"{sum(m.weight_bytes for m in models) / 1e9:.0f}",
            f"{kv_bytes(models, g.size, cfg) / 1e9:.0f}",
            f"{e.utilization:.2f}",
            ", ".join(f"{x.normalized_latency:.3f}" for x in e.services),
            ", ".join(f"{x.slo_attainment:.2f}" for x in e.services),
        )
    out.print(table)


@app.command("experiment")
def experiment_cmd(
    name: Annotated[str, typer.Argument(help="shared-group or paper", metavar="NAME")],
    out: Annotated[Path, typer.Option(help="folder for JSON and PNG results")] = Path("results"),
    quick: Annotated[
        bool, typer.Option("--quick", help="a smaller sweep, for smoke tests (paper: <= 60 s)")
    ] = False,
    duration: Annotated[float, typer.Option(help="seconds of arrivals per run")] = 600.0,
    seeds: Annotated[
        int | None,
        typer.Option(help="workload seeds per point, averaged  [default: 3 shared-group, 1 paper]"),
    ] = None,
    sweeps: Annotated[
        str | None,
        typer.Option(help="paper: comma list of sweeps  [default: rate,slo,cv,services]"),
    ] = None,
    systems: Annotated[
        str | None,
        typer.Option(help="paper: comma list of systems  [default: seallm, baselines, ablations]"),
    ] = None,
    jobs: Annotated[
        int | None, typer.Option(help="paper: parallel simulations  [default: the CPU count]")
    ] = None,
) -> None:
    """Run a named experiment (shared-group or paper).

    Prints its tables and writes JSON, Markdown and PNG plots into --out.
    """
    from seallm.bench.experiments import EXPERIMENTS

    if name not in EXPERIMENTS:
        raise fail(ConfigError(f"experiment: {name!r} is not one of {', '.join(EXPERIMENTS)}"))
    given = {"duration_s": duration, "seeds": seeds, "sweeps": sweeps, "systems": systems}
    given["jobs"] = jobs
    try:
        EXPERIMENTS[name](out, quick=quick, **{k: v for k, v in given.items() if v is not None})
    except (ConfigError, ValueError) as err:
        raise fail(err) from err


app.command("serve", epilog=SYSTEMS_EPILOG)(serve_cmd)
app.command("bench")(bench_cmd)
app.command("profile")(profile_cmd)
config_app.command("show")(config_show_cmd)
config_app.command("list")(config_list_cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
