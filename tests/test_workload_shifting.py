"""Time-varying workloads: popularity that shifts over the run, and bursts."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from seallm.config import config_from_dict, dump_config
from seallm.presets import get_preset
from seallm.workload import WorkloadError, WorkloadSpec, generate, popularity_weights, service_rates
from seallm.workload.shifting import mean_shares, shares_at, shift_index

NAMES = ["a", "b", "c", "d"]
SERVICES = [(n, None) for n in NAMES]


def counts(recs, lo, hi):
    return Counter(r.service for r in recs if lo <= r.arrival_s < hi)


def test_shares_rotate_and_average_to_the_mean():
    base = popularity_weights(4, 1.0)
    assert shares_at(base, 0, 1) == base
    assert shares_at(base, 1, 1) == [base[3], base[0], base[1], base[2]]  # hot spot on "b"
    assert shares_at(base, 2, 3) == shares_at(base, 6, 1)
    spec = WorkloadSpec(shift_period_s=10.0)
    assert mean_shares(spec, base) == pytest.approx([0.25] * 4)
    # A step that is a multiple of the service count never changes anything.
    assert mean_shares(WorkloadSpec(shift_period_s=10.0, shift_step=4), base) == base
    # Step 2 over 4 services: a cycle of two, services alternate between two shares.
    two = mean_shares(WorkloadSpec(shift_period_s=10.0, shift_step=2), base)
    assert two[0] == pytest.approx((base[0] + base[2]) / 2)


def test_shift_index_counts_listed_times_and_periods():
    spec = WorkloadSpec(shift_times=[5.0, 12.0], shift_period_s=100.0)
    assert shift_index(spec, [0.0, 4.9, 5.0, 11.0, 12.0, 99.0, 100.0, 250.0]).tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        4,
    ]


def test_generated_popularity_follows_the_shifts():
    spec = WorkloadSpec(arrival="poisson", rate=40.0, alpha=1.5, shift_times=[500.0])
    recs = generate(spec, SERVICES, 1000.0, seed=3)
    before, after = counts(recs, 0, 500), counts(recs, 500, 1000)
    assert before.most_common(1)[0][0] == "a"
    assert after.most_common(1)[0][0] == "b"  # rotated by one: "b" took rank 0's share
    base = popularity_weights(4, 1.5)
    for i, n in enumerate(NAMES):
        assert before[n] / 500 == pytest.approx(40 * base[i], rel=0.15)
        assert after[n] / 500 == pytest.approx(40 * base[(i - 1) % 4], rel=0.15)
    # The total rate is the same on both sides of the shift.
    assert sum(after.values()) == pytest.approx(sum(before.values()), rel=0.1)


def test_a_burst_raises_one_service_only_while_it_lasts():
    spec = WorkloadSpec(arrival="poisson", rate=20.0, alpha=0.0, bursts=[(200.0, 100.0, 6.0, "c")])
    recs = generate(spec, SERVICES, 600.0, seed=5)
    during, outside = counts(recs, 200, 300), counts(recs, 0, 200) + counts(recs, 300, 600)
    assert during["c"] / 100 == pytest.approx(5.0 * 6, rel=0.2)
    assert outside["c"] / 500 == pytest.approx(5.0, rel=0.2)
    assert during["a"] / 100 == pytest.approx(5.0, rel=0.25)
    # A burst for every service ("") multiplies the whole stream.
    spec = WorkloadSpec(arrival="poisson", rate=20.0, alpha=0.0, bursts=[(0.0, 100.0, 3.0, "")])
    recs = generate(spec, SERVICES, 200.0, seed=5)
    assert len([r for r in recs if r.arrival_s < 100]) / 100 == pytest.approx(60, rel=0.15)


def test_same_seed_same_shifting_workload():
    spec = WorkloadSpec(arrival="gamma", cv=2.0, rate=10.0, shift_period_s=50.0, shift_step=2)
    assert generate(spec, SERVICES, 300.0, seed=1) == generate(spec, SERVICES, 300.0, seed=1)
    assert generate(spec, SERVICES, 300.0, seed=1) != generate(spec, SERVICES, 300.0, seed=2)


def test_service_rates_of_a_shifting_workload_are_the_long_run_means():
    spec = WorkloadSpec(rate=8.0, alpha=1.0, shift_period_s=60.0)
    assert service_rates(spec, SERVICES) == pytest.approx(dict.fromkeys(NAMES, 2.0))
    # Bursts are time-bound, like rate_schedule: they leave the mean rates alone.
    bursty = WorkloadSpec(rate=8.0, alpha=0.0, bursts=[(0.0, 10.0, 5.0, "a")])
    assert service_rates(bursty, SERVICES)["a"] == pytest.approx(2.0)


def test_a_single_stream_trace_replays_with_shifting_popularity(tmp_path):
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(4000):  # one request every 0.5 s
        minute, second = divmod(i // 2, 60)
        lines.append(f"2023-11-16 18:{minute:02d}:{second:02d}.{5000000 * (i % 2):07d},100,20")
    trace = tmp_path / "azure.csv"
    trace.write_text("\n".join(lines) + "\n")
    spec = WorkloadSpec(arrival="trace", trace=str(trace), alpha=2.0, shift_times=[500.0])
    recs = generate(spec, SERVICES, 2000.0, seed=0)
    assert len(recs) == 4000
    assert counts(recs, 0, 500).most_common(1)[0][0] == "a"
    assert counts(recs, 500, 1000).most_common(1)[0][0] == "b"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"shift_period_s": -1.0}, "shift_period_s must be >= 0"),
        ({"shift_step": 1.5}, "shift_step must be an integer"),
        ({"shift_times": [10.0, 5.0]}, "strictly increasing"),
        ({"bursts": [(0.0, 10.0, 2.0)]}, "bursts[0] must be [start_s"),
        ({"bursts": [(0.0, 0.0, 2.0, "a")]}, "bursts[0] duration must be > 0"),
        ({"bursts": [(0.0, 1.0, -2.0, "a")]}, "bursts[0] multiplier must be >= 0"),
        ({"bursts": [(0.0, 1.0, 2.0, 3)]}, "service must be a name"),
        ({"arrival": "trace", "trace": "x.csv", "bursts": [(0, 1, 2, "")]}, "not to a trace"),
    ],
)
def test_bad_shift_and_burst_fields_are_named(fields, message):
    with pytest.raises(WorkloadError, match=message.replace("[", r"\[")):
        dataclasses.replace(WorkloadSpec(), **fields).validate()


def test_a_burst_of_an_unknown_service_is_refused():
    spec = WorkloadSpec(bursts=[(0.0, 1.0, 2.0, "zz")])
    with pytest.raises(WorkloadError, match="unknown service"):
        generate(spec, SERVICES, 10.0, seed=0)


def test_shifting_fields_round_trip_through_yaml():
    cfg = get_preset("paper32-shift")
    back = config_from_dict(__import__("yaml").safe_load(dump_config(cfg)))
    assert back.workload == cfg.workload
    assert back.replacement == cfg.replacement
    assert back.workload.bursts and isinstance(back.workload.bursts[0], tuple)


def test_paper32_shift_moves_its_hot_spot():
    cfg = get_preset("paper32-shift")
    cfg.duration_s = 1000.0
    recs = cfg.records()
    first = counts(recs, 0, 420).most_common(1)[0][0]
    second = counts(recs, 420, 960).most_common(1)[0][0]
    assert first == cfg.services[0].name
    assert second == cfg.services[3].name  # rotated by shift_step = 3
