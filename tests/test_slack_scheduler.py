"""The slack-aware scheduler: deadlines, urgency events, and its ablations by name."""

from __future__ import annotations

import dataclasses
import math

import pytest

from seallm.config import ClusterSpec, Config, EngineSpec, ServiceSpec
from seallm.costmodel import CostModel
from seallm.profile import offline_profile
from seallm.request import Request, Status
from seallm.runtime.sim import simulate
from seallm.scheduling import SCHEDULERS, make_scheduler
from seallm.systems import get_system
from seallm.workload import TraceRecord, WorkloadSpec, get_length_distribution

A100 = CostModel(ClusterSpec().device_spec)


def profiles(*services: tuple[str, str], slo_scale: float = 5.0):
    from seallm.catalog import MODELS

    lengths = get_length_distribution("azure-conv")
    return {
        s: offline_profile(s, A100.for_model(MODELS[m], 1), lengths, slo_scale=slo_scale)
        for s, m in services
    }


def test_deadline_is_arrival_plus_slo_scale_times_the_standalone_estimate():
    prof = profiles(("a", "llama-2-7b"), slo_scale=4.0)
    s = make_scheduler("slack", prof, EngineSpec())
    r = Request(0, "a", 100, 50, 3.0)
    s.admit(r, 3.0)
    p = prof["a"]
    standalone = p.cost.standalone_latency(100, round(p.mean_output))
    assert s.deadline[r.id] == pytest.approx(3.0 + 4.0 * standalone)
    # Urgent once its slack is `margin` x its remaining standalone time.
    due = s.rekey_due(3.0)
    assert due == pytest.approx(s.deadline[r.id] - s.margin * standalone)


def test_a_waiting_request_near_its_deadline_overtakes_requests_with_slack():
    prof = profiles(("a", "llama-2-7b"), ("b", "llama-2-13b"))
    s = make_scheduler("slack", prof, EngineSpec())
    # A request preempted after 40 tokens, demoted twice, waits off the device.
    old = Request(0, "b", 300, 400, 0.0, generated=40, status=Status.QUEUED)
    s.admit(old, 0.0)
    old.level = 2
    s.preempted(old)  # re-plans its deadline from what it has generated
    due = s.rekey_due(1.0)
    fresh = Request(1, "a", 50, 20, due - 0.1)
    running = Request(2, "a", 50, 20, due - 0.2, generated=3, status=Status.RUNNING)
    for r in (fresh, running):
        s.admit(r, r.arrival)
    # Before its promotion it ranks below new and level-0 work; at its time, above all.
    assert s.entry[fresh.id] < s.entry[running.id] < s.entry[old.id]
    assert s.rekey_due(due - 1e-6) == pytest.approx(due)
    s.rekey_due(due)
    assert old.id in s.urgent
    assert s.entry[old.id] < s.entry[fresh.id] < s.entry[running.id]


def test_urgency_ends_when_the_request_runs_and_late_requests_demote_in_the_ablation():
    from seallm.executor.base import Batch, StepOutcome

    prof = profiles(("a", "llama-2-7b"))
    for name, urgent_after_deadline in (("slack-keep-late", True), ("slack", False)):
        s = make_scheduler(name, prof, EngineSpec())
        r = Request(0, "a", 100, 50, 0.0)
        s.admit(r, 0.0)
        s.rekey_due(s.deadline[r.id] - 1e-3)
        assert r.id in s.urgent
        s.rekey_due(s.deadline[r.id] + 1.0)
        assert (r.id in s.urgent) is urgent_after_deadline
        r.status, r.generated = Status.RUNNING, 1
        s.account(Batch("a", prefill=[r]), StepOutcome(1, 0.01, []), s.deadline[r.id] + 1.0)
        assert r.id not in s.urgent and s.key(r)[0] >= 0
        assert s.rekey_due(1e9) == math.inf  # no event left for a running request


def test_ablations_are_selectable_by_name():
    for system, scheduler in (
        ("seallm", "slack"),
        ("seallm-db", "doubling-budget"),
        ("seallm-slack-keep-late", "slack-keep-late"),
        ("seallm-slack-budget-prefill", "slack-budget-prefill"),
    ):
        assert get_system(system).scheduler == scheduler
        assert scheduler in SCHEDULERS


def memory_bound(**engine) -> Config:
    return Config(
        name="t",
        cluster=ClusterSpec("a100-80gb", 1, 1),
        services=[ServiceSpec("a", "llama-2-7b"), ServiceSpec("b", "llama-2-7b")],
        workload=WorkloadSpec(rate=1.0),
        engine=EngineSpec(**engine),
        duration_s=60.0,
        drain_s=600.0,
    ).validate()


def test_a_waiting_request_is_served_while_another_model_keeps_a_queue():
    # Service a (7B) gets long prompts for 30 s, faster than the group serves them, so it
    # always has a queue; one short request of b (13B) arrives early. DB ranks a's prefills
    # first (a smaller budget per iteration) and, with ageing out of the way, b waits for
    # the flood to end; by deadline (and urgency once its slack runs low) b goes first.
    recs = [TraceRecord(0.5, "b", 50, 50)]
    recs += [TraceRecord(0.1 * i, "a", 1500, 50) for i in range(300)]
    cfg = memory_bound(ageing_s=1e9)
    cfg.services[1] = ServiceSpec("b", "llama-2-13b")
    latency = {}
    for system in ("seallm", "seallm-slack-budget-prefill", "seallm-db"):
        spec = dataclasses.replace(get_system(system), placement="colocate", replacement="none")
        res = simulate(cfg.validate(), spec, recs)
        assert all(r.status is Status.FINISHED for r in res.requests)
        b = next(r for r in res.requests if r.service == "b")
        latency[system] = b.finish_time - b.arrival
        flood_end = max(r.finish_time for r in res.requests if r.service == "a")
        assert (b.finish_time < flood_end - 10) is (system != "seallm-db")
    assert latency["seallm"] < 0.5 * latency["seallm-db"]
