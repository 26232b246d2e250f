"""The MuxServe baseline: ADBS scheduling, the enumeration + greedy placement, and the spatial
engine (a prefill and decode rounds sharing a group)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seallm.catalog import MODELS
from seallm.colocation import JobCoster
from seallm.config import ClusterSpec, Config, EngineSpec, ServiceSpec
from seallm.costmodel import CostModel
from seallm.executor import spatial as sx
from seallm.executor.base import Batch
from seallm.executor.spatial import DECODE_SHARES, SMParts, SpatialExecutor, sm_parts
from seallm.metrics import summarize
from seallm.placement import get_placement, service_loads
from seallm.placement.demand import kv_bytes, min_group_size
from seallm.placement.muxserve import MeshEstimator, computation_demand, placement_order
from seallm.placement.plan import GroupPlan
from seallm.presets import get_preset
from seallm.request import Request, Status
from seallm.runtime.sim import sim_engine_factory, simulate
from seallm.scheduling.adbs import held_pages
from seallm.systems import get_system
from seallm.workload import TraceRecord, WorkloadSpec

MUX = get_system("muxserve")
IDEAL = get_system("muxserve-ideal")
A100 = CostModel(ClusterSpec().device_spec)


def pair(gpus: int = 2, **engine) -> Config:
    return Config(
        name="t",
        cluster=ClusterSpec("a100-80gb", 1, gpus),
        services=[ServiceSpec("a", "llama-2-7b"), ServiceSpec("b", "llama-2-13b")],
        workload=WorkloadSpec(rate=1.0),
        engine=EngineSpec(**engine),
        duration_s=60.0,
    ).validate()


def one_group(cfg: Config, shares: tuple[float, ...] = (), system=MUX):
    """A muxserve engine hosting every service of `cfg` on one group of the whole node, with
    these decode SM shares (default: the executor's even split)."""
    names = tuple(s.name for s in cfg.services)
    group = GroupPlan(0, 0, 0, cfg.cluster.gpus_per_node, names, decode_shares=shares)
    return sim_engine_factory(cfg, system, A100)(group)


def step(engine, now: float, horizon: float = float("inf")):
    batch = engine.plan(now, horizon)
    out = engine.execute(batch, now)
    engine.commit(batch, out, now + out.duration)
    return batch, out, now + out.duration


# -- ADBS -------------------------------------------------------------------------------------


def test_prefill_goes_first_and_runs_alongside_other_models_decodes():
    # 30% decodes: 3 SM parts fit beside the 13B prefill's 9 (1 free + 2 overload).
    eng = one_group(pair(), shares=(0.3, 0.3))
    olds = [Request(i, "a", 200, 2000, 0.0) for i in range(4)]
    for r in olds:
        eng.add(r, 0.0)
    batch, _, now = step(eng, 0.0)
    assert batch.prefill == olds
    _, _, now = step(eng, now, horizon=now + 0.05)  # decode rounds only
    new = Request(9, "b", 500, 10, now)
    eng.add(new, now)
    before = [r.generated for r in olds]
    batch, out, end = step(eng, now)
    assert batch.prefill == [new] and set(batch.decode) == set(olds)
    assert out.iterations >= 2  # the decodes went on while the prefill ran
    assert [r.generated for r in olds] == [g + out.iterations for g in before]
    assert new.first_token_time == end


def test_prefill_turns_rotate_round_robin_over_models():
    eng = one_group(pair(max_batched_tokens=600))
    for i in range(3):
        eng.add(Request(2 * i, "a", 500, 50, 0.0), 0.0)
        eng.add(Request(2 * i + 1, "b", 500, 50, 0.0), 0.0)
    now, turns = 0.0, []
    for _ in range(6):
        batch, _, now = step(eng, now)
        turns.append(batch.prefill[0].service)
    assert turns == ["a", "b"] * 3


def test_quotas_start_with_equal_tokens_and_bound_admission():
    eng = one_group(pair())
    sched, kv = eng.scheduler, eng.kv
    eng.add(Request(0, "a", 100, 50, 0.0), 0.0)
    step(eng, 0.0)
    pool = kv.capacity_tokens("a") // kv.tokens_per_page["a"]
    q = sched.quota
    assert sum(q.values()) <= pool
    tokens = {s: q[s] * kv.tokens_per_page[s] for s in q}
    assert tokens["a"] == pytest.approx(tokens["b"], rel=0.01)
    # With a's quota down to what it holds plus one request, only one more of a is admitted,
    # while b, within its quota, is admitted in full from the same free pool.
    per_request = kv.pages_for("a", 1001)
    q["a"] = kv.pages_for("a", 150) + per_request  # what request 0 can grow to, plus one
    for i in range(1, 5):
        eng.add(Request(i, "a", 1000, 50, 0.0), 0.0)
        eng.add(Request(10 + i, "b", 1000, 50, 0.0), 0.0)
    batch, _, now = step(eng, 0.1)
    admitted = list(batch.prefill)
    batch, _, now = step(eng, now)
    admitted += batch.prefill
    assert sum(r.service == "a" for r in admitted) == 1
    assert sum(r.service == "b" for r in admitted) == 4
    # An LLM holding nothing still gets one request past a quota too small for it.
    q["b"] = 0
    eng.add(Request(20, "b", 1000, 1, now), now)
    while any(r.service == "b" for r in eng.running):
        _, _, now = step(eng, now)
    batch, _, now = step(eng, now)
    assert [r.id for r in batch.prefill if r.service == "b"] == [20]


def test_quota_moves_from_an_idle_model_to_a_blocked_one():
    eng = one_group(pair())
    sched = eng.scheduler
    eng.add(Request(0, "a", 100, 5000, 0.0), 0.0)
    _, _, now = step(eng, 0.0)
    held = held_pages(eng.state())["a"]
    sched.quota["a"] = held  # a is full, b is idle
    for i in range(1, 4):
        eng.add(Request(i, "a", 1000, 50, now), now)
    before = dict(sched.quota)
    sched.adapt(eng.state())
    need = eng.kv.pages_for("a", 1001)
    assert sched.quota["a"] >= before["a"] + need
    assert sched.quota["b"] < before["b"]
    assert sum(sched.quota.values()) == sum(before.values())
    batch, _, _ = step(eng, now)
    assert [r.service for r in batch.prefill][:1] == ["a"]


def test_a_rare_model_is_not_starved_by_a_flooding_one():
    recs = [TraceRecord(0.02 * i, "a", 400, 200) for i in range(1500)]  # 50 req/s: overload
    recs += [TraceRecord(1.0 + 3.0 * i, "b", 100, 20) for i in range(8)]
    recs.sort(key=lambda r: r.arrival_s)
    cfg = pair(gpus=1)
    cfg.duration_s, cfg.drain_s = 30.0, 1e5
    res = simulate(cfg, dataclasses.replace(MUX, placement="colocate"), recs)
    assert all(r.status is Status.FINISHED for r in res.requests)
    a_ttft = [r.first_token_time - r.arrival for r in res.requests if r.service == "a"]
    b_ttft = [r.first_token_time - r.arrival for r in res.requests if r.service == "b"]
    assert max(a_ttft) > 20.0  # a's queue grows without bound...
    assert max(b_ttft) < 2.0  # ...but b gets every other prefill turn


# -- placement --------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["paper32", "h100x8"])
def test_every_service_placed_once_within_memory_and_decode_budget(preset):
    cfg = get_preset(preset)
    for rate_scale in (1.0, 4.0):
        plan = get_placement("muxserve")(cfg, A100, service_loads(cfg, rate_scale))
        plan.validate(cfg.cluster)
        assert all(len(plan.hosts(s.name)) == 1 for s in cfg.services)
        dev, eng = cfg.cluster.device_spec, cfg.engine
        for g in plan.groups:
            weights = sum(cfg.service(s).model_spec.weight_bytes for s in g.services)
            usable = g.size * dev.memory_bytes * (eng.memory_utilization - eng.min_kv_fraction)
            assert weights <= usable
            # Decode SM shares are on the plan, within the mesh's budget.
            assert len(g.decode_shares) == len(g.services)
            assert all(round(d, 6) in DECODE_SHARES for d in g.decode_shares)
            assert sum(g.decode_shares) <= sx.DECODE_BUDGET + 1e-9


def test_llms_are_placed_in_order_of_computation_demand():
    cfg = get_preset("paper32")
    loads = service_loads(cfg)
    order = placement_order(loads)
    demand = [computation_demand(loads[s]) for s in order]
    assert demand == sorted(demand, reverse=True)
    # A 70B model at a lower rate than a 7B one still asks for more computation.
    assert order.index("s05-llama-2-70b") < order.index("s03-mistral-7b")
    assert loads["s05-llama-2-70b"].rate < loads["s03-mistral-7b"].rate


def test_greedy_spreads_demand_at_light_load_and_follows_throughput_at_heavy_load():
    cfg = get_preset("paper32")
    light = get_placement("muxserve")(cfg, A100, service_loads(cfg, 0.25))
    loads = service_loads(cfg, 0.25)
    top = placement_order(loads)[:4]
    # Every mesh serves its whole rate at light load: ties go to the least-loaded mesh, so
    # the four most demanding LLMs land on four different meshes.
    assert len({light.hosts(s)[0].id for s in top}) == 4
    # At heavy load the throughput estimate decides: the most popular LLM, which alone can
    # fill a mesh, no longer shares it with as many others.
    heavy = get_placement("muxserve")(cfg, A100, service_loads(cfg, 8.0))
    hot = max(loads, key=lambda s: loads[s].rate)
    assert len(heavy.hosts(hot)[0].services) < len(light.hosts(hot)[0].services)


def test_placement_fails_clearly_when_a_model_fits_nowhere():
    cfg = pair(gpus=1)
    cfg.services = [ServiceSpec("big", "llama-2-70b")]
    assert min_group_size(MODELS["llama-2-70b"], cfg) is None
    with pytest.raises(ValueError, match="fits no mesh"):
        get_placement("muxserve")(cfg, A100, service_loads(cfg))


def test_decode_share_is_the_smallest_that_meets_the_rate():
    cfg = get_preset("paper32")
    larger = 0
    for rate_scale in (1.0, 8.0):
        loads = service_loads(cfg, rate_scale)
        est = MeshEstimator(cfg, A100, loads)
        for s, ld in loads.items():
            size = min_group_size(ld.model, cfg)
            x, cache = est.llm(s, size), kv_bytes([ld.model], size, cfg)
            runs = {d: est.alone(x, d, cache) for d in DECODE_SHARES}
            met = [d for d, (ok, _, _) in runs.items() if ok]
            # else the share with the highest throughput
            best = met[0] if met else max(runs, key=lambda d: runs[d][1])
            assert est.decode_share(s, size) == best
            larger += best > DECODE_SHARES[0]
    assert larger > 0  # heavy load asks some LLMs for more SMs


def test_co_located_prefills_stall_every_decode():
    cfg = get_preset("paper32")
    loads = service_loads(cfg, 8.0)
    est = MeshEstimator(cfg, A100, loads)
    a, b = "s00-llama-2-7b", "s03-mistral-7b"
    assert est.throughput(2, [a, b]) < est.throughput(2, [a]) + est.throughput(2, [b])


# -- spatial sharing --------------------------------------------------------------------------


def costs(tp: int = 1) -> dict[str, JobCoster]:
    return {
        "a": JobCoster(A100, MODELS["llama-2-7b"], tp),
        "b": JobCoster(A100, MODELS["llama-2-13b"], tp),
    }


def run_alone_and_together(prompt: int, n: int, ctx: int, tp: int = 1, mode: str = "fluid"):
    ex = SpatialExecutor(costs(tp), mode)
    pre = [Request(0, "a", prompt, 100, 0.0)]
    dec = [Request(1 + i, "b", ctx, 10_000, 0.0, generated=1) for i in range(n)]
    together = ex.execute(Batch("a", prefill=pre, decode=dec, max_iters=256), 0.0)
    prefill_alone = ex.execute(Batch("a", prefill=pre), 0.0).duration
    k = together.iterations
    decode_alone = ex.execute(Batch("b", decode=dec, max_iters=k), 0.0)
    assert decode_alone.iterations == k
    return together.duration, prefill_alone, decode_alone.duration


def test_concurrent_prefill_and_decode_beat_serial_but_not_either_alone():
    together, prefill, decode = run_alone_and_together(prompt=2000, n=32, ctx=800)
    assert max(prefill, decode) <= together < prefill + decode
    assert together < 0.85 * (prefill + decode)  # compute-bound + memory-bound overlap well


@settings(max_examples=40, deadline=None)
@given(
    prompt=st.integers(1, 4000),
    n=st.integers(1, 128),
    ctx=st.integers(1, 3000),
    tp=st.sampled_from([1, 2, 4]),
    mode=st.sampled_from(["fluid", "mps"]),
)
def test_concurrency_is_never_faster_than_alone_nor_slower_than_serial(prompt, n, ctx, tp, mode):
    together, prefill, decode = run_alone_and_together(prompt, n, ctx, tp, mode)
    assert max(prefill, decode) <= together * (1 + 1e-12)
    assert together <= (prefill + decode) * (1 + 1e-12)


def test_ideal_decode_rounds_of_one_model_cost_what_the_serial_engine_charges():
    from seallm.executor.sim import SimExecutor

    dec = [Request(i, "a", 300, 10_000, 0.0, generated=1) for i in range(16)]
    spatial = SpatialExecutor(costs()).execute(Batch("a", decode=dec, max_iters=50), 0.0)
    serial = SimExecutor({"a": A100.for_model(MODELS["llama-2-7b"], 1)}).execute(
        Batch("a", decode=dec, max_iters=50), 0.0
    )
    assert spatial.iterations == serial.iterations == 50
    assert spatial.duration == pytest.approx(serial.duration, rel=1e-12)


# -- the faithful variant: SM parts, shares and overhead (MuxServe's code) --------------------

POOL = ["llama-2-7b", "llama-2-13b", "mistral-7b", "codellama-34b", "llama-3-8b"]


def test_constants_follow_muxserves_code():
    small, mid, big = MODELS["llama-2-7b"], MODELS["llama-2-13b"], MODELS["llama-2-70b"]
    assert [sx.prefill_share(m) for m in (small, mid, big)] == [0.8, 0.9, 1.0]
    assert [sx.schedule_overhead(m) for m in (small, mid, big)] == [100e-6, 80e-6, 70e-6]
    gate = SMParts()
    gate.allocate(sm_parts(0.8))  # 2 free parts + 2 of overload are left
    assert gate.can_allocate(4) and not gate.can_allocate(5)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, sx.SM_PARTS), max_size=8))
