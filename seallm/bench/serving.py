"""`seallm bench`: replay a workload against OpenAI-compatible servers and report the metrics
`seallm/metrics.py` defines (the same ResultRow as the simulator's, from `metrics.summarize`).

One run: ask each base URL which models it serves and route every service to a server that
serves a model of that name (so one seallm server, or one vLLM server per model, work the
same); measure each model's words per token and its standalone latency (`standalone.py`) with
the servers idle; then send every request of the workload at its arrival time, each on its own
streamed connection, whatever the server's state (open loop), and wait for all to end.

A request the server refuses (429, 503) counts as rejected; one that fails (HTTP error, an
error event) as aborted; both miss their SLO (`seallm/metrics.py`: nothing is left out).
Latency is measured from when the request was sent; `max_send_lag_s` in the JSON says how far
behind its schedule the client ever was (a loaded client would make arrivals late).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from seallm.bench.http_client import Timing, make_prompt, served_models, stream_completion
from seallm.bench.http_client import words_per_token as measure_words_per_token
from seallm.bench.standalone import StandaloneFit, probe
from seallm.config import Config, ConfigError, config_from_dict
from seallm.metrics import ResultRow, per_service, summarize
from seallm.presets import PRESETS, get_preset
from seallm.request import Request, Status
from seallm.workload import TraceRecord, WorkloadSpec

DEFAULT_PRESET = "cpu-duo"
# The default load (no --workload, or one that starts with a key): cpu-duo's workload at 0.3
# requests/s, x0.3 of the preset's own 1 request/s. The default cpu-duo deployment on 2 CPU
# cores serves it comfortably; at x1 it is overloaded (SLO attainment 0.03 in 60 s), and x0.6
# is already high load (docs/results.md, "Serving benchmark": at x0.3 every server met 92-100%
# of SLOs, at x0.6 the vllm system 61%). `--workload cpu-duo` is the preset's own rate.
DEFAULT_RATE = 0.3
REQUEST_TIMEOUT_S = 1800.0
PROGRESS_TICK_S = 1.0  # run_bench reports its progress at least this often
PHASES = {"probing": "probing standalone latency", "requests": "requests"}
PHASE_UNITS = {"probing": "services", "requests": "finished"}


def base_v1(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def workload_config(spec: str | None, trace: str | None = None) -> Config:
    """`--workload SPEC`: a preset name or a config YAML (a `seallm serve` config works: its
    services, with their own lengths, and its workload), then `key=value` overrides of the
    workload, comma separated (`cpu-duo,rate=2,cv=3`); no spec, or one that starts with a key,
    uses cpu-duo's workload at DEFAULT_RATE."""
    parts = [p.strip() for p in (spec or "").split(",") if p.strip()]
    base = DEFAULT_PRESET
    changes: dict[str, Any] = {"rate": DEFAULT_RATE}
    if parts and "=" not in parts[0]:
        base = parts.pop(0)
        changes = {}
    cfg = _base_config(base)
    fields = {f.name: f for f in dataclasses.fields(WorkloadSpec)}
    for part in parts:
        key, _, value = part.partition("=")
        if key not in fields or key == "rate_schedule":
            valid = ", ".join(k for k in fields if k != "rate_schedule")
            raise ConfigError(f"--workload: {key!r} is not a workload key; valid keys: {valid}")
        current = getattr(cfg.workload, key)
        try:
            changes[key] = type(current)(value) if current is not None else value
        except ValueError:
            raise ConfigError(
                f"--workload: {key}={value!r} is not a {type(current).__name__}"
            ) from None
    if trace is not None:
        changes |= {"arrival": "trace", "trace": trace}
    cfg.workload = dataclasses.replace(cfg.workload, **changes)
    return cfg.validate()


