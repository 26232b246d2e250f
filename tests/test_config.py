"""Configs and presets: valid ones load, invalid ones name the field and the choices."""

from __future__ import annotations

import pytest

from seallm.config import ConfigError, config_from_dict, dump_config, load_config
from seallm.presets import PRESETS, get_preset


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid(name):
    cfg = get_preset(name)
    assert cfg.name == name and cfg.services


def test_paper32_matches_design():
    cfg = get_preset("paper32")
    assert (cfg.cluster.num_nodes, cfg.cluster.gpus_per_node, cfg.cluster.device) == (
        4,
        8,
        "a100-80gb",
    )
    sizes = {s.model_spec.num_params for s in cfg.services}
    assert len(cfg.services) == 12 and min(sizes) < 8e9 and max(sizes) > 65e9


def test_yaml_round_trip(tmp_path):
    cfg = get_preset("h100x8")
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(path)
    assert again == cfg


BASE = {"services": [{"name": "a", "model": "llama-2-7b"}]}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (
            {"services": [{"name": "a", "model": "gpt-9"}]},
            "services[0].model: 'gpt-9' is not one of",
        ),
        ({**BASE, "cluster": {"device": "tpu"}}, "cluster.device: 'tpu' is not one of a100-80gb"),
        ({**BASE, "workload": {"rate": -1}}, "workload.rate"),
        ({**BASE, "workload": {"arrival": "zipf"}}, "workload.arrival"),
        ({**BASE, "cluster": {"gpus_per_node": 6}}, "cluster.gpus_per_node must be a power of two"),
        ({**BASE, "engine": {"max_batch_size": 0}}, "engine.max_batch_size"),
        ({**BASE, "cluster": {"colour": 1}}, "cluster.colour: unknown key; valid keys are device"),
        ({"services": []}, "services: at least one"),
        ({"services": [{"name": "a", "model": "llama-2-7b"}] * 2}, "services[1].name"),
        (
            {"services": [{"name": "a", "model": "llama-2-7b", "slo_scale": -2}]},
            "services[0].slo_scale",
        ),
    ],
)
def test_invalid_configs_name_the_field(data, needle):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert needle in str(err.value)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("services: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