def test_sm_parts_are_never_more_than_doubly_held(jobs):
    gate = SMParts()
    for n in jobs:
        if gate.can_allocate(n):
            gate.allocate(n)
        assert gate.free >= 0 and gate.unoverloaded >= 0  # no part held by three jobs
        assert gate.held == 2 * sx.SM_PARTS - gate.free - gate.unoverloaded
        if min(jobs) > sx.OVERLOAD_PARTS:  # MuxServe's jobs: at least 30% (3 parts)
            assert gate.held <= sx.SM_PARTS + sx.OVERLOAD_PARTS


def executor(names: list[str], shares: list[float], mode: str = "mps") -> SpatialExecutor:
    costers = {s: JobCoster(A100, MODELS[POOL[i]], 1) for i, s in enumerate(names)}
    return SpatialExecutor(costers, mode, dict(zip(names, shares, strict=True)))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_the_gate_never_runs_more_sm_parts_than_a_gpu_has(data):
    n = data.draw(st.integers(1, len(POOL)))
    names = [f"m{i}" for i in range(n)]
    shares = data.draw(st.lists(st.sampled_from(DECODE_SHARES), min_size=n, max_size=n))
    ex = executor(names, shares)
    ex.turn = data.draw(st.integers(0, n - 1))
    pre = data.draw(st.one_of(st.none(), st.sampled_from(names)))
    decoding = data.draw(st.lists(st.sampled_from(names), unique=True, min_size=pre is None))
    prefill = [Request(0, pre, 500, 10, 0.0)] if pre else []
    decode = [
        Request(1 + 10 * i + j, s, 100, 50, 0.0, generated=1)
        for i, s in enumerate(decoding)
        for j in range(data.draw(st.integers(1, 3)))
    ]
    started = ex.admit(Batch(pre or decoding[0], prefill=prefill, decode=decode))
    running = {r.service for r in started}
    assert started == [r for r in decode if r.service in running]  # whole LLMs run or wait
    assert prefill or running  # a step always runs something
    parts = {s: sm_parts(d) for s, d in zip(names, shares, strict=True)}
    gate = SMParts()
    if pre:
        gate.allocate(sm_parts(sx.prefill_share(ex.costers[pre].model)))
    for s in running:
        gate.allocate(parts[s])
    assert gate.held <= sx.SM_PARTS + sx.OVERLOAD_PARTS
    for s in set(decoding) - running:  # an LLM that waits does not fit beside those that run
        assert not gate.can_allocate(parts[s])


