"""Metric definitions (`seallm/metrics.py`'s docstring) against hand-computed examples."""

from __future__ import annotations

import pytest

from seallm.metrics import per_service, summarize
from seallm.request import Request, Status


def finished(i, svc, arrival, first, finish, out, standalone, prompt=10):
    r = Request(i, svc, prompt, out, arrival)
    r.first_token_time, r.finish_time, r.status = first, finish, Status.FINISHED
    r.generated, r.standalone = out, standalone
    return r


def test_definitions_on_hand_computed_requests():
    a = finished(0, "x", arrival=0.0, first=1.0, finish=5.0, out=5, standalone=2.0)
    b = finished(1, "x", arrival=2.0, first=2.5, finish=4.0, out=4, standalone=0.5)
    row = summarize([a, b], {"x": 5.0}, end_time=10.0, system="s")
    # latency 5 and 2; normalized 5/5=1 and 2/4=0.5
    assert row.mean_latency == pytest.approx(3.5)
    assert row.mean_normalized_latency == pytest.approx(0.75)
    # slowdown 5/2 and 2/0.5
    assert row.mean_slowdown == pytest.approx((2.5 + 4.0) / 2)
    # TTFT 1 and 0.5; TPOT (5-1)/4=1 and (4-2.5)/3=0.5
    assert row.mean_ttft == pytest.approx(0.75)
    assert row.mean_tpot == pytest.approx(0.75)
    # SLO: a: 5 <= 5*2 met; b: 2 <= 5*0.5=2.5 met
    assert row.slo_attainment == 1.0
    # P99 with linear interpolation between 2 and 5: 2 + 0.99*3
    assert row.p99_latency == pytest.approx(2 + 0.99 * 3)
    assert row.requests == 2 and row.completed == 2 and row.rejected == 0
    assert row.throughput_tokens_s == pytest.approx(9 / 10.0)


def test_slo_scale_decides_attainment():
    b = finished(1, "x", arrival=2.0, first=2.5, finish=4.0, out=4, standalone=0.5)
    assert summarize([b], {"x": 3.0}, 10.0, "s").slo_attainment == 0.0
    assert summarize([b], {"x": 4.0}, 10.0, "s").slo_attainment == 1.0


def test_rejected_and_unfinished_are_reported_not_dropped():
    done = finished(0, "x", 0.0, 1.0, 3.0, 3, 3.0)
    rejected = Request(1, "x", 10, 5, 1.0, status=Status.REJECTED)
    stuck = Request(2, "x", 10, 8, 6.0, status=Status.RUNNING, generated=2, standalone=1.0)
    stuck.first_token_time = 7.0
    row = summarize([done, rejected, stuck], {"x": 5.0}, end_time=10.0, system="s")
    assert (row.requests, row.completed, row.rejected) == (3, 1, 1)
    assert row.slo_attainment == pytest.approx(1 / 3)
    # the unfinished request is censored at the end: latency 4 (a lower bound)
    assert row.mean_latency == pytest.approx((3.0 + 4.0) / 2)
    assert row.mean_normalized_latency == pytest.approx((1.0 + 4.0 / 8) / 2)
    assert row.mean_ttft == pytest.approx((1.0 + 1.0) / 2)
    assert row.mean_tpot == pytest.approx(1.0)  # only the completed one


def test_per_service_rows_partition_requests():
    rs = [finished(i, s, 0.0, 0.1, 1.0, 2, 1.0) for i, s in enumerate("aab")]
    rows = per_service(rs, {"a": 5.0, "b": 5.0}, 2.0, "s", ["a", "b", "c"])
    assert [(r.service, r.requests) for r in rows] == [("a", 2), ("b", 1), ("c", 0)]
    assert rows[2].mean_latency == 0.0