def _base_config(name: str) -> Config:
    if name in PRESETS:
        return get_preset(name)
    path = Path(name)
    if not path.is_file():
        raise ConfigError(
            f"--workload: {name!r} is neither a preset ({', '.join(PRESETS)}) nor a config file"
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data = {k: v for k, v in data.items() if k not in ("system", "server")}
    try:  # `preset: NAME` with overrides too (config.with_preset)
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


@dataclass
class BenchResult:
    row: ResultRow
    per_service: list[ResultRow]
    fits: dict[str, StandaloneFit]
    words_per_token: dict[str, float]
    routes: dict[str, str]
    max_send_lag_s: float
    timings: list[Timing] = field(repr=False, default_factory=list)

    def to_dict(self, preset: str) -> dict[str, Any]:
        errors: dict[str, int] = {}
        for t in self.timings:
            if t.error:
                key = t.error[:120]
                errors[key] = errors.get(key, 0) + 1
        return {
            "preset": preset,
            "results": [self.row.to_dict()],
            "per_service": [r.to_dict() for r in self.per_service],
            "standalone_fit": {s: f.to_dict() for s, f in self.fits.items()},
            "words_per_token": self.words_per_token,
            "routes": self.routes,
            "max_send_lag_s": self.max_send_lag_s,
            "errors": errors,
            "requests": [dataclasses.asdict(t) for t in self.timings],
        }


async def _routes(client: httpx.AsyncClient, urls: Sequence[str], services: list[str]) -> dict:
    served: dict[str, str] = {}
    for url in urls:
        for m in await served_models(client, url):
            served.setdefault(m, url)
    missing = [s for s in services if s not in served]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: not served at {', '.join(urls)} (they serve "
            f"{', '.join(served) or 'nothing'})"
        )
    return {s: served[s] for s in services}


async def _label(client: httpx.AsyncClient, urls: Sequence[str]) -> str:
    if len(urls) == 1:
        try:
            resp = await client.get(f"{urls[0]}/placement")
            if resp.status_code == 200:
                return str(resp.json()["system"]["name"])
        except (httpx.HTTPError, KeyError, ValueError):
            pass
    return " + ".join(urls)


async def run_bench(
    base_urls: Sequence[str],
    cfg: Config,
    records: Sequence[TraceRecord],
    label: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    seed: int = 0,
    fits: dict[str, StandaloneFit] | None = None,
) -> BenchResult:
    """`fits`: standalone latencies measured by an earlier run (`load_fits`), so that every
    system compared is held to the same SLO; by default they are measured now. `progress`
    gets (phase, done, total), phase "probing" (services probed) then "requests" (requests
    finished), on every step and at least every PROGRESS_TICK_S seconds."""
    urls = [base_v1(u) for u in base_urls]
    services = sorted({r.service for r in records}, key=[s.name for s in cfg.services].index)
    rng = np.random.default_rng(seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_S, connect=30.0)
    state = ["probing", 0, len(services)]  # phase, done, total

    def report(*change: Any) -> None:
        state[: len(change)] = change
        if progress is not None:
            progress(str(state[0]), int(state[1]), int(state[2]))

    async def tick() -> None:
        while True:
            await asyncio.sleep(PROGRESS_TICK_S)
            report()

    ticker = asyncio.create_task(tick())
    try:
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            routes = await _routes(client, urls, services)
            label = label or await _label(client, urls)
            wpt: dict[str, float] = {}
            fits = dict(fits or {})
            report()
            for n, s in enumerate(services):
                wpt[s] = await measure_words_per_token(client, routes[s], s, rng)
                if s not in fits:
                    prompts = [r.prompt_tokens for r in records if r.service == s]
                    t = time.perf_counter()
                    fits[s] = await probe(client, routes[s], s, prompts, wpt[s], t, rng)
                report("probing", n + 1)
            done = 0

            async def one(i: int, rec: TraceRecord) -> Timing:
                nonlocal done
                prompt = make_prompt(i, rec.prompt_tokens, wpt[rec.service], rng)
                t = await stream_completion(
                    client,
                    routes[rec.service],
                    rec.service,
                    prompt,
                    rec.output_tokens,
                    t0,
                    rec.service,
                )
                done += 1
                report("requests", done)
                return t

            report("requests", 0, len(records))
            t0 = time.perf_counter()
            tasks, lag = [], 0.0
            for i, rec in enumerate(records):
                delay = t0 + rec.arrival_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lag = max(lag, time.perf_counter() - t0 - rec.arrival_s)
                tasks.append(asyncio.create_task(one(i, rec)))
            timings = list(await asyncio.gather(*tasks))
            wall = time.perf_counter() - t0
    finally:
        ticker.cancel()
    reqs = to_requests(records, timings, fits)
    slo = {s.name: s.slo_scale for s in cfg.services}
    end = max([wall, *(t.finished or 0.0 for t in timings)])
    return BenchResult(
        summarize(reqs, slo, end, label, wall),
        # each service's row carries the run's wall time (the services shared it)
        [
            dataclasses.replace(r, wall_seconds=wall)
            for r in per_service(reqs, slo, end, label, services)
        ],
        fits,
        wpt,
        routes,
        lag,
        timings,
    )


class ProgressLines:
    """`seallm bench`'s progress where stderr is not a terminal (a log file, a pipe): one plain
    line when a phase starts, then one every `every_s` seconds, and one when a phase ends."""

    def __init__(
        self,
        write: Callable[[str], None] | None = None,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.every_s, self.clock = every_s, clock
        self.start = clock()
        self.last: tuple[str, int, int] | None = None  # the last line's (phase, done, total)
        self.last_at = self.start

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = self.clock()
        state = (phase, done, total)
        new_phase = self.last is None or self.last[0] != phase
        finished = done >= total and state != self.last
        if new_phase or finished or now - self.last_at >= self.every_s:
            elapsed = int(now - self.start)
            self.write(
                f"bench: {PHASES.get(phase, phase)}: {done}/{total} {PHASE_UNITS.get(phase, '')}"
                f", {elapsed // 60}:{elapsed % 60:02d} elapsed"
            )
            self.last, self.last_at = state, now


def load_fits(path: str | Path) -> dict[str, StandaloneFit]:
    """The standalone fits of an earlier `seallm bench --json` output."""
    try:
        doc = json.loads(Path(path).read_text())
        return {s: StandaloneFit(**f) for s, f in doc["standalone_fit"].items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: no standalone_fit to reuse: {err}") from err


def to_requests(
    records: Sequence[TraceRecord], timings: Sequence[Timing], fits: dict[str, StandaloneFit]
) -> list[Request]:
    """The measured requests as the metrics see them (lengths as the server reported)."""
    reqs = []
    for i, (rec, t) in enumerate(zip(records, timings, strict=True)):
        prompt = t.prompt_tokens or rec.prompt_tokens
        out = t.output_tokens or rec.output_tokens
        r = Request(i, rec.service, prompt, out, t.sent)
        r.standalone = fits[rec.service].latency(prompt, out)
        if t.status == "ok":
            r.status, r.generated = Status.FINISHED, out
            r.first_token_time, r.finish_time = t.first_token, t.finished
        else:
            r.status = Status.REJECTED if t.status == "rejected" else Status.ABORTED
            r.error = t.error
        reqs.append(r)
    return reqs
