"""`seallm config`: the named deployments (presets) as YAML configs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from seallm.cli_output import fail, out
from seallm.config import ConfigError
from seallm.presets import PRESETS, get_preset


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
        raise fail(err) from err
    sys.stdout.write(head + dump_config(cfg))


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