def test_a_decode_that_does_not_fit_beside_the_prefill_waits_its_turn():
    cfg = pair(gpus=1)
    cfg.services.append(ServiceSpec("c", "mistral-7b"))
    # a's 7B prefill takes 8 of 10 SM parts: 2 free + 2 of overload are left, room for b's
    # 40% (4 parts) or c's 30% (3 parts), not both.
    eng = one_group(cfg, shares=(0.3, 0.4, 0.3))
    runners = [Request(1 + i, s, 100, 5000, 0.0) for i, s in enumerate("bbcc")]
    for r in runners:
        eng.add(r, 0.0)
    now = 0.0
    while eng.waiting:
        _, _, now = step(eng, now)
    batch, _, now = step(eng, now)
    assert {r.service for r in batch.decode} == {"b", "c"}  # without a prefill both fit
    ran = []
    for i in range(2):
        eng.add(Request(100 + i, "a", 300, 1, now), now)
        before = {r.id: r.generated for r in runners}
        batch, out, now = step(eng, now)
        assert [r.service for r in batch.prefill] == ["a"]
        (running,) = {r.service for r in batch.decode}
        for r in runners:
            advance = out.iterations if r.service == running else 0
            assert r.generated == before[r.id] + advance
        ran.append(running)
    assert sorted(ran) == ["b", "c"]  # the one that waited goes first next time


