"""The `seallm` command line (DESIGN.md's contract)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from seallm.config import Config, ConfigError, load_config
from seallm.costmodel import CostModel
from seallm.metrics import GroupRow, ResultRow, group_rows, per_service, summarize
from seallm.placement import get_placement, service_loads
from seallm.presets import get_preset
from seallm.runtime.sim import SimResult, simulate
from seallm.systems import get_system, resolve_systems
from seallm.workload import WorkloadError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="seallm: many LLMs, shared GPUs, low latency."
)
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)


def _load(config: Path | None, preset: str | None) -> Config:
    if config is not None and preset is not None:
        raise ConfigError("give --config or --preset, not both")
    if config is not None:
        return load_config(config)
    return get_preset(preset or "paper32")


def _fail(err: Exception) -> typer.Exit:
    console.print(f"[red]error:[/red] {err}")
    return typer.Exit(2)


ROW_COLUMNS = [
    ("system", "system", "{}"),
    ("requests", "reqs", "{}"),
    ("completed", "done", "{}"),
    ("mean_normalized_latency", "norm lat s/tok", "{:.4f}"),
    ("mean_slowdown", "slowdown", "{:.2f}"),
    ("p99_latency", "P99 lat s", "{:.2f}"),
    ("mean_ttft", "TTFT s", "{:.3f}"),
    ("p99_ttft", "P99 TTFT s", "{:.2f}"),
    ("mean_tpot", "TPOT s", "{:.4f}"),
    ("slo_attainment", "SLO", "{:.3f}"),
    ("wall_seconds", "wall s", "{:.1f}"),
]


def print_rows(rows: list[ResultRow], title: str, first: str = "system") -> None:
    table = Table(title=title)
    cols = [(first, first, "{}"), *ROW_COLUMNS[1:]] if first != "system" else ROW_COLUMNS
    for _, header, _ in cols:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(fmt.format(getattr(row, key)) for key, _, fmt in cols))
    out.print(table)


@app.command("simulate")
def simulate_cmd(
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
    preset: Annotated[str | None, typer.Option(help="paper32 | h100x8 | cpu-duo")] = None,
    system: Annotated[str, typer.Option(help="a system name, a comma list, or all")] = "all",
    trace: Annotated[Path | None, typer.Option(help="replay this trace's arrivals")] = None,
    rate_scale: Annotated[float, typer.Option(help="multiply every arrival rate")] = 1.0,
    slo_scale: Annotated[
        float | None, typer.Option(help="override every service's SLO scale")
    ] = None,
    duration: Annotated[float | None, typer.Option(help="seconds of arrivals")] = None,
    seed: Annotated[int | None, typer.Option(help="workload seed")] = None,
    json_out: Annotated[
        str | None, typer.Option("--json", help="write results; - for stdout")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="write PNG plots into this folder")] = None,
    per_service_table: Annotated[
        bool, typer.Option("--per-service", help="also print per-service rows")
    ] = False,
    profile: Annotated[
        Path | None, typer.Option(help="measured profile (seallm profile) for iteration times")
    ] = None,
) -> None:
    """Simulate systems on one workload (all in one run, same arrivals) and compare them."""
    try:
        cfg = _load(config, preset)
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
        raise _fail(err) from err
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
            raise _fail(err) from err
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
                raise _fail(err) from err
            bar.update(task, completed=bar.tasks[0].total)
        results.append(res)
    slo = {s.name: s.slo_scale for s in cfg.services}
    rows = [summarize(r.requests, slo, r.end_time, r.system.name, r.wall_seconds) for r in results]
    print_rows(rows, f"{cfg.name} (rate x{rate_scale:g}, {len(records)} requests)")
    svc_rows = {
        r.system.name: per_service(r.requests, slo, r.end_time, r.system.name, slo) for r in results
    }
    groups = {
        r.system.name: group_rows(r.system.name, r.controller.engines.values(), r.end_time)
        for r in results
    }
    if per_service_table:
        for name, srows in svc_rows.items():
            print_rows(srows, f"{name}: per service", first="service")
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
        _plots(results, svc_rows, plot)


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
    )


def _plots(results: list[SimResult], svc_rows: dict[str, list[ResultRow]], out: Path) -> None:
    from seallm.bench.plots import latency_cdf, per_service_bars

    out.mkdir(parents=True, exist_ok=True)
    lat = {
        r.system.name: [q.finish_time - q.arrival for q in r.requests if q.finish_time is not None]
        for r in results
    }
    paths = [
        latency_cdf(lat, out / "latency_cdf.png"),
        per_service_bars(
            svc_rows, "mean_normalized_latency", out / "per_service_norm_latency.png", "s/token"
        ),
        per_service_bars(svc_rows, "slo_attainment", out / "per_service_slo.png", "SLO attainment"),
    ]
    for p in paths:
        console.print(f"wrote {p}")


@app.command("plan")
def plan_cmd(
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
    preset: Annotated[str | None, typer.Option(help="paper32 | h100x8 | cpu-duo")] = None,
    system: Annotated[str, typer.Option(help="system whose placement to show")] = "vllm",
    rate_scale: Annotated[float, typer.Option(help="multiply every arrival rate")] = 1.0,
) -> None:
    """Print the placement plan a system computes, with the placement estimator's view of
    each group: utilization, and each service's normalized latency and SLO attainment."""
    import time

    from seallm.placement.demand import kv_bytes
    from seallm.placement.estimator import Estimator

    try:
        cfg = _load(config, preset)
        spec = get_system(system)
        cost = CostModel(cfg.cluster.device_spec)
        loads = service_loads(cfg, rate_scale)
        t0 = time.perf_counter()
        plan = get_placement(spec.placement)(cfg, cost, loads)
        solve = time.perf_counter() - t0
    except (ConfigError, ValueError) as err:
        raise _fail(err) from err
    est = Estimator(cfg, cost, loads)
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
    name: Annotated[str, typer.Argument(help="shared-group | paper")],
    out: Annotated[Path, typer.Option(help="folder for JSON and PNG results")] = Path("results"),
    quick: Annotated[bool, typer.Option(help="a smaller sweep (for smoke tests)")] = False,
    duration: Annotated[float | None, typer.Option(help="seconds of arrivals per run")] = None,
    seeds: Annotated[int | None, typer.Option(help="workload seeds per point (averaged)")] = None,
    sweeps: Annotated[str | None, typer.Option(help="paper: comma list of sweeps")] = None,
    systems: Annotated[str | None, typer.Option(help="paper: comma list of systems")] = None,
    jobs: Annotated[int | None, typer.Option(help="paper: parallel simulations")] = None,
) -> None:
    """Run a named experiment: tables on the terminal, JSON and PNG plots in --out."""
    from seallm.bench.experiments import EXPERIMENTS

    if name not in EXPERIMENTS:
        raise _fail(ConfigError(f"experiment: {name!r} is not one of {', '.join(EXPERIMENTS)}"))
    given = {"duration_s": duration, "seeds": seeds, "sweeps": sweeps, "systems": systems}
    given["jobs"] = jobs
    try:
        EXPERIMENTS[name](out, quick=quick, **{k: v for k, v in given.items() if v is not None})
    except (ConfigError, ValueError) as err:
        raise _fail(err) from err


