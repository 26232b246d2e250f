"""`seallm experiment paper`: sweeps, gains, report files (a quick sweep)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from seallm.bench.paper_report import gain
from seallm.cli import app


def test_gain_reads_latency_and_attainment_the_right_way():
    assert gain("mean_normalized_latency", 1.0, 3.0) == 3.0  # baseline 3x slower
    assert gain("p99_latency", 2.0, 1.0) == 0.5  # seallm slower: a loss
    assert gain("slo_attainment", 0.9, 0.3) == 3.0
    assert math.isinf(gain("slo_attainment", 0.5, 0.0))


@pytest.mark.slow
def test_quick_paper_experiment_writes_tables_and_gains(tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "experiment",
            "paper",
            "--quick",
            "--systems",
            "seallm,vllm",
            "--jobs",
            "1",
            "--duration",
            "30",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "paper.json").read_text())
    (sweep,) = doc["sweeps"]
    (point,) = sweep["points"]
    assert {r["system"] for r in point["results"]} == {"seallm", "vllm"}
    assert all(r["requests"] > 0 for r in point["results"])
    md = (tmp_path / "paper.md").read_text()
    assert "seallm's gain over each baseline" in md and "| vllm |" in md
    assert (tmp_path / "paper_rate_slo_attainment.png").exists()
    bad = CliRunner().invoke(
        app, ["experiment", "paper", "--sweeps", "nope", "--out", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "nope" in bad.output
