"""`seallm bench`: the load generator against a real server (tiny models), its standalone
fit, its workload spec, and its JSON contract."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from tiny_server import GEMMA, SMOL, running, tiny_settings
from typer.testing import CliRunner

from seallm.bench.http_client import Timing
from seallm.bench.serving import (
    DEFAULT_RATE,
    ProgressLines,
    base_v1,
    load_fits,
    run_bench,
    to_requests,
    workload_config,
)
from seallm.bench.standalone import StandaloneFit, fit_standalone
from seallm.cli import app
from seallm.config import ConfigError
from seallm.request import Status
from seallm.workload import TraceRecord

ROW_FIELDS = {
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


@pytest.fixture(scope="module")
def server():
    with running() as srv:
        yield srv


def records(n: int = 12, gap: float = 0.05) -> list[TraceRecord]:
    return [TraceRecord(i * gap, (SMOL, GEMMA)[i % 2], 20 + 3 * i, 8 + i) for i in range(n)]


def test_fit_standalone_recovers_a_linear_prefill_and_the_token_time():
    def probe(prompt: int, out: int) -> Timing:
        first = 0.01 + 0.002 * prompt
        return Timing("m", 0.0, first, first + (out - 1) * 0.03, prompt, out)

    fit = fit_standalone([probe(10, 16), probe(100, 16), probe(400, 16)])
    assert fit.prefill_base_s == pytest.approx(0.01)
    assert fit.prefill_per_token_s == pytest.approx(0.002)
    assert fit.token_time_s == pytest.approx(0.03)
    assert fit.latency(50, 11) == pytest.approx(0.01 + 0.1 + 10 * 0.03)
    with pytest.raises(RuntimeError, match="no standalone probe succeeded"):
        fit_standalone([Timing("m", 0.0, status="error")])


def test_to_requests_keeps_every_outcome():
    recs = records(3)
    fit = StandaloneFit(0.1, 0.0, 0.01, 3)
    timings = [
        Timing(SMOL, 0.0, 0.2, 1.0, 21, 8),
        Timing(GEMMA, 0.05, status="rejected", error="HTTP 429"),
        Timing(SMOL, 0.1, status="error", error="boom"),
    ]
    reqs = to_requests(recs, timings, {SMOL: fit, GEMMA: fit})
    assert [r.status for r in reqs] == [Status.FINISHED, Status.REJECTED, Status.ABORTED]
    assert reqs[0].finish_time == 1.0 and reqs[0].generated == 8
    assert reqs[0].standalone == pytest.approx(0.1 + 7 * 0.01)
    assert reqs[1].output_tokens == recs[1].output_tokens  # the asked length, when unknown


def test_workload_spec():
    cfg = workload_config("cpu-duo,rate=2.5,cv=3,max_output_tokens=32")
    assert (cfg.name, cfg.workload.rate, cfg.workload.cv) == ("cpu-duo", 2.5, 3.0)
    assert cfg.workload.max_output_tokens == 32
    assert workload_config("arrival=poisson").workload.arrival == "poisson"
    assert workload_config(None, "t.csv").workload.trace == "t.csv"
    with pytest.raises(ConfigError, match="'speed' is not a workload key"):
        workload_config("speed=3")
    with pytest.raises(ConfigError, match="neither a preset"):
        workload_config("nonsense")
    with pytest.raises(ConfigError, match="rate='fast' is not a float"):
        workload_config("rate=fast")
    assert base_v1("http://h:1/") == base_v1("http://h:1/v1") == "http://h:1/v1"


def test_the_default_load_is_what_two_cores_serve():
    # cpu-duo's workload at x0.3 (docs/results.md: served comfortably; x1 overloads it)
    assert DEFAULT_RATE == 0.3
    assert workload_config(None).workload.rate == DEFAULT_RATE
    assert workload_config("cv=3").workload.rate == DEFAULT_RATE
    assert workload_config("rate=2").workload.rate == 2.0
    assert workload_config("cpu-duo").workload.rate == 1.0  # the preset's own


def test_progress_lines_when_stderr_is_not_a_terminal():
    now = [0.0]
    lines: list[str] = []
    report = ProgressLines(lines.append, every_s=10.0, clock=lambda: now[0])
    report("probing", 0, 2)
    now[0] = 4.0
    report("probing", 1, 2)  # within 10 s of the last line: quiet
    report("probing", 2, 2)  # a phase's end is always shown
    report("probing", 2, 2)  # ...once
    report("requests", 0, 30)
    for t in range(5, 36):
        now[0] = float(t)
        report("requests", t - 5, 30)
    assert lines[0] == "bench: probing standalone latency: 0/2 services, 0:00 elapsed"
    assert lines[1] == "bench: probing standalone latency: 2/2 services, 0:04 elapsed"
    assert lines[2] == "bench: requests: 0/30 finished, 0:04 elapsed"
    assert lines[3:] == [
        "bench: requests: 9/30 finished, 0:14 elapsed",
        "bench: requests: 19/30 finished, 0:24 elapsed",
        "bench: requests: 29/30 finished, 0:34 elapsed",
        "bench: requests: 30/30 finished, 0:35 elapsed",
    ]


def test_run_bench_reports_its_phases(server):
    seen: list[tuple[str, int, int]] = []
    recs = records(4)
    res = asyncio.run(
        run_bench(
            [server.url], workload_config("cpu-duo"), recs, progress=lambda *a: seen.append(a)
        )
    )
    assert seen[0] == ("probing", 0, 2) and ("probing", 2, 2) in seen
    assert seen[-1] == ("requests", 4, 4)
    phases = [p for p, _, _ in seen]
    assert "probing" not in phases[phases.index("requests") :]
    # each service's row carries the run's wall time, not 0
    assert all(r.wall_seconds == res.row.wall_seconds > 0 for r in res.per_service)


def test_workload_spec_from_a_serve_config(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(
        "name: distinct\n"
        "cluster: {device: cpu, num_nodes: 1, gpus_per_node: 1}\n"
        "services:\n"
        "  - {name: smollm2-135m, model: smollm2-135m, lengths: 'azure-conv:output=0.25'}\n"
        "  - {name: gemma-3-270m, model: gemma-3-270m}\n"
        "system: vllm\n"
        "server: {port: 0}\n"
    )
    cfg = workload_config(f"{path},rate=3")
    assert (cfg.name, cfg.workload.rate) == ("distinct", 3.0)
    assert cfg.lengths_of(SMOL) == "azure-conv:output=0.25"
    cfg.duration_s = 200
    recs = cfg.records()
    mean = {s: np.mean([r.output_tokens for r in recs if r.service == s]) for s in (SMOL, GEMMA)}
    assert mean[SMOL] < mean[GEMMA] / 2


def test_run_bench_against_a_live_server(server):
    cfg = workload_config("cpu-duo")
    recs = records()
    res = asyncio.run(run_bench([server.url], cfg, recs))
    row = res.row
    assert row.system == "seallm"  # read from the server's /v1/placement
    assert row.requests == row.completed == len(recs)
    assert row.rejected == 0
    assert 0 < row.mean_ttft <= row.p99_latency
    assert row.mean_tpot > 0 and row.mean_normalized_latency > 0
    assert 0 <= row.slo_attainment <= 1 and row.mean_slowdown > 0
    assert {r.service for r in res.per_service} == {SMOL, GEMMA}
    for s in (SMOL, GEMMA):
        assert res.fits[s].token_time_s > 0 and res.fits[s].probes >= 1
        assert res.words_per_token[s] > 0
    # The server generated exactly the asked lengths (ignore_eos).
    assert [t.output_tokens for t in res.timings] == [r.output_tokens for r in recs]
    assert res.max_send_lag_s < 1.0


def test_rejections_are_counted_not_dropped():
    settings = tiny_settings(max_queue=1)
    settings.config.engine.max_batch_size = 1
    burst = [TraceRecord(0.0, SMOL, 10, 200) for _ in range(10)]
    with running(settings) as srv:
        res = asyncio.run(run_bench([srv.url], workload_config(None), burst))
    assert res.row.requests == 10
    assert res.row.rejected >= 1
    assert res.row.completed == 10 - res.row.rejected
    assert res.row.slo_attainment <= res.row.completed / 10
    assert any("HTTP 429" in (t.error or "") for t in res.timings)


def test_cli_bench_writes_the_json_contract(server, tmp_path):
    out = tmp_path / "bench.json"
    args = [
        "bench",
        "--base-url",
        server.url,
        "--workload",
        "cpu-duo,rate=4",
        "--duration",
        "2",
        "--seed",
        "3",
        "--json",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # Not a terminal: plain progress lines on stderr; no wall column per service.
    assert "bench: probing standalone latency: 2/2 services" in result.stderr
    assert "finished" in result.stderr.splitlines()[-1]
    per_service_table = result.stdout[result.stdout.index("per service") :]
    assert "wall s" in result.stdout and "wall s" not in per_service_table
    assert "slowdown = latency / standalone latency" in result.stdout
    doc = json.loads(out.read_text())
    assert doc["preset"] == "cpu-duo"
    (row,) = doc["results"]
    assert set(row) >= ROW_FIELDS
    assert row["requests"] == row["completed"] > 0
    assert set(doc["standalone_fit"]) <= {SMOL, GEMMA}
    # A second system can be held to the same SLO: reuse this run's standalone latencies.
    fits = load_fits(out)
    assert fits == {s: StandaloneFit(**f) for s, f in doc["standalone_fit"].items()}
    again = CliRunner().invoke(app, [*args[:-2], "--standalone-from", str(out), "--json", "-"])
    assert again.exit_code == 0, again.output
    assert (
        json.loads(again.stdout[again.stdout.index("{") :])["standalone_fit"]
        == (doc["standalone_fit"])
    )


def test_cli_bench_reports_an_unreachable_server():
    result = CliRunner().invoke(
        app, ["bench", "--base-url", "http://127.0.0.1:9", "--duration", "1"]
    )
    assert result.exit_code == 2
