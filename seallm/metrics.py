"""The metric definitions (the README's "Metrics" cites them), and the result rows of the JSON
contract.

- latency = finish - arrival; TTFT = first token - arrival;
  TPOT = (finish - first token) / (output tokens - 1), over completed requests with >= 2 tokens.
- normalized latency = latency / output tokens, averaged over requests (s/token).
- slowdown = latency / standalone latency. Standalone latency = the request alone on its
  service's group: prefill of its prompt (which yields the first token) + one decode
  iteration per further output token. "Its service's group" is the smallest group that holds
  the model (the dedicated deployment's), so every system is held to the same SLO; a system
  that runs the service on a larger group may beat it (slowdown < 1).
- tail latency = P99 of latency (numpy's linear-interpolation percentile); also P99 TTFT.
- SLO met: completed and latency <= slo_scale x standalone. SLO attainment = met / requests.

Nothing is left out: requests = every submitted request; completed = those finished. A request
accepted but unfinished when the run ends enters the latency statistics censored at the end
of the run (end - arrival, a lower bound on its latency: dropping it would flatter an
overloaded system) and misses its SLO. A rejected request misses its SLO and is excluded from
the latency statistics (it has no latency); `rejected` counts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from seallm.request import Request, Status

if TYPE_CHECKING:
    from seallm.engine import GroupEngine as GroupEngineStats


@dataclass
class ResultRow:
    system: str
    requests: int
    completed: int
    rejected: int
    mean_normalized_latency: float
    mean_slowdown: float
    mean_latency: float
    p99_latency: float
    mean_ttft: float
    p99_ttft: float
    mean_tpot: float
    slo_attainment: float
    throughput_tokens_s: float
    wall_seconds: float
    service: str = "all"

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def _mean(xs: Sequence[float]) -> float:
    return float(np.mean(xs)) if len(xs) else 0.0


def _p99(xs: Sequence[float]) -> float:
    return float(np.percentile(xs, 99)) if len(xs) else 0.0


def slo_met(r: Request, slo_scale: float) -> bool:
    return (
        r.status is Status.FINISHED
        and r.finish_time is not None
        and r.finish_time - r.arrival <= slo_scale * r.standalone
    )


def summarize(
    requests: Sequence[Request],
    slo_scales: Mapping[str, float],
    end_time: float,
    system: str,
    wall_seconds: float = 0.0,
    service: str = "all",
) -> ResultRow:
    lat: list[float] = []
    norm: list[float] = []
    slow: list[float] = []
    ttft: list[float] = []
    tpot: list[float] = []
    met = completed = rejected = tokens = 0
    for r in requests:
        if r.status is Status.REJECTED:
            rejected += 1
            continue
        tokens += r.generated
        done = r.status is Status.FINISHED
        completed += done
        finish = r.finish_time if done and r.finish_time is not None else end_time
        latency = finish - r.arrival
        lat.append(latency)
        norm.append(latency / max(1, r.output_tokens))
        if r.standalone > 0:
            slow.append(latency / r.standalone)
        first = r.first_token_time if r.first_token_time is not None else end_time
        ttft.append(first - r.arrival)
        if done and r.output_tokens >= 2 and r.first_token_time is not None:
            tpot.append((finish - r.first_token_time) / (r.output_tokens - 1))
        met += slo_met(r, slo_scales.get(r.service, 5.0))
    n = len(requests)
    return ResultRow(
        system=system,
        requests=n,
        completed=completed,
        rejected=rejected,
        mean_normalized_latency=_mean(norm),
        mean_slowdown=_mean(slow),
        mean_latency=_mean(lat),
        p99_latency=_p99(lat),
        mean_ttft=_mean(ttft),
        p99_ttft=_p99(ttft),
        mean_tpot=_mean(tpot),
        slo_attainment=met / n if n else 0.0,
        throughput_tokens_s=tokens / end_time if end_time > 0 else 0.0,
        wall_seconds=wall_seconds,
        service=service,
    )


def per_service(
    requests: Sequence[Request],
    slo_scales: Mapping[str, float],
    end_time: float,
    system: str,
    services: Iterable[str],
) -> list[ResultRow]:
    by: dict[str, list[Request]] = {s: [] for s in services}
    for r in requests:
        by.setdefault(r.service, []).append(r)
    return [summarize(rs, slo_scales, end_time, system, service=s) for s, rs in by.items()]


@dataclass
class GroupRow:
    """How a group engine spent a run (busy share, batching, KV pool, preemptions)."""

    system: str
    group: int
    gpus: int
    services: str
    busy_fraction: float
    mean_batch: float
    kv_utilization: float  # time-weighted over busy time
    kv_fragmentation: float
    preemptions: int
    swaps: int

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def group_rows(system: str, engines: Iterable[GroupEngineStats], end_time: float) -> list[GroupRow]:
    rows = []
    for e in engines:
        busy = e.busy_time or 1.0
        rows.append(
            GroupRow(
                system=system,
                group=e.id,
                gpus=e.tp,
                services=", ".join(e.models),
                busy_fraction=e.busy_time / end_time if end_time > 0 else 0.0,
                mean_batch=e.batched / e.iterations if e.iterations else 0.0,
                kv_utilization=e.kv_used_time / busy,
                kv_fragmentation=e.kv_frag_time / busy,
                preemptions=e.preemptions,
                swaps=e.swaps,
            )
        )
    return rows