@settings(max_examples=60, deadline=None)
@given(
    prompt=st.integers(0, 4000),
    nb=st.integers(0, 96),
    nc=st.integers(0, 96),
    ctx=st.integers(1, 3000),
    k=st.integers(1, 64),
    shares=st.lists(st.sampled_from(DECODE_SHARES), min_size=3, max_size=3),
)
def test_the_faithful_executor_is_never_faster_than_the_ideal_one(prompt, nb, nc, ctx, k, shares):
    if not prompt and not nb + nc:
        return
    names = ["a", "b", "c"]
    prefill = [Request(0, "a", prompt, 100, 0.0)] if prompt else []
    decode = [Request(1 + i, "b", ctx, 10_000, 0.0, generated=1) for i in range(nb)]
    decode += [Request(200 + i, "c", ctx, 10_000, 0.0, generated=1) for i in range(nc)]
    batch = Batch("a", prefill=prefill, decode=decode, max_iters=1 if prompt else k)
    faithful = executor(names, shares).execute(batch, 0.0)
    ideal = executor(names, shares, "fluid").execute(batch, 0.0)
    assert faithful.iterations == ideal.iterations
    assert faithful.duration >= ideal.duration * (1 - 1e-12)


@pytest.mark.parametrize("system", [MUX, IDEAL], ids=lambda s: s.name)
def test_every_request_finishes(small_config, system):
    small_config.drain_s = 1e5
    res = simulate(small_config, system, small_config.records(3.0))
    assert len(res.requests) > 300
    row = summarize(res.requests, {}, res.end_time, system.name)
    assert row.completed == row.requests == len(res.requests)
    for r in res.requests:
        assert r.status is Status.FINISHED and r.generated == r.output_tokens
        assert r.arrival <= r.first_token_time <= r.finish_time
    for e in res.controller.engines.values():
        assert e.kv.stats().used_bytes == 0


