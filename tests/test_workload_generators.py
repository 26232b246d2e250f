"""Workload generators: rates, burstiness, on/off, schedules, popularity, lengths, replay."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seallm.workload import (
    WorkloadError,
    WorkloadSpec,
    generate,
    get_length_distribution,
    popularity_weights,
    read_trace,
    service_rates,
)

FIX = Path(__file__).parent / "fixtures" / "workload"
REAL_TRACE = Path(__file__).resolve().parents[1].parent / "shared/traces/azure_llm_2023_conv.csv"
ONE = [("svc", None)]


def times(recs) -> np.ndarray:
    return np.array([r.arrival_s for r in recs])


@pytest.mark.parametrize(("arrival", "cv", "tol"), [("poisson", 1.0, 0.02), ("gamma", 3.0, 0.06)])
def test_mean_rate(arrival, cv, tol):
    recs = generate(WorkloadSpec(arrival=arrival, rate=50.0, cv=cv), ONE, 2000.0, seed=1)
    assert abs(len(recs) / 2000.0 - 50.0) / 50.0 < tol
    t = times(recs)
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < 2000.0


@pytest.mark.parametrize("cv", [0.5, 1.0, 3.0])
def test_gamma_cv(cv):
    recs = generate(WorkloadSpec(arrival="gamma", rate=100.0, cv=cv), ONE, 1000.0, seed=2)
    gaps = np.diff(times(recs))
    assert abs(gaps.std() / gaps.mean() - cv) / cv < 0.15


def test_onoff_silent_while_off_and_keeps_mean():
    spec = WorkloadSpec(arrival="onoff", rate=20.0, cv=1.0, on_s=5.0, off_s=15.0)
    t = times(generate(spec, [("a", None), ("b", None)], 2000.0, seed=3))
    assert np.all((t % 20.0) < 5.0)  # nothing in [5, 20) of any 20 s cycle
    assert abs(len(t) / 2000.0 - 20.0) / 20.0 < 0.05


def test_rate_schedule_changes_rate():
    spec = WorkloadSpec(
        arrival="gamma",
        rate=40.0,
        cv=2.0,
        rate_schedule=[(0.0, 1.0), (500.0, 3.0), (1000.0, 0.0), (1200.0, 0.5)],
    )
    t = times(generate(spec, ONE, 1700.0, seed=4))
    count = lambda lo, hi: np.count_nonzero((t >= lo) & (t < hi)) / (hi - lo)  # noqa: E731
    assert abs(count(0, 500) - 40) < 4
    assert abs(count(500, 1000) - 120) < 10
    assert count(1000, 1200) == 0
    assert abs(count(1200, 1700) - 20) < 3


def test_schedule_before_first_entry_is_unscaled():
    spec = WorkloadSpec(arrival="poisson", rate=30.0, rate_schedule=[(1000.0, 2.0)])
    t = times(generate(spec, ONE, 2000.0, seed=5))
    early, late = np.count_nonzero(t < 1000), np.count_nonzero(t >= 1000)
    assert abs(early / 1000 - 30) < 2.5 and abs(late / 1000 - 60) < 4


def test_popularity_weights():
    w = popularity_weights(4, 1.5)
    assert sum(w) == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(2**1.5)
    assert w[0] / w[3] == pytest.approx(4**1.5)
    assert popularity_weights(3, 0.0) == pytest.approx([1 / 3] * 3)
    assert popularity_weights(0, 1.0) == []


def test_service_rates_power_law_and_weights():
    spec = WorkloadSpec(rate=12.0, alpha=1.0)
    rates = service_rates(spec, [("a", None), ("b", None), ("c", None)], rate_scale=2.0)
    assert sum(rates.values()) == pytest.approx(24.0)
    assert rates["a"] / rates["b"] == pytest.approx(2.0)
    # explicit weights replace the power law; a missing one counts as 1.0
    rates = service_rates(spec, [("a", 1.0), ("b", 3.0), ("c", None)])
    assert rates == pytest.approx({"a": 2.4, "b": 7.2, "c": 2.4})
    with pytest.raises(WorkloadError, match="duplicate"):
        service_rates(spec, [("a", None), ("a", None)])


def test_per_service_counts_follow_service_rates():
    spec = WorkloadSpec(arrival="poisson", rate=40.0, alpha=1.0)
    services = [(f"s{i}", None) for i in range(4)]
    recs = generate(spec, services, 1000.0, seed=6, rate_scale=0.5)
    expected = service_rates(spec, services, rate_scale=0.5)
    for name, rate in expected.items():
        n = sum(r.service == name for r in recs)
        assert abs(n / 1000.0 - rate) / rate < 0.08


def test_deterministic_by_seed():
    spec = WorkloadSpec(arrival="gamma", rate=20.0, cv=2.0)
    services = [("a", None), ("b", 2.0)]
    a = generate(spec, services, 200.0, seed=7)
    assert a == generate(spec, services, 200.0, seed=7)
    assert a != generate(spec, services, 200.0, seed=8)


def test_lengths_clipped_to_limits():
    spec = WorkloadSpec(arrival="poisson", rate=200.0, max_prompt_tokens=512, max_output_tokens=64)
    recs = generate(spec, ONE, 50.0, seed=9)
    p = np.array([r.prompt_tokens for r in recs])
    o = np.array([r.output_tokens for r in recs])
    assert p.min() >= 1 and o.min() >= 1
    assert o.max() <= 64 and (p + o).max() <= 512
    assert (p + o).max() == 512  # azure prompts often exceed 512: the clip is reached


def test_builtin_distribution_stats_and_limits():
    d = get_length_distribution("azure-conv")
    p, o = d.sample(50_000, np.random.default_rng(0))
    assert p.dtype.kind == "i" and p.min() >= 1 and o.min() >= 1
    assert (p + o).max() <= 4096 and o.max() <= 2048
    assert d.mean_prompt == pytest.approx(p.mean(), rel=0.03)
    assert d.mean_output == pytest.approx(o.mean(), rel=0.03)
    assert d.std_prompt > 0 and d.std_output > 0


def test_empirical_lengths_resample_trace_pairs():
    d = get_length_distribution(str(FIX / "burstgpt.csv"), max_prompt=10_000, max_output=1000)
    p, o = d.sample(200, np.random.default_rng(0))
    assert set(zip(p.tolist(), o.tolist(), strict=True)) == {(472, 18), (417, 276), (1360, 437)}
    assert d.mean_output == pytest.approx((18 + 276 + 437) / 3)


def test_unknown_length_distribution_lists_builtins():
    with pytest.raises(WorkloadError, match="azure-conv"):
        get_length_distribution("no-such-dist")


def test_validate_messages():
    with pytest.raises(WorkloadError) as err:
        WorkloadSpec(arrival="foo").validate()
    assert str(err.value) == "workload.arrival: 'foo' is not one of poisson, gamma, onoff, trace"
    with pytest.raises(WorkloadError) as err:
        WorkloadSpec(rate=-1).validate()
    assert str(err.value) == "workload.rate must be >= 0, got -1"
    with pytest.raises(WorkloadError, match=r"workload\.cv must be > 0"):
        WorkloadSpec(cv=0.0).validate()
    with pytest.raises(WorkloadError, match=r"workload\.trace"):
        WorkloadSpec(arrival="trace").validate()
    with pytest.raises(WorkloadError, match="strictly increasing"):
        WorkloadSpec(rate_schedule=[(10.0, 1.0), (5.0, 2.0)]).validate()
    WorkloadSpec().validate()


def test_trace_replay_maps_model_column_by_frequency():
    spec = WorkloadSpec(arrival="trace", trace=str(FIX / "burstgpt.csv"))
    recs = generate(spec, [("big", None), ("small", None)], 1000.0, seed=0, rate_scale=2.0)
    # ChatGPT (2 requests) -> first service, GPT-4 -> second; time divided by rate_scale
    assert [(r.arrival_s, r.service, r.prompt_tokens, r.output_tokens) for r in recs] == [
        (0.0, "big", 472, 18),
        (20.5, "small", 417, 276),
        (56.5, "big", 1360, 437),
    ]
    # truncation to the duration, and wrap-around when models outnumber services
    recs = generate(spec, [("only", None)], 50.0, seed=0)
    assert [(r.arrival_s, r.service) for r in recs] == [(0.0, "only"), (41.0, "only")]
    rates = service_rates(spec, [("big", None), ("small", None)])
    assert rates["big"] == pytest.approx(2 * rates["small"])


def test_trace_replay_single_stream_by_popularity(tmp_path):
    spec = WorkloadSpec(arrival="trace", trace=str(FIX / "azure.csv"))
    services = [("a", None), ("b", None)]
    recs = generate(spec, services, 100.0, seed=1)
    src = read_trace(FIX / "azure.csv")
    assert [(r.arrival_s, r.prompt_tokens, r.output_tokens) for r in recs] == [
        (s.arrival_s, s.prompt_tokens, s.output_tokens) for s in src
    ]
    assert {r.service for r in recs} <= {"a", "b"}
    assert recs == generate(spec, services, 100.0, seed=1)
    # a skewed popularity sends (almost) everything to the first service
    spec.alpha = 30.0
    assert {r.service for r in generate(spec, services, 100.0, seed=1)} == {"a"}


def test_generate_is_fast():
    services = [(f"s{i}", None) for i in range(12)]
    t0 = time.perf_counter()
    recs = generate(WorkloadSpec(arrival="gamma", rate=40.0, cv=2.0), services, 3600.0, seed=0)
    assert time.perf_counter() - t0 < 2.0
    assert abs(len(recs) / 3600.0 - 40.0) < 2.0


@settings(max_examples=25, deadline=None)
@given(
    arrival=st.sampled_from(["poisson", "gamma", "onoff"]),
    rate=st.floats(0.0, 50.0),
    cv=st.floats(0.2, 4.0),
    duration=st.floats(0.0, 60.0),
    seed=st.integers(0, 2**32),
)
def test_generated_workloads_are_well_formed(arrival, rate, cv, duration, seed):
    spec = WorkloadSpec(arrival=arrival, rate=rate, cv=cv, on_s=3.0, off_s=2.0)
    recs = generate(spec, [("a", None), ("b", 0.5)], duration, seed)
    t = times(recs)
    assert np.all(np.diff(t) >= 0)
    assert all(0.0 <= r.arrival_s < duration for r in recs)
    assert all(
        1 <= r.output_tokens <= 2048 and r.prompt_tokens + r.output_tokens <= 4096 for r in recs
    )


@pytest.mark.skipif(not REAL_TRACE.exists(), reason="../shared traces not present")
def test_azure_conv_fit_matches_real_trace():
    recs = read_trace(REAL_TRACE)
    rp = np.array([r.prompt_tokens for r in recs])
    ro = np.array([r.output_tokens for r in recs])
    big = 1 << 30  # compare the fitted shape itself, without clipping
    fp, fo = get_length_distribution("azure-conv", big, big).sample(
        200_000, np.random.default_rng(0)
    )
    for real, fit in ((rp, fp), (ro, fo)):
        assert fit.mean() == pytest.approx(real.mean(), rel=0.10)
        assert np.median(fit) == pytest.approx(np.median(real), rel=0.10)
        assert fit.std() == pytest.approx(real.std(), rel=0.10)
