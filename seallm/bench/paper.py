"""The paper's evaluation on `paper32`: every system on the same arrivals, swept over request
rate, SLO scale, burstiness (Gamma CV) and the number of services.

Each sweep varies one knob around a base point (rate x`BASE_RATE`, SLO scale 5, CV 2, all 12
services); each (point, system, seed) is one simulation, run in a process pool. Rows are
averaged over seeds. The report (`paper_report.py`) turns the rows into tables, seallm's
ratios to each baseline, and plots.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace

from seallm.config import Config
from seallm.costmodel import CostModel
from seallm.metrics import ResultRow, summarize
from seallm.presets import get_preset
from seallm.runtime.sim import simulate
from seallm.systems import SYSTEMS, get_system

BASELINES = ("vllm", "alpaserve", "muxserve")
UPPER_BOUNDS = ("muxserve-ideal",)  # idealized baselines, reported, no target
ABLATIONS = (
    "seallm-db",
    "seallm-noreplace",
    "seallm-fixed-interval",
    "seallm-fcfs",
    "seallm-static-kv",
)
BASE_RATE = 2.0  # rate scale of the base point: paper32 at 48 req/s, a high load
METRICS = ("mean_normalized_latency", "p99_latency", "slo_attainment")


@dataclass(frozen=True)
class Sweep:
    name: str  # rate | slo | cv | services
    label: str  # the x axis
    values: tuple[float, ...]
    loaded_from: float  # points with x >= this are at moderate to high load

    def loaded(self, x: float) -> bool:
        return x >= self.loaded_from


SWEEPS = (
    Sweep("rate", "request rate (x paper32's 24 req/s)", (1.0, 1.5, 2.0, 3.0, 4.0), 1.5),
    Sweep("slo", "SLO scale (x standalone latency)", (2.0, 3.0, 5.0, 10.0), 0.0),
    Sweep("cv", "burstiness (Gamma CV of arrivals)", (1.0, 2.0, 4.0, 8.0), 0.0),
    Sweep("services", "number of services", (4.0, 8.0, 12.0), 0.0),
)


def point_config(sweep: str, x: float, duration_s: float, seed: int) -> tuple[Config, float]:
    """paper32 with one knob set to `x`; returns the config and the rate scale to run it at."""
    cfg = get_preset("paper32")
    cfg.duration_s = duration_s
    cfg.seed = seed
    rate_scale = BASE_RATE
    if sweep == "rate":
        rate_scale = x
    elif sweep == "slo":
        cfg.services = [replace(s, slo_scale=x) for s in cfg.services]
    elif sweep == "cv":
        cfg.workload = replace(cfg.workload, cv=x)
    elif sweep == "services":
        # The most popular services; the total rate stays paper32's.
        cfg.services = cfg.services[: int(x)]
    else:
        raise ValueError(f"sweep: {sweep!r} is not one of {', '.join(s.name for s in SWEEPS)}")
    return cfg.validate(), rate_scale


@dataclass
class Run:
    sweep: str
    x: float
    system: str
    seed: int
    row: ResultRow
    moves: int = 0


def run_one(sweep: str, x: float, system: str, seed: int, duration_s: float) -> Run:
    cfg, rate_scale = point_config(sweep, x, duration_s, seed)
    records = cfg.records(rate_scale)
    res = simulate(cfg, get_system(system), records, CostModel(cfg.cluster.device_spec), rate_scale)
    slo = {s.name: s.slo_scale for s in cfg.services}
    row = summarize(res.requests, slo, res.end_time, system, res.wall_seconds)
    return Run(sweep, x, system, seed, row, int(getattr(res, "moves", 0) or 0))


@dataclass
class PaperResult:
    duration_s: float
    seeds: int
    systems: list[str]
    sweeps: list[Sweep]
    rows: dict[tuple[str, float, str], ResultRow] = field(default_factory=dict)
    moves: dict[tuple[str, float, str], float] = field(default_factory=dict)


def default_systems() -> list[str]:
    wanted = ["seallm", *BASELINES, *UPPER_BOUNDS, *ABLATIONS]
    return [s for s in wanted if s in SYSTEMS]


def run_paper(
    sweeps: Sequence[Sweep],
    systems: Sequence[str],
    duration_s: float,
    seeds: int,
    jobs: int | None = None,
    on_run: Callable[[Run], None] | None = None,
) -> PaperResult:
    from seallm.bench.shared_group import average_rows

    tasks = [
        (sw.name, x, system, seed)
        for sw in sweeps
        for x in sw.values
        for system in systems
        for seed in range(1, seeds + 1)
    ]
    runs: list[Run] = []
    jobs = jobs or max(1, min(len(tasks), os.cpu_count() or 1))
    if jobs == 1:
        for t in tasks:
            runs.append(run_one(*t, duration_s))
            if on_run:
                on_run(runs[-1])
    else:
        with ProcessPoolExecutor(jobs) as pool:
            futures = [pool.submit(run_one, *t, duration_s) for t in tasks]
            for f in as_completed(futures):
                runs.append(f.result())
                if on_run:
                    on_run(runs[-1])
    result = PaperResult(duration_s, seeds, list(systems), list(sweeps))
    by_key: dict[tuple[str, float, str], list[Run]] = {}
    for r in runs:
        by_key.setdefault((r.sweep, r.x, r.system), []).append(r)
    for key, rs in by_key.items():
        result.rows[key] = average_rows([r.row for r in sorted(rs, key=lambda r: r.seed)])
        result.moves[key] = sum(r.moves for r in rs) / len(rs)
    return result