def test_fused_equals_one_by_one(small_config):
    # Little KV memory: quotas adapt and decode growth preempts, in both runs alike.
    small_config.engine = EngineSpec(max_batch_size=64, memory_utilization=0.3)
    small_config.duration_s, small_config.drain_s = 30.0, 1e5
    recs = small_config.records(4.0)
    fused = simulate(small_config, MUX, recs, fuse=True)
    single = simulate(small_config, MUX, recs, fuse=False)
    ef, es = fused.controller.engines, single.controller.engines
    assert sum(e.iterations for e in ef.values()) == sum(e.iterations for e in es.values())
    assert sum(e.steps for e in ef.values()) < sum(e.steps for e in es.values())
    assert sum(e.preemptions for e in ef.values()) == sum(e.preemptions for e in es.values()) > 0
    for f, s in zip(fused.requests, single.requests, strict=True):
        assert f.status is s.status is Status.FINISHED
        assert f.finish_time == pytest.approx(s.finish_time, rel=1e-9, abs=1e-9)


def test_cli_simulates_paper32_with_muxserve():
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "seallm",
            "simulate",
            "--preset",
            "paper32",
            "--system",
            "muxserve",
            "--duration",
            "60",
            "--json",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    (row,) = json.loads(p.stdout[p.stdout.index("{") :])["results"]
    assert row["system"] == "muxserve"
    assert row["completed"] == row["requests"] > 1000


