"""Prometheus metrics of one server (its own registry, so that several apps in one process,
as in the tests, do not collide), labelled by model.

Counted as requests end: requests by outcome (completed, rejected, overloaded, invalid,
aborted, cancelled, error), prompt and generated tokens, preemptions; observed for completed
requests: latency, TTFT and TPOT histograms (as `seallm/metrics.py` defines them). Read from
the engines at scrape time: queue length, running batch and KV bytes per model, and per group
the KV pool (total, used, utilization) and the preemption and swap counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from seallm.request import Request, Status

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.2, 2.5, 5)
OUTCOMES = ("completed", "rejected", "overloaded", "invalid", "aborted", "cancelled", "error")


class EngineCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        queued = GaugeMetricFamily(
            "seallm_queue_length", "Accepted requests not on the device", labels=["model"]
        )
        running = GaugeMetricFamily(
            "seallm_running_requests", "Requests in the running batch", labels=["model"]
        )
        kv_model = GaugeMetricFamily(
            "seallm_kv_used_bytes", "KV pool bytes held by the model's requests", labels=["model"]
        )
        for model, s in snap["services"].items():
            queued.add_metric([model], s["queued"])
            running.add_metric([model], s["running"])
            kv_model.add_metric([model], s["kv_used_bytes"])
        yield from (queued, running, kv_model)
        labels = ["group", "models"]
        total = GaugeMetricFamily("seallm_kv_pool_bytes", "KV pool size", labels=labels)
        used = GaugeMetricFamily("seallm_kv_pool_used_bytes", "KV pool bytes held", labels=labels)
        util = GaugeMetricFamily("seallm_kv_pool_utilization", "Held / total", labels=labels)
        preempt = CounterMetricFamily("seallm_preemptions", "Preemptions", labels=labels)
        swaps = CounterMetricFamily("seallm_swaps", "Preemptions by swap to host", labels=labels)
        iters = CounterMetricFamily("seallm_iterations", "Engine iterations", labels=labels)
        for g in snap["groups"]:
            key = [str(g["group"]), ",".join(g["services"])]
            total.add_metric(key, g["kv_total_bytes"])
            used.add_metric(key, g["kv_used_bytes"])
            util.add_metric(
                key, g["kv_used_bytes"] / g["kv_total_bytes"] if g["kv_total_bytes"] else 0
            )
            preempt.add_metric(key, g["preemptions"])
            swaps.add_metric(key, g["swaps"])
            iters.add_metric(key, g["iterations"])
        yield from (total, used, util, preempt, swaps, iters)
        in_flight = GaugeMetricFamily("seallm_requests_in_flight", "Accepted, not yet ended")
        in_flight.add_metric([], snap["in_flight"])
        yield in_flight


class ServerMetrics:
    def __init__(self, models: list[str], snapshot: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "seallm_requests", "Requests by outcome", ["model", "outcome"], registry=r
        )
        self.prompt_tokens = Counter(
            "seallm_prompt_tokens", "Prompt tokens of accepted requests", ["model"], registry=r
        )
        self.generated_tokens = Counter(
            "seallm_generation_tokens", "Tokens generated", ["model"], registry=r
        )
        self.request_preemptions = Counter(
            "seallm_request_preemptions", "Preemptions of ended requests", ["model"], registry=r
        )
        self.latency = Histogram(
            "seallm_request_latency_seconds",
            "Arrival to last token (completed requests)",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "seallm_time_to_first_token_seconds",
            "Arrival to first token",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "seallm_time_per_output_token_seconds",
            "(finish - first token) / (output tokens - 1)",
            ["model"],
            buckets=TPOT_BUCKETS,
            registry=r,
        )
        self.models = set(models)
        for m in models:  # export zeros from the start, so rates work from the first scrape
            for outcome in OUTCOMES:
                self.requests.labels(m, outcome)
        r.register(EngineCollector(snapshot))

    def label(self, model: str | None) -> str:
        """Only served models become label values (user input must not grow the series)."""
        return model if model in self.models else "_unknown"

    def count(self, model: str | None, outcome: str) -> None:
        self.requests.labels(self.label(model), outcome).inc()

    def ended(self, req: Request, outcome: str) -> None:
        """Record a request that left the engine (called from an engine thread); `outcome`
        is completed, cancelled (client gone), error (executor failure) or aborted."""
        m = req.service
        self.prompt_tokens.labels(m).inc(req.prompt_tokens)
        self.generated_tokens.labels(m).inc(req.generated)
        self.request_preemptions.labels(m).inc(req.preemptions)
        if req.first_token_time is not None:
            self.ttft.labels(m).observe(req.first_token_time - req.arrival)
        self.count(m, outcome)
        if req.status is Status.FINISHED and req.finish_time is not None:
            self.latency.labels(m).observe(req.finish_time - req.arrival)
            if req.generated >= 2 and req.first_token_time is not None:
                tpot = (req.finish_time - req.first_token_time) / (req.generated - 1)
                self.tpot.labels(m).observe(tpot)

    def render(self) -> bytes:
        return generate_latest(self.registry)
