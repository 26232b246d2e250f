"""The command line contract: `seallm simulate` JSON rows, plots, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROW_KEYS = {
    "system",
    "requests",
    "completed",
    "mean_normalized_latency",
    "mean_slowdown",
    "p99_latency",
    "mean_ttft",
    "p99_ttft",
    "mean_tpot",
    "slo_attainment",
    "wall_seconds",
}


def seallm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seallm", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )


@pytest.mark.slow
def test_simulate_json_to_stdout_follows_the_contract():
    p = seallm(
        "simulate", "--preset", "h100x8", "--system", "all", "--duration", "30", "--json", "-"
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout[p.stdout.index("{") :])
    assert doc["preset"] == "h100x8"
    assert doc["results"], doc
    for row in doc["results"]:
        assert set(row) >= ROW_KEYS
        assert all(isinstance(row[k], int | float) for k in ROW_KEYS - {"system"})
        assert row["completed"] <= row["requests"] and row["requests"] > 0
        assert 0.0 <= row["slo_attainment"] <= 1.0


@pytest.mark.slow
def test_simulate_writes_json_file_and_plots(tmp_path):
    out = tmp_path / "r.json"
    p = seallm(
        "simulate",
        "--preset",
        "h100x8",
        "--duration",
        "20",
        "--json",
        str(out),
        "--plot",
        str(tmp_path / "plots"),
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text())["results"][0]["system"] == "vllm"
    for name in ["latency_cdf.png", "per_service_norm_latency.png", "per_service_slo.png"]:
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_simulate_with_a_yaml_config_and_a_trace(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,service,prompt_tokens,output_tokens\n0.0,a,100,10\n0.5,a,200,20\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "cluster: {device: h100-80gb, num_nodes: 1, gpus_per_node: 1}\n"
        "services: [{name: a, model: llama-2-7b}]\nduration_s: 10\n"
    )
    p = seallm("simulate", "--config", str(cfg), "--trace", str(trace), "--json", "-")
    assert p.returncode == 0, p.stderr
    row = json.loads(p.stdout[p.stdout.index("{") :])["results"][0]
    assert (row["requests"], row["completed"]) == (2, 2)


def test_errors_are_clear_and_exit_2(tmp_path):
    p = seallm("simulate", "--preset", "paper64")
    assert p.returncode == 2 and "preset: 'paper64' is not one of paper32" in p.stderr
    p = seallm("simulate", "--preset", "paper32", "--system", "tgi")
    assert p.returncode == 2 and "system: 'tgi' is not one of" in p.stderr
    p = seallm("simulate", "--preset", "paper32", "--rate-scale", "-1")
    assert p.returncode == 2 and "--rate-scale must be positive" in p.stderr
    p = seallm("simulate", "--config", str(tmp_path / "none.yaml"))
    assert p.returncode == 2 and "cannot read config" in p.stderr


@pytest.mark.slow
def test_plan_prints_groups():
    p = seallm("plan", "--preset", "paper32")
    assert p.returncode == 0, p.stderr
    assert "s05-llama-2-70b" in p.stdout and "est. util" in p.stdout
    p = seallm("plan", "--preset", "h100x8", "--system", "seallm")
    assert p.returncode == 0, p.stderr
    assert "two-stage" in p.stdout and "s04-llama-2-70b" in p.stdout


@pytest.mark.slow
def test_experiment_shared_group_quick_writes_results(tmp_path):
    p = seallm(
        "experiment",
        "shared-group",
        "--quick",
        "--duration",
        "30",
        "--seeds",
        "1",
        "--out",
        str(tmp_path),
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "shared_group.json").read_text())
    scenarios = {pt["scenario"] for pt in doc["points"]}
    assert scenarios == {"distinct", "memory-limited"}
    systems = {r["system"] for pt in doc["points"] for r in pt["results"]}
    assert {"seallm", "seallm-fcfs", "seallm-oracle", "seallm-static-kv", "vllm"} <= systems
    assert "| seallm-fcfs |" in (tmp_path / "shared_group.md").read_text()
    for row in (r for pt in doc["points"] for r in pt["results"]):
        assert 0.0 <= row["kv_utilization"] <= 1.0 and row["preemptions"] >= 0
    assert (tmp_path / "shared_group_distinct_mean_normalized_latency.png").exists()
    p = seallm("experiment", "nope")
    assert p.returncode == 2 and "experiment: 'nope' is not one of shared-group" in p.stderr


def test_simulate_reports_group_engines():
    p = seallm(
        "simulate",
        "--preset",
        "h100x8",
        "--system",
        "seallm",
        "--duration",
        "20",
        "--per-service",
        "--json",
        "-",
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout[p.stdout.index("{\n") :])
    groups = doc["groups"]["seallm"]
    assert sum(g["gpus"] for g in groups) <= 8
    for group in groups:
        assert 0 < group["busy_fraction"] <= 1.0
        assert 0 <= group["kv_utilization"] <= 1.0 and 0 <= group["kv_fragmentation"] < 1.0


def test_simulate_uses_per_service_lengths(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "cluster: {device: a100-80gb, num_nodes: 1, gpus_per_node: 2}\n"
        "services:\n"
        "  - {name: short, model: llama-2-7b, lengths: 'azure-conv:output=0.1'}\n"
        "  - {name: long, model: llama-2-7b, lengths: 'azure-conv:output=2'}\n"
        "workload: {rate: 2.0, alpha: 0}\nduration_s: 60\n"
    )
    p = seallm("simulate", "--config", str(cfg), "--system", "vllm", "--per-service", "--json", "-")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout[p.stdout.index("{\n") :])
    rows = {r["service"]: r for r in doc["per_service"]["vllm"]}
    # normalized latency is per token, so compare decode time per request instead
    assert rows["long"]["mean_latency"] > 5 * rows["short"]["mean_latency"]