def test_multiplexing_beats_dedicated_gpus_at_equal_slo():
    # MuxServe's claim, on paper32's LLMs with power-law popularity under heavy load: more
    # requests meet the same SLO than on dedicated GPUs, and spatial sharing is what does it
    # (its placement served one model at a time, MuxServe's temporal baseline, is worse). It
    # holds for the fluid bound; MuxServe as its code runs it stays below that bound (its
    # decodes wait out prefills holding 8-10 of the 10 SM parts, run slowed under 30% shares
    # and pay 70-100 us per sequence), and beats dedicated GPUs at light load only.
    cfg = get_preset("paper32")
    cfg.duration_s = 60.0
    slo = {s.name: s.slo_scale for s in cfg.services}
    temporal = dataclasses.replace(MUX, name="temporal", scheduler="fcfs", engine="temporal")
    rows = {}
    for rate, specs in (
        (4.0, (get_system("vllm"), MUX, IDEAL, temporal)),
        (1.0, (get_system("vllm"), MUX)),
    ):
        records = cfg.records(rate)
        for spec in specs:
            res = simulate(cfg, spec, records, rate_scale=rate)
            rows[spec.name, rate] = summarize(res.requests, slo, res.end_time, spec.name)
    met = {name: row.slo_attainment for (name, rate), row in rows.items() if rate == 4.0}
    assert met["muxserve-ideal"] > 1.2 * met["vllm"]
    assert met["muxserve-ideal"] > 1.2 * met["temporal"]
    assert met["muxserve"] < met["muxserve-ideal"]
    light = {name: row for (name, rate), row in rows.items() if rate == 1.0}
    assert light["muxserve"].slo_attainment >= light["vllm"].slo_attainment - 0.005
    assert light["muxserve"].mean_normalized_latency < light["vllm"].mean_normalized_latency
