"""Bring-your-own-profile: the fit recovers iteration times, the simulator runs on it."""

from __future__ import annotations

import numpy as np
import pytest

from seallm.catalog import DEVICES, MODELS
from seallm.costmodel import CostModel
from seallm.metrics import summarize
from seallm.presets import get_preset
from seallm.profiled import Measurement, ModelProfile, Profile, ProfiledCostModel
from seallm.runtime.sim import simulate
from seallm.systems import get_system

TRUE = dict(c0=2e-3, prefill=1e-3, per_token=4e-5, per_decode=3e-4, per_ctx=2e-7)


def synthetic(model: str, noise: float = 0.0, seed: int = 0) -> ModelProfile:
    rng = np.random.default_rng(seed)
    points = []
    for p in (16, 64, 256, 512):
        points.append(Measurement(p, float(p * p), 0, 0, 0.0))
    for b in (1, 4, 16, 32):
        for c in (32, 512):
            points.append(Measurement(0, 0.0, b, b * c, 0.0))
    points.append(Measurement(128, 128.0 * 128, 8, 8 * 64, 0.0))
    for m in points:
        t = TRUE["c0"]
        if m.prefill_tokens:
            t += TRUE["prefill"] + TRUE["per_token"] * m.prefill_tokens
        if m.n_decode:
            t += TRUE["per_decode"] * m.n_decode + TRUE["per_ctx"] * m.decode_ctx_sum
        m.seconds = t * (1 + noise * rng.standard_normal())
    return ModelProfile(model, 1, points).fit()


def test_fit_recovers_known_costs_and_never_goes_negative():
    prof = synthetic("smollm2-135m")
    assert all(c >= 0 for c in prof.coefficients)
    for m in prof.measurements:
        assert prof.predict(m) == pytest.approx(m.seconds, rel=1e-3)
    noisy = synthetic("smollm2-135m", noise=0.05)
    err = [abs(noisy.predict(m) / m.seconds - 1) for m in noisy.measurements]
    assert np.median(err) < 0.1 and all(c >= 0 for c in noisy.coefficients)


def test_profile_round_trips_through_a_file(tmp_path):
    prof = Profile("cpu", [synthetic("smollm2-135m"), synthetic("gemma-3-270m")], {"x": 1})
    prof.save(tmp_path / "p.json")
    back = Profile.load(tmp_path / "p.json")
    assert back.device == "cpu" and [p.model for p in back.profiles] == [
        "smollm2-135m",
        "gemma-3-270m",
    ]
    assert back.profiles[0].coefficients == pytest.approx(prof.profiles[0].coefficients)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a seallm profile"):
        Profile.load(tmp_path / "bad.json")


def test_profiled_cost_matches_iteration_loop_and_drives_the_simulator():
    prof = Profile("cpu", [synthetic("smollm2-135m"), synthetic("gemma-3-270m")])
    cost = ProfiledCostModel(DEVICES["cpu"], prof)
    mc = cost.for_model(MODELS["smollm2-135m"], 1)
    # decode_times and standalone_latency agree with looping iteration_time
    times = mc.decode_times(3, 300, 5)
    loop = [mc.iteration_time(0, 0.0, 3, 300 + 3 * i) for i in range(5)]
    assert times == pytest.approx(loop)
    alone = mc.prefill_time(100) + sum(mc.iteration_time(0, 0.0, 1, 101 + i) for i in range(9))
    assert mc.standalone_latency(100, 10) == pytest.approx(alone)
    cfg = get_preset("cpu-duo")
    cfg.duration_s = 60
    records = cfg.records()
    rows = {}
    for c in (cost, CostModel(DEVICES["cpu"])):
        res = simulate(cfg, get_system("seallm"), records, c)
        slo = {s.name: s.slo_scale for s in cfg.services}
        rows[type(c).__name__] = summarize(res.requests, slo, res.end_time, "seallm", 0.0)
    assert not cost.missing
    assert rows["ProfiledCostModel"].completed == len(records)
    # different costs, different latencies: the profile is really used
    assert rows["ProfiledCostModel"].mean_ttft != rows["CostModel"].mean_ttft


@pytest.mark.slow
def test_profiler_times_the_real_engine_and_fits_every_model():
    from seallm.bench.profiler import Grid, grid_size, profile_models
    from seallm.models.loader import tiny_model

    models = {"a": tiny_model("llama"), "b": tiny_model("gemma3")}
    seen: list[str] = []
    prof = profile_models(models, "cpu", Grid.quick(), repeats=1, on_point=seen.append)
    assert len(seen) == grid_size(Grid.quick(), 1) * 2
    for p in prof.profiles:
        assert len(p.coefficients) == 7 and all(c >= 0 for c in p.coefficients)
        assert all(m.seconds > 0 for m in p.measurements)
        kinds = {(m.prefill_tokens > 0, m.n_decode > 0) for m in p.measurements}
        assert kinds == {(True, False), (False, True), (True, True)}


