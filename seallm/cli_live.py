"""The `seallm` commands that run real models: serve, bench and profile."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from seallm.cli_output import BENCH_SLOWDOWN_NOTE, console, fail, print_rows
from seallm.config import ConfigError
from seallm.systems import get_system
from seallm.workload import WorkloadError


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
        raise fail(err) from err
    server.run()


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
    the metrics `seallm/metrics.py` defines, overall and per service.
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
        raise fail(err) from err
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
            raise fail(err) from err
    title = f"bench: {cfg.name} workload, {len(records)} requests"
    print_rows([res.row], title, note=BENCH_SLOWDOWN_NOTE)
    print_rows(res.per_service, "per service", first="service", note="")
    if json_out is not None:
        text = json.dumps(res.to_dict(cfg.name), indent=2)
        if json_out == "-":
            sys.stdout.write(text + "\n")
        else:
            Path(json_out).write_text(text + "\n")


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
        raise fail(err) from err
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
