"""What every `seallm` command shares: the consoles, errors, and the result tables."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from seallm.config import Config, ConfigError, load_config
from seallm.metrics import ResultRow
from seallm.presets import PRESETS, get_preset
from seallm.systems import SYSTEMS

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


def load_deployment(config: Path | None, preset: str | None) -> Config:
    if config is not None and preset is not None:
        raise ConfigError("give --config or --preset, not both")
    if config is not None:
        return load_config(config)
    return get_preset(preset or "paper32")


def fail(err: Exception) -> typer.Exit:
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
