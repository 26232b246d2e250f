"""Simulator speed: simulated seconds and requests per wall second on a preset.

    python scripts/bench_simulator.py [--preset paper32] [--duration 3600] [--system vllm]
    python scripts/bench_simulator.py --system seallm --duration 900 --source feb3e2b \
        --source . --rounds 2

Target (issue 2): one simulated hour of paper32 at its default load in at most 60 s of wall
time on one core. Threads are pinned to one (the simulator is single-threaded Python; this
keeps numpy from borrowing a second core).

With `--source` (repeatable) each run uses another copy of the code: a git commit (its
`seallm/` is exported with `git archive`, so the repository is not touched) or a directory
holding a `seallm/` package (`.`: the working tree, uncommitted changes included). Each
source runs in its own process, one after another, `--rounds` times over (alternated, so
that a busy machine slows every source alike); a summary gives each source's best and mean.
`cpu s` is the process's CPU time over the same span as `wall s` (less sensitive to other
jobs on a shared machine); `place s` is the placement's share of `wall s` (with its
simulation check, where the source has one).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HEADS = [
    "wall s",
    "cpu s",
    "place s",
    "sim s",
    "sim s/wall s",
    "req/wall s",
    "iterations",
    "steps",
    "done",
]
ROW_TAG = "ROW "  # a worker's result line: the tag, then the row as JSON


def run_here(args: argparse.Namespace, emit_json: bool) -> None:
    """Benchmark the `seallm` package this interpreter imports; print one row per system."""
    import seallm.runtime.sim as sim_module
    from seallm.costmodel import CostModel
    from seallm.metrics import summarize
    from seallm.presets import get_preset
    from seallm.systems import resolve_systems
    from seallm.workload import generate

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    placing = _time_placement(sim_module)
    cfg = get_preset(args.preset)
    cfg.duration_s = args.duration
    t0 = time.perf_counter()
    records = generate(
        cfg.workload,
        [(s.name, s.weight) for s in cfg.services],
        cfg.duration_s,
        cfg.seed,
        args.rate_scale,
    )
    gen = time.perf_counter() - t0
    if not emit_json:
        print(
            f"{cfg.name}: {len(records)} requests over {cfg.duration_s:.0f} s "
            f"({gen:.2f} s to generate)"
        )
        print(f"{'system':<20}" + "".join(f"{h:>13}" for h in HEADS))
    slo = {s.name: s.slo_scale for s in cfg.services}
    for system in resolve_systems(args.system):
        placing.clear()
        cpu = time.process_time()
        res = sim_module.simulate(
            cfg, system, records, CostModel(cfg.cluster.device_spec), args.rate_scale
        )
        cpu = time.process_time() - cpu
        engines = res.controller.engines.values()
        row = {
            "system": system.name,
            "wall s": res.wall_seconds,
            "cpu s": cpu,
            "place s": placing[-1] if placing else 0.0,
            "sim s": res.end_time,
            "sim s/wall s": res.end_time / res.wall_seconds,
            "req/wall s": len(records) / res.wall_seconds,
            "iterations": sum(e.iterations for e in engines),
            "steps": sum(e.steps for e in engines),
            "done": summarize(res.requests, slo, res.end_time, system.name).completed,
        }
        if emit_json:
            print(ROW_TAG + json.dumps(row), flush=True)
        else:
            print(_format(system.name, row), flush=True)


def _time_placement(sim_module: object) -> list[float]:
    """Wrap the simulator's Controller so that building it (the placement) is timed. The
    outermost simulation's controller is built last (a placement check simulates inside it),
    so the list's last entry is its placement time."""
    build = sim_module.Controller  # type: ignore[attr-defined]
    seconds: list[float] = []

    def timed(*args: object, **kwargs: object) -> object:
        t0 = time.perf_counter()
        ctl = build(*args, **kwargs)
        seconds.append(time.perf_counter() - t0)
        return ctl

    sim_module.Controller = timed  # type: ignore[attr-defined]
    return seconds


def _format(label: str, row: dict[str, float | int | str]) -> str:
    cells = []
    for h in HEADS:
        v = row[h]
        if isinstance(v, float):
            cells.append(f"{v:.1f}" if h in ("wall s", "cpu s", "place s") else f"{v:.0f}")
        else:
            cells.append(str(v))
    return f"{label:<20}" + "".join(f"{c:>13}" for c in cells)


def export(source: str, into: Path) -> Path:
    """A directory that holds `source`'s `seallm/` package: the directory itself, or a
    commit's package exported into `into`."""
    if Path(source, "seallm").is_dir():
        return Path(source).resolve()
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{source}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    root = into / commit[:12]
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as tar:
        subprocess.run(["git", "archive", commit, "seallm"], stdout=tar, check=True)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as archive:
            archive.extractall(root, filter="data")
    return root


def run_sources(args: argparse.Namespace) -> None:
    """Each source in its own process, alternated over the rounds; then a summary."""
    worker = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    worker += ["--preset", args.preset, "--duration", str(args.duration)]
    worker += ["--system", args.system, "--rate-scale", str(args.rate_scale)]
    walls: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {s: export(s, Path(tmp)) for s in args.source}
        print(f"{'round source system':<32}" + "".join(f"{h:>13}" for h in HEADS))
        for k in range(args.rounds):
            for source, root in roots.items():
                env = {**os.environ, "PYTHONPATH": str(root)}
                out = subprocess.run(worker, env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    sys.exit(f"{source}: the benchmark failed\n{out.stderr}")
                for line in out.stdout.splitlines():
                    if line.startswith(ROW_TAG):
                        row = json.loads(line[len(ROW_TAG) :])
                        label = f"{k + 1} {source} {row['system']}"
                        print(f"{label:<32}" + _format("", row)[20:], flush=True)
                        runs = walls.setdefault((source, row["system"]), [])
                        runs.append((row["wall s"], row["cpu s"]))
    print(f"{'by source: best / mean over the rounds':<38}{'wall s':>17}{'cpu s':>17}")
    for (source, system), runs in walls.items():
        cells = ""
        for ws in zip(*runs, strict=True):
            cells += f"{min(ws):>9.1f}{sum(ws) / len(ws):>8.1f}"
        print(f"  {source:<16} {system:<20}{cells}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper32")
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument("--system", default="all")
    ap.add_argument("--rate-scale", type=float, default=1.0)
    ap.add_argument(
        "--source",
        action="append",
        default=[],
        help="a commit or a source directory to benchmark (repeatable; default: this code)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="runs of every source, alternated")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.source:
        run_sources(args)
    else:
        run_here(args, emit_json=args.worker)


if __name__ == "__main__":
    main()
