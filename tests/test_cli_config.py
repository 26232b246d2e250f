"""`seallm config show|list`, and `preset: NAME` with overrides in config and serve YAMLs."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from seallm.cli import app
from seallm.config import ConfigError, config_from_dict, load_config
from seallm.presets import PRESETS, get_preset
from seallm.server.settings import load_settings, settings_from_dict


@pytest.mark.parametrize("name", list(PRESETS))
def test_config_show_prints_a_config_that_loads_back_to_the_preset(name, tmp_path):
    result = CliRunner().invoke(app, ["config", "show", name])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"# seallm preset {name}: ")
    path = tmp_path / f"{name}.yaml"
    path.write_text(result.stdout)
    assert load_config(path) == get_preset(name)


def test_config_show_resolves_a_file_and_refuses_nonsense(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("preset: cpu-duo\nsystem: vllm\nserver: {port: 0}\nengine: {ageing_s: 10}\n")
    result = CliRunner().invoke(app, ["config", "show", str(path)])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["engine"]["ageing_s"] == 10 and shown["name"] == "cpu-duo"
    assert "server" not in shown and "system" not in shown
    bad = CliRunner().invoke(app, ["config", "show", "paper64"])
    assert bad.exit_code == 2 and "neither a preset" in bad.output


def test_config_list_names_every_preset():
    result = CliRunner().invoke(app, ["config", "list"])
    assert result.exit_code == 0, result.output
    for name in PRESETS:
        assert name in result.stdout


def test_a_preset_with_overrides_merges_sections_and_replaces_the_rest():
    base = get_preset("cpu-duo")
    cfg = config_from_dict(
        {
            "preset": "cpu-duo",
            "engine": {"ageing_s": 10},
            "workload": {"rate": 0.5},
            "services": [{"name": "only", "model": "smollm2-135m"}],
            "duration_s": 30,
        }
    )
    assert cfg.name == "cpu-duo"
    assert cfg.engine.ageing_s == 10
    assert cfg.engine.max_batch_size == base.engine.max_batch_size  # merged, not replaced
    assert (cfg.workload.rate, cfg.workload.cv) == (0.5, base.workload.cv)
    assert [s.name for s in cfg.services] == ["only"]  # services replace
    assert cfg.duration_s == 30 and cfg.cluster == base.cluster
    assert config_from_dict({"preset": "h100x8"}) == get_preset("h100x8")
    with pytest.raises(ConfigError, match=r"engine\.colour: unknown key"):
        config_from_dict({"preset": "cpu-duo", "engine": {"colour": 1}})
    with pytest.raises(ConfigError, match="preset: 'paper64' is not one of"):
        config_from_dict({"preset": "paper64"})


def test_a_serve_yaml_takes_a_preset_with_engine_and_server_overrides(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(
        "preset: cpu-duo\nsystem: vllm\nengine: {ageing_s: 10}\nserver: {port: 0, max_queue: 8}\n"
    )
    settings = load_settings(path)
    assert settings.config.name == "cpu-duo" and settings.config.engine.ageing_s == 10
    assert (settings.system.name, settings.server.port, settings.server.max_queue) == (
        "vllm",
        0,
        8,
    )
    plain = settings_from_dict({"preset": "cpu-duo"})
    assert plain.config == get_preset("cpu-duo") and plain.system.name == "seallm"


def test_simulate_takes_a_preset_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: h100x8\nduration_s: 10\nworkload: {rate: 2}\n")
    result = CliRunner().invoke(
        app, ["simulate", "--config", str(path), "--system", "vllm", "--json", "-"]
    )
    assert result.exit_code == 0, result.output
    assert '"preset": "h100x8"' in result.stdout and '"duration_s": 10' in result.stdout