@app.command("serve")
def serve_cmd(
    config: Annotated[Path | None, typer.Option(help="serve YAML (default: cpu-duo)")] = None,
    host: Annotated[str | None, typer.Option(help="address to bind")] = None,
    port: Annotated[int | None, typer.Option(help="port (0: any free port)")] = None,
    system: Annotated[str | None, typer.Option(help="seallm | vllm | another system")] = None,
    backend: Annotated[
        str | None, typer.Option(help="inprocess (default) | ray: one Ray actor per group")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="backend ray: the cluster (auto, HOST:PORT); none: local")
    ] = None,
) -> None:
    """Serve the config's models behind an OpenAI-compatible API (default: cpu-duo, the two
    real small models on this CPU, with the seallm system). With --backend ray, each group of
    the system's placement runs in a Ray actor (docs/ray.md)."""
    from seallm.executor.threads import reserve_for_engine
    from seallm.server.launch import build_server
    from seallm.server.settings import default_settings, load_settings

    try:
        ray_options = {"backend": backend, "ray_address": address}
        overrides = {k: v for k, v in ray_options.items() if v is not None}
        settings = load_settings(config, overrides) if config is not None else default_settings()
        if system is not None:
            settings.system = get_system(system)
        if host is not None:
            settings.server.host = host
        if port is not None:
            settings.server.port = port
        if backend is not None:
            settings.server.backend = backend
        if address is not None:
            settings.server.ray_address = address
        settings.validate()
        reserve_for_engine()  # before loading: the engine thread gets the intra-op threads
        server = build_server(
            settings, announce=lambda m: console.print(m, soft_wrap=True, highlight=False)
        )
    except (ConfigError, ValueError) as err:
        raise _fail(err) from err
    server.run()


