"""The `seallm` command line (DESIGN.md's contract)."""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
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
from seallm.placement import place, service_loads
from seallm.presets import PRESETS, get_preset
from seallm.runtime.sim import SimResult, simulate, simulation_evaluator
from seallm.systems import SYSTEMS, get_system, resolve_systems
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
console = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)

PRESET_HELP = f"a named deployment: {' | '.join(PRESETS)}  [default: paper32]"
# The systems' names, under a command's options (\b: click keeps these lines as they are).
SYSTEMS_EPILOG = "\b\n" + textwrap.fill(
    "Systems: " + ", ".join(SYSTEMS) + ".",
    width=78,
    subsequent_indent="  ",
    break_on_hyphens=False,
    break_long_words=False,
)
# The footnote of every result table (metrics.py states the definition).
SLOWDOWN_NOTE = (
    "slowdown = latency / standalone latency on the service's smallest group (can be < 1 "
    "where a system runs a service on a larger group)"
)
BENCH_SLOWDOWN_NOTE = (
    "slowdown = latency / standalone latency, measured by solo probes on the idle server"
)


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


def print_rows(
    rows: list[ResultRow], title: str, first: str = "system", note: str = SLOWDOWN_NOTE
) -> None:
    """A table of result rows, `note` under it. Per-service tables (`first="service"`) leave
    out the wall time: it is the whole run's, not a service's."""
    table = Table(title=title, caption=note or None, caption_justify="left")
    if first == "system":
        cols = ROW_COLUMNS
    else:
        cols = [(first, first, "{}"), *(c for c in ROW_COLUMNS[1:] if c[0] != "wall_seconds")]
    for _, header, _ in cols:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*(fmt.format(getattr(row, key)) for key, _, fmt in cols))
    out.print(table)


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
        cfg = _load(config, preset)
        spec = get_system(system)
        cost = CostModel(cfg.cluster.device_spec)
        loads = service_loads(cfg, rate_scale)
        t0 = time.perf_counter()
        # As the simulator places: finalists checked by a short simulation where it applies.
        evaluate = simulation_evaluator(cfg, spec, cost, rate_scale)
        plan = place(spec.placement, cfg, cost, loads, evaluate)
        solve = time.perf_counter() - t0
    except (ConfigError, ValueError) as err:
        raise _fail(err) from err
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
        raise _fail(ConfigError(f"experiment: {name!r} is not one of {', '.join(EXPERIMENTS)}"))
    given = {"duration_s": duration, "seeds": seeds, "sweeps": sweeps, "systems": systems}
    given["jobs"] = jobs
    try:
        EXPERIMENTS[name](out, quick=quick, **{k: v for k, v in given.items() if v is not None})
    except (ConfigError, ValueError) as err:
        raise _fail(err) from err


