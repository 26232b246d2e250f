"""Standalone latency of a request on a live server, measured (as `seallm/metrics.py` defines it:
its end-to-end time alone on its service's group, no queueing, batch of one).

A live server's standalone latency cannot come from a cost model without trusting the model,
so `seallm bench` measures it: before the load starts, with the server idle, it sends solo
requests (one at a time) to each model at three prompt lengths (the 10th, 50th and 90th
percentiles of that model's prompts in the workload), each asking for `PROBE_OUTPUT` tokens,
`PROBE_REPEATS` times. It fits

    TTFT(prompt) = a + b * prompt          (least squares over the probes, b >= 0)
    token_time   = median over the probes of (finish - first token) / (output tokens - 1)

and takes standalone(prompt, output) = TTFT(prompt) + (output - 1) * token_time. The fit is
measured the way the run's latencies are (client-side, over HTTP), so the two are comparable;
each probe keeps the fastest of its repeats (noise on a shared machine only adds time). The
probes also warm the server up. The fit is reported in `--json` output (`standalone_fit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import httpx
import numpy as np

from seallm.bench.http_client import Timing, make_prompt, stream_completion

PROBE_OUTPUT = 16
PROBE_REPEATS = 2


@dataclass
class StandaloneFit:
    prefill_base_s: float  # a
    prefill_per_token_s: float  # b
    token_time_s: float  # c
    probes: int

    def latency(self, prompt_tokens: int, output_tokens: int) -> float:
        return (
            self.prefill_base_s
            + self.prefill_per_token_s * prompt_tokens
            + max(0, output_tokens - 1) * self.token_time_s
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def fit_standalone(timings: Sequence[Timing]) -> StandaloneFit:
    ok = [t for t in timings if t.status == "ok" and t.first_token is not None and t.finished]
    if not ok:
        raise RuntimeError("no standalone probe succeeded; is the server serving this model?")
    p = np.array([t.prompt_tokens for t in ok], float)
    ttft = np.array([t.first_token - t.sent for t in ok])  # type: ignore[operator]
    if len(set(p.tolist())) > 1:
        b, a = np.polyfit(p, ttft, 1)
        if b < 0:  # noise: no measurable growth with the prompt
            a, b = float(ttft.mean()), 0.0
    else:
        a, b = float(ttft.mean()), 0.0
    tpot = [
        (t.finished - t.first_token) / (t.output_tokens - 1)  # type: ignore[operator]
        for t in ok
        if t.output_tokens >= 2
    ]
    c = float(np.median(tpot)) if tpot else 0.0
    return StandaloneFit(max(float(a), 0.0), float(b), c, len(ok))


async def probe(
    client: httpx.AsyncClient,
    base_url: str,
    model: str,
    prompt_lengths: Sequence[int],
    words_per_token: float,
    t0: float,
    rng: np.random.Generator,
) -> StandaloneFit:
    """Measure `model` alone: one request at a time, the fastest of PROBE_REPEATS each."""
    lengths = sorted({int(x) for x in np.percentile(prompt_lengths, [10, 50, 90])})
    best: list[Timing] = []
    for n in lengths:
        runs = []
        for r in range(PROBE_REPEATS):
            prompt = make_prompt(-1 - r, n, words_per_token, rng)
            runs.append(await stream_completion(client, base_url, model, prompt, PROBE_OUTPUT, t0))
        ok = [t for t in runs if t.status == "ok" and t.finished is not None]
        if ok:
            best.append(min(ok, key=lambda t: t.finished - t.sent))  # type: ignore[operator]
    return fit_standalone(best)
