"""`seallm --help` reads well: flags as flags (no `<bool>`), complete first sentences, the
defaults shown; and `seallm plan` defaults to the seallm system."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from seallm.cli import app
from seallm.systems import SYSTEMS

COMMANDS = [
    [],
    ["simulate"],
    ["plan"],
    ["experiment"],
    ["serve"],
    ["bench"],
    ["profile"],
    ["config"],
    ["config", "show"],
    ["config", "list"],
]


def help_of(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "seallm")
def test_help_lists_flags_as_flags(args):
    text = help_of(*args)
    assert "<bool>" not in text
    assert "--help" in text and "Show this message and exit." in text


def _commands(group) -> list:
    out = []
    for cmd in group.commands.values():
        out.append(cmd)
        if hasattr(cmd, "commands"):
            out.extend(_commands(cmd))
    return out


def test_every_command_starts_with_one_complete_sentence():
    root = typer.main.get_command(app)
    for cmd in _commands(root):
        first = (cmd.help or "").strip().split("\n\n")[0]
        assert "\n" not in first and first.endswith("."), (cmd.name, first)
        assert len(first) <= 62, (cmd.name, first)  # fits the command list of an 80-col help
    listing = help_of()
    assert "..." not in listing[listing.index("Commands:") :]  # no summary cut short
    for name in ["simulate", "plan", "experiment", "serve", "bench", "profile", "config"]:
        assert f"  {name} " in listing


def test_options_show_their_defaults_and_systems():
    text = help_of("experiment")
    for needle in ["[default: results]", "[default: 600.0]", "[default: 3 shared-", "--quick "]:
        assert needle in text
    assert "--no-quick" not in text
    plan = help_of("plan")
    assert "[default: seallm]" in plan
    flat = " ".join(plan.split())
    assert all(name in flat for name in SYSTEMS)


def test_plan_shows_the_seallm_plan_by_default():
    result = CliRunner().invoke(app, ["plan", "--preset", "h100x8"])
    assert result.exit_code == 0, result.output
    assert "seallm placement (two-stage" in result.stdout