@app.command("bench")
def bench_cmd(
    base_url: Annotated[
        list[str], typer.Option(help="server URL; repeat to route models to several servers")
    ],
    workload: Annotated[
        str | None, typer.Option(help="PRESET[,key=value...] (default cpu-duo's workload)")
    ] = None,
    trace: Annotated[Path | None, typer.Option(help="replay this trace's arrivals")] = None,
    duration: Annotated[float, typer.Option(help="seconds of arrivals")] = 60.0,
    rate_scale: Annotated[float, typer.Option(help="multiply every arrival rate")] = 1.0,
    seed: Annotated[int, typer.Option(help="workload seed")] = 0,
    label: Annotated[str | None, typer.Option(help="the row's system name")] = None,
    standalone_from: Annotated[
        Path | None, typer.Option(help="reuse the standalone latencies of an earlier --json")
    ] = None,
    json_out: Annotated[
        str | None, typer.Option("--json", help="write results; - for stdout")
    ] = None,
) -> None:
    """Replay a workload against OpenAI-compatible servers and report DESIGN.md's metrics
    (standalone latency measured by solo probes first; see seallm/bench/standalone.py)."""
    import asyncio

    import httpx

    from seallm.bench.serving import load_fits, run_bench, workload_config

    try:
        fits = load_fits(standalone_from) if standalone_from is not None else None
        cfg = workload_config(workload, str(trace) if trace is not None else None)
        cfg.duration_s, cfg.seed = duration, seed
        records = cfg.records(rate_scale)
    except (ConfigError, WorkloadError, ValueError) as err:
        raise _fail(err) from err
    console.print(
        f"{len(records)} requests over {duration:g} s to {', '.join(base_url)}; "
        "probing standalone latency first"
    )
    with Progress(
        TextColumn("requests"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("bench", total=len(records))
        try:
            res = asyncio.run(
                run_bench(
                    base_url,
                    cfg,
                    records,
                    label,
                    lambda done, total: bar.update(task, completed=done),
                    seed,
                    fits,
                )
            )
        except (ConfigError, OSError, httpx.HTTPError) as err:
            raise _fail(err) from err
    print_rows([res.row], f"bench: {cfg.name} workload, {len(records)} requests")
    print_rows(res.per_service, "per service", first="service")
    if json_out is not None:
        text = json.dumps(res.to_dict(cfg.name), indent=2)
        if json_out == "-":
            sys.stdout.write(text + "\n")
        else:
            Path(json_out).write_text(text + "\n")


@app.command("profile")
def profile_cmd(
    config: Annotated[Path | None, typer.Option(help="serve YAML (default: cpu-duo)")] = None,
    out: Annotated[Path, typer.Option(help="profile file to write")] = Path("profile.json"),
    repeats: Annotated[int, typer.Option(help="timings per point (median)")] = 3,
    quick: Annotated[bool, typer.Option(help="a small grid (smoke tests)")] = False,
    from_step_log: Annotated[
        Path | None,
        typer.Option(help="fit to a server's step log (server.step_log) instead of timing"),
    ] = None,
) -> None:
    """Time the real engine's prefill and decode iterations for each configured model on its
    device and write a profile; `seallm simulate --profile FILE` uses it instead of the
    roofline cost model. With --from-step-log, fit the steps a server logged while serving
    (host work and contention included; docs/validation.md)."""
    from seallm.bench.profiler import Grid, grid_size, profile_models
    from seallm.executor.threads import reserve_for_engine, run_in_engine_thread
    from seallm.profiled import profile_from_steps
    from seallm.server.launch import load_models
    from seallm.server.settings import default_settings, load_settings

    try:
        settings = load_settings(config) if config is not None else default_settings()
        if from_step_log is not None:
            model_of = {s.name: s.model_spec.name for s in settings.config.services}
            prof = profile_from_steps(from_step_log, settings.server.device, model_of)
            _report_profile(prof, out)
            return
        reserve_for_engine()  # before loading: time in an engine thread, as serve runs steps
        models = load_models(settings, announce=lambda m: console.print(m, highlight=False))
    except (ConfigError, ValueError) as err:
        raise _fail(err) from err
    grid = Grid.quick() if quick else Grid()
    device = str(next(iter(models.values())).device)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("profiling", total=grid_size(grid, repeats) * len(models))
        prof = run_in_engine_thread(
            lambda: profile_models(
                models, device, grid, repeats, on_point=lambda s: bar.advance(task)
            )
        )
    _report_profile(prof, out)


def _report_profile(prof, out: Path) -> None:
    prof.save(out)
    for p in prof.profiles:
        err = [abs(p.predict(m) / m.seconds - 1) for m in p.measurements]
        console.print(
            f"{p.model}: {len(p.measurements)} points, fit median error "
            f"{sorted(err)[len(err) // 2]:.1%}"
        )
    console.print(f"wrote {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