@app.command("serve", epilog=SYSTEMS_EPILOG)
def serve_cmd(
    config: Annotated[Path | None, typer.Option(help="serve YAML (default: cpu-duo)")] = None,
    host: Annotated[str | None, typer.Option(help="address to bind")] = None,
    port: Annotated[int | None, typer.Option(help="port (0: any free port)")] = None,
    system: Annotated[
        str | None,
        typer.Option(help="the serving system (see below)  [default: seallm]"),
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="inprocess (default) | ray: one Ray actor per group")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="backend ray: the cluster (auto, HOST:PORT); none: local")
    ] = None,
) -> None:
    """Serve the config's models behind an OpenAI-compatible API.

    By default the cpu-duo deployment (the two real small models on this CPU) with the seallm
    system, on http://127.0.0.1:8000/v1. With --backend ray, each group of the system's
    placement runs in a Ray actor (docs/ray.md).
    """
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
        list[str],
        typer.Option(metavar="<url>", help="server URL; repeat to route models to several servers"),
    ],
    workload: Annotated[
        str | None,
        typer.Option(
            help="PRESET or FILE, then ,key=value workload overrides  [default: cpu-duo's "
            "workload at rate=0.3 req/s, what the default server on 2 CPU cores serves]"
        ),
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
        str | None, typer.Option("--json", metavar="<file>", help="write results; - for stdout")
    ] = None,
) -> None:
    """Replay a workload against OpenAI-compatible servers.

    First it measures each model's standalone latency with solo requests on the idle servers
    (seallm/bench/standalone.py), then it sends every request at its arrival time and reports
    DESIGN.md's metrics, overall and per service.
    """
    import asyncio

    import httpx

    from seallm.bench.serving import PHASES, ProgressLines, load_fits, run_bench, workload_config

    try:
        fits = load_fits(standalone_from) if standalone_from is not None else None
        cfg = workload_config(workload, str(trace) if trace is not None else None)
        cfg.duration_s, cfg.seed = duration, seed
        records = cfg.records(rate_scale)
    except (ConfigError, WorkloadError, ValueError) as err:
        raise _fail(err) from err
    console.print(
        f"{len(records)} requests over {duration:g} s ({cfg.name} workload, "
        f"{cfg.workload.rate * rate_scale:g} req/s) to {', '.join(base_url)}; "
        "probing standalone latency first"
    )
    # A bar on a terminal; plain lines every 10 s where stderr is a log or a pipe.
    with contextlib.ExitStack() as stack:
        if console.is_terminal:
            bar = stack.enter_context(
                Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                    TimeElapsedColumn(),
                    console=console,
                    transient=True,
                )
            )
            task = bar.add_task(PHASES["probing"], total=1)

            def progress(phase: str, done: int, total: int) -> None:
                bar.update(task, description=PHASES[phase], completed=done, total=total)
        else:
            progress = ProgressLines()
        try:
            res = asyncio.run(run_bench(base_url, cfg, records, label, progress, seed, fits))
        except (ConfigError, OSError, httpx.HTTPError) as err:
            raise _fail(err) from err
    title = f"bench: {cfg.name} workload, {len(records)} requests"
    print_rows([res.row], title, note=BENCH_SLOWDOWN_NOTE)
    print_rows(res.per_service, "per service", first="service", note="")
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
    quick: Annotated[bool, typer.Option("--quick", help="a small grid (smoke tests)")] = False,
    from_step_log: Annotated[
        Path | None,
        typer.Option(help="fit to a server's step log (server.step_log) instead of timing"),
    ] = None,
) -> None:
    """Time the real engine's iterations and write a profile.

    It times prefill and decode for each configured model on its device; `seallm simulate
    --profile FILE` then uses the profile instead of the roofline cost model. With
    --from-step-log, it fits the steps a server logged while serving instead (host work and
    contention included; docs/validation.md).
    """
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


@config_app.command("show")
def config_show_cmd(
    name: Annotated[
        str,
        typer.Argument(
            metavar="PRESET|FILE",
            help=f"a preset ({', '.join(PRESETS)}) or a config YAML (preset: NAME plus overrides)",
        ),
    ],
) -> None:
    """Print a preset (or a config file, resolved) as a YAML config.

    The output is itself a valid config: save it, edit it and pass it to --config, or keep
    `preset: NAME` and write only the keys to change (a serve YAML also takes system: and
    server:). For a file, its system: and server: keys are left out.
    """
    from seallm.config import config_from_dict as from_dict
    from seallm.config import dump_config, read_yaml

    try:
        if name in PRESETS:
            cfg = get_preset(name)
            head = f"# seallm preset {name}: {_first_line(PRESETS[name].__doc__)}\n"
        elif Path(name).is_file():
            data = read_yaml(name) or {}
            if not isinstance(data, dict):
                raise ConfigError(f"{name}: expected a mapping at the top level")
            try:
                cfg = from_dict({k: v for k, v in data.items() if k not in ("system", "server")})
            except ConfigError as err:
                raise ConfigError(f"{name}: {err}") from err
            head = f"# {name}, resolved\n"
        else:
            raise ConfigError(f"{name!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    except ConfigError as err:
        raise _fail(err) from err
    sys.stdout.write(head + dump_config(cfg))


@config_app.command("list")
def config_list_cmd() -> None:
    """List the presets: cluster, services, load and duration."""
    table = Table(title="presets (seallm config show NAME prints one as YAML)")
    for h in ["preset", "cluster", "services", "rate req/s", "duration s", "what it is"]:
        table.add_column(h, justify="left" if h in ("preset", "what it is") else "right")
    for name in PRESETS:
        cfg = get_preset(name)
        c = cfg.cluster
        table.add_row(
            name,
            f"{c.num_nodes} x {c.gpus_per_node} {c.device}",
            str(len(cfg.services)),
            f"{cfg.workload.rate:g}",
            f"{cfg.duration_s:g}",
            _first_line(PRESETS[name].__doc__),
        )
    out.print(table)


def _first_line(doc: str | None) -> str:
    """A docstring's first sentence, on one line."""
    text = " ".join((doc or "").split())
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
