"""The co-location physics (`seallm/colocation.py`): what a round of jobs costs, and rounds in
the simulator (no request lost, joins only where the bound allows)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seallm.catalog import DEVICES, MODELS
from seallm.colocation import JobCoster, RoundPricer, round_time, sm_slowdown
from seallm.costmodel import CostModel
from seallm.placement.plan import GroupPlan, Plan
from seallm.runtime.sim import simulate
from seallm.systems import get_system

H100 = CostModel(DEVICES["h100-80gb"])
CPU = CostModel(DEVICES["cpu"])
NAMES = ["llama-2-7b", "llama-2-13b", "llama-3-8b"]

job_shape = st.tuples(
    st.sampled_from(NAMES),
    st.lists(st.integers(1, 2048), max_size=3),  # prompts
    st.integers(0, 64),  # decoding requests
    st.integers(1, 4000),  # mean context
)


def job(cost: CostModel, tp: int, shape: tuple) -> tuple:
    name, prompts, n, ctx = shape
    if not prompts and n == 0:
        n = 1
    coster = JobCoster(cost, MODELS[name], tp)
    lens = prompts
    return coster.iteration(sum(lens), float(sum(x * x for x in lens)), n, n * ctx), coster


@settings(max_examples=60, deadline=None)
@given(st.lists(job_shape, min_size=1, max_size=4), st.sampled_from([1, 2, 4]))
def test_round_is_at_least_its_longest_job_and_its_summed_traffic(shapes, tp):
    jobs = [job(H100, tp, s)[0] for s in shapes]
    for j in jobs:  # the split is consistent
        assert 0 <= j.compute <= j.time and 0 <= j.memory <= j.time and 0 <= j.link <= j.time
        assert j.host > 0 and j.launch > 0 and j.kernel > 0
    t = round_time(jobs, "streams")
    assert t >= max(j.time for j in jobs) - 1e-12
    assert t >= sum(j.memory for j in jobs) - 1e-12  # HBM bytes over bandwidth
    assert t >= sum(j.compute for j in jobs) - 1e-12
    assert t >= sum(j.link for j in jobs) - 1e-12  # NVLink bytes over link bandwidth
    assert t <= sum(j.time for j in jobs) + 1e-12  # never worse than one after another
    # MuxServe's processes at full share overlap host work too: never slower than streams.
    assert round_time(jobs, "mps") <= t + 1e-12
    assert round_time(jobs, "fluid") <= round_time(jobs, "mps") + 1e-12


@settings(max_examples=30, deadline=None)
@given(st.lists(job_shape, min_size=1, max_size=4))
def test_a_cpu_runs_a_rounds_jobs_one_after_another(shapes):
    jobs = [job(CPU, 1, s)[0] for s in shapes]
    assert RoundPricer({}, "serial").time(jobs) == pytest.approx(sum(j.time for j in jobs))


@given(job_shape, st.sampled_from([1, 2, 8]))
@settings(max_examples=30, deadline=None)
def test_one_job_costs_what_the_cost_model_says(shape, tp):
    j, coster = job(H100, tp, shape)
    for mode in ("serial", "streams", "fluid", "mps"):
        assert round_time([j], mode) == pytest.approx(j.time, rel=1e-9)
    _name, prompts, n, ctx = shape
    n = n or (0 if prompts else 1)
    assert j.time == coster.alone.iteration_time(
        sum(prompts), float(sum(x * x for x in prompts)), n, n * ctx
    )


def test_fused_decode_rounds_equal_rounds_one_by_one():
    pricer = RoundPricer({n: JobCoster(H100, MODELS[n], 2) for n in NAMES[:2]}, "streams")
    shapes = [("llama-2-7b", 8, 8 * 500), ("llama-2-13b", 3, 3 * 900)]
    fused = pricer.decode_times(shapes, 5)
    for i in range(5):
        one = [pricer.job(s, [], n, ctx + n * i) for s, n, ctx in shapes]
        assert fused[i] == pytest.approx(pricer.time(one), rel=1e-12)


def test_sm_slowdown_follows_muxserves_profile():
    assert sm_slowdown(1.0, prefill=False) == 1.0
    assert sm_slowdown(0.3, prefill=False) == pytest.approx(1.26)
    assert sm_slowdown(0.5, prefill=False, batch=64) == pytest.approx(1.19)
    assert sm_slowdown(0.8, prefill=True) == pytest.approx(1.12)
    assert sm_slowdown(0.1, prefill=True) == pytest.approx(2.29 * 3)  # 1 / share below 30%
    shares = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9, 1.0]
    for prefill in (False, True):
        slow = [sm_slowdown(x, prefill) for x in shares]
        assert slow == sorted(slow, reverse=True)  # more SMs are never slower


@pytest.mark.parametrize("system", ["seallm", "seallm-fcfs", "seallm-oracle"])
def test_rounds_lose_no_request(small_config, system):
    cfg = dataclasses.replace(small_config, drain_s=1e4)  # overloaded plans drain too
    res = simulate(cfg, get_system(system), cfg.records(rate_scale=2.0))
    assert res.requests and all(r.finish_time is not None for r in res.requests)
    for e in res.controller.engines.values():
        assert e.kv.stats().used_bytes == 0 and not e.has_work


@pytest.mark.slow
def test_join_bound_decides_who_joins(small_config):
    """At bound 0 only free joins happen (none on this GPU: a decode always costs something);
    at inf every model joins; the default lies between and is no slower than temporal."""
    recs = small_config.records(rate_scale=2.0)
    shared = Plan([GroupPlan(0, 0, 0, 4, tuple(s.name for s in small_config.services))])

    def mean_latency(system: str, bound: float) -> float:
        # Prefill batches as large as temporal's, so that only joining differs.
        engine = dataclasses.replace(
            small_config.engine,
            round_join_slowdown=bound,
            round_prefill_tokens=small_config.engine.max_batched_tokens,
        )
        cfg = dataclasses.replace(small_config, engine=engine, drain_s=1e4)
        reqs = simulate(cfg, get_system(system), recs, plan=shared).requests
        return sum((r.finish_time - r.arrival) / r.output_tokens for r in reqs) / len(reqs)

    temporal = mean_latency("seallm-temporal", 0.5)
    assert mean_latency("seallm", 0.0) == pytest.approx(temporal, rel=1e-9)
    assert mean_latency("seallm", math.inf) != pytest.approx(temporal, rel=1e-6)
    assert mean_latency("seallm", 0.5) <= temporal