def test_step_log_of_a_live_server_fits_a_profile(tmp_path):
    """`server.step_log`: one JSON line per engine step of a real (tiny-model) server, with
    the batch's shape; `profile_from_steps` fits a profile to it that prices those steps."""
    import json

    import httpx
    from tiny_server import GEMMA, SMOL, running, tiny_settings

    from seallm.config import ConfigError
    from seallm.profiled import profile_from_steps

    log = tmp_path / "steps.jsonl"
    with running(tiny_settings(step_log=str(log))) as srv:
        for i, model in enumerate([SMOL, GEMMA] * 3):
            body = {"model": model, "prompt": "x" * (5 + 20 * i), "max_tokens": 8 + 4 * i}
            resp = httpx.post(srv.url + "/v1/completions", json=body | {"ignore_eos": True})
            assert resp.status_code == 200
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    assert {s["service"] for s in steps} == {SMOL, GEMMA}
    # Each request prefilled once (they come one at a time: no preemption), prompts 20 apart.
    lens = sorted(s["prefill_tokens"] for s in steps if s["prefill_tokens"])
    assert len(lens) == 6 and {(n - lens[0]) % 20 for n in lens} == {0}
    assert sum(s["n_decode"] for s in steps) == sum(8 + 4 * i - 1 for i in range(6))
    for s in steps:
        assert 0 < s["executor_s"] <= s["step_s"] and s["iterations"] == 1
    prof = profile_from_steps(log, "cpu", {SMOL: "smollm2-135m", GEMMA: "gemma-3-270m"})
    assert sorted(p.model for p in prof.profiles) == ["gemma-3-270m", "smollm2-135m"]
    for p in prof.profiles:
        assert len(p.measurements) > 6 and all(c >= 0 for c in p.coefficients)
        assert np.median([p.predict(m) / m.seconds for m in p.measurements]) == pytest.approx(
            1.0, abs=0.5
        )
    (tmp_path / "bad.jsonl").write_text('{"service": "x"}\n')
    with pytest.raises(ValueError, match="not a seallm step log"):
        profile_from_steps(tmp_path / "bad.jsonl", "cpu", {})
    with pytest.raises(ConfigError, match="step_log"):
        tiny_settings(step_log=str(log), backend="ray")


def test_profile_command_fits_a_step_log(tmp_path):
    import json

    from typer.testing import CliRunner

    from seallm.cli import app

    log = tmp_path / "steps.jsonl"
    lines = []
    for m in synthetic("smollm2-135m").measurements:
        shape = {
            "prefill_tokens": m.prefill_tokens,
            "prefill_sq_sum": m.prefill_sq_sum,
            "n_decode": m.n_decode,
            "decode_ctx_sum": m.decode_ctx_sum,
        }
        step = {"service": "smollm2-135m", **shape, "iterations": 1}
        lines.append(json.dumps(step | {"executor_s": m.seconds, "step_s": 1.1 * m.seconds}))
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "p.json"
    result = CliRunner().invoke(app, ["profile", "--from-step-log", str(log), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "smollm2-135m: 13 points" in result.output
    prof = Profile.load(out)
    m = prof.profiles[0].measurements[0]
    assert prof.profiles[0].predict(m) == pytest.approx(m.seconds, rel=1e-3)  # the wall times
    bad = CliRunner().invoke(app, ["profile", "--from-step-log", str(tmp_path / "none.jsonl")])
    assert bad.exit_code != 0 and "not a seallm step log" in " ".join(bad.output.split())


def test_server_profile_prices_the_live_schedulers_profiles(tmp_path):
    """`server.profile`: the live scheduler's service profiles come from the measured profile
    (as the simulator's do), not from the roofline; a bad file is a clear error."""
    import httpx
    from tiny_server import SMOL, running, tiny_settings

    from seallm.cli import app
    from seallm.profiled import ProfiledModelCost

    path = tmp_path / "p.json"
    Profile("cpu", [synthetic("tiny-llama"), synthetic("tiny-gemma3")]).save(path)
    with running(tiny_settings(profile=str(path))) as srv:
        engine = next(iter(srv.server.runtime.controller.engines.values()))
        costs = {s: p.cost for s, p in engine.scheduler.profiles.items()}
        assert all(isinstance(c, ProfiledModelCost) for c in costs.values())
        assert costs[SMOL].iteration_time(0, 0.0, 1, 32) == pytest.approx(
            TRUE["c0"] + TRUE["per_decode"] + TRUE["per_ctx"] * 32, rel=1e-3
        )
        body = {"model": SMOL, "prompt": "hello", "max_tokens": 4}
        assert httpx.post(srv.url + "/v1/completions", json=body).status_code == 200
    from typer.testing import CliRunner

    (tmp_path / "bad.json").write_text("{}")
    config = tmp_path / "serve.yaml"
    config.write_text(f"preset: cpu-duo\nserver: {{profile: {tmp_path / 'bad.json'}}}\n")
    bad = CliRunner().invoke(app, ["serve", "--config", str(config)])
    assert bad.exit_code != 0 and "not a seallm profile" in " ".join(bad.output.split())
