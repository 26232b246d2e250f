"""The Ray runtime against the in-process runtime: same models, same requests, same machine.

Three deployments of the cpu-duo services (seallm system), each behind the real HTTP server:

  inprocess  one group holding both models, its engine a thread of the server process;
  ray x1     the same single group in one Ray actor (the runtime's own cost: the same engine
             and placement, plus the hop to the actor and back);
  ray x2     a two-node cluster: the seallm placement's two groups in two actors.

All three run at once (each idle while another is measured) and are measured in interleaved
rounds on the same request list: one client at a time (latency: end to end, time to first
token, time per output token; "added" is the difference from inprocess), then a closed loop
of `--concurrency` clients (requests/s and tokens/s). The table gives medians over the rounds.
Tiny random-weight models by default (a step takes about a millisecond, so the runtime's own
cost is what shows); `--real` serves the two real small models. A group is one CPU core in
every deployment (Ray gives each actor one; the in-process engine is held to one torch
thread too). The load client runs in this process, beside the servers' front doors.

    .venv/bin/python scripts/bench_ray.py                      # tiny models, about 2 minutes
    .venv/bin/python scripts/bench_ray.py --real --requests 24 --solo 8 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from dataclasses import dataclass

import httpx
import numpy as np
import ray
import torch

from seallm.bench.http_client import Timing, make_prompt, stream_completion
from seallm.presets import get_preset
from seallm.server.launch import ServerThread, build_server
from seallm.server.settings import ServerSpec, ServeSettings
from seallm.systems import get_system

SMOL, GEMMA = "smollm2-135m", "gemma-3-270m"
TINY = {SMOL: "tiny-llama", GEMMA: "tiny-gemma3"}


@dataclass
class Row:
    name: str
    groups: int
    rps: float
    tokens_s: float
    latency: float  # mean, one client at a time (s)
    ttft: float
    tpot: float
    failed: int


def settings(backend: str, nodes: int, real: bool) -> ServeSettings:
    cfg = get_preset("cpu-duo")
    cfg.cluster.num_nodes = nodes
    server = ServerSpec(port=0, backend=backend, drain_s=5.0, max_queue=1024)
    if not real:
        cfg.engine.page_bytes = 64 * 1024  # a tiny model's token is ~0.5 KB
        server.kv_pool_mb, server.models = 16, dict(TINY)
    return ServeSettings(cfg, get_system("seallm"), server).validate()


def workload(n: int, prompt_words: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [((SMOL, GEMMA)[i % 2], make_prompt(i, prompt_words, 1.0, rng)) for i in range(n)]


async def solo(url: str, reqs: list[tuple[str, str]], max_tokens: int) -> list[Timing]:
    async with httpx.AsyncClient(timeout=600) as client:
        t0 = time.perf_counter()
        return [await stream_completion(client, url, m, p, max_tokens, t0) for m, p in reqs]


async def closed_loop(
    url: str, reqs: list[tuple[str, str]], max_tokens: int, clients: int
) -> tuple[list[Timing], float]:
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for r in reqs:
        queue.put_nowait(r)
    out: list[Timing] = []
    limits = httpx.Limits(max_connections=clients)

    async def client_loop(client: httpx.AsyncClient, t0: float) -> None:
        while not queue.empty():
            model, prompt = queue.get_nowait()
            out.append(await stream_completion(client, url, model, prompt, max_tokens, t0))

    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(client, t0) for _ in range(clients)))
        return out, time.perf_counter() - t0


def measure(name: str, srv: ServerThread, args: argparse.Namespace) -> Row:
    """One round against a running server: `--solo` requests one at a time, then the
    closed loop."""
    url = srv.url + "/v1"
    reqs = workload(args.requests, args.prompt_words, 0)
    alone = asyncio.run(solo(url, reqs[: args.solo], args.max_tokens))
    loaded, wall = asyncio.run(closed_loop(url, reqs, args.max_tokens, args.concurrency))
    ok = [t for t in alone if t.status == "ok" and t.finished is not None]
    done = [t for t in loaded if t.status == "ok"]
    assert ok, f"{name}: no request completed: {alone[0].error}"
    return Row(
        name,
        len(srv.runtime.controller.engines),
        len(done) / wall,
        sum(t.output_tokens for t in done) / wall,
        statistics.mean(t.finished - t.sent for t in ok),  # type: ignore[operator]
        statistics.mean(t.first_token - t.sent for t in ok),  # type: ignore[operator]
        statistics.mean(
            (t.finished - t.first_token) / max(1, t.output_tokens - 1)  # type: ignore[operator]
            for t in ok
        ),
        sum(t.status != "ok" for t in alone + loaded),
    )


def median_row(rows: list[Row]) -> Row:
    med = {
        f: statistics.median(getattr(r, f) for r in rows)
        for f in ("rps", "tokens_s", "latency", "ttft", "tpot")
    }
    return Row(rows[0].name, rows[0].groups, failed=sum(r.failed for r in rows), **med)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=96, help="closed-loop requests")
    ap.add_argument("--solo", type=int, default=24, help="one-at-a-time requests")
    ap.add_argument("--concurrency", type=int, default=8, help="closed-loop clients")
    ap.add_argument("--max-tokens", type=int, default=32, help="output tokens per request")
    ap.add_argument("--prompt-words", type=int, default=48, help="prompt length in words")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over the three deployments")
    ap.add_argument("--real", action="store_true", help="the real small models, not tiny ones")
    args = ap.parse_args()

    torch.set_num_threads(1)  # a group is one core, in-process as in a one-CPU Ray actor
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    deployments = [("inprocess", "inprocess", 1), ("ray x1", "ray", 1), ("ray x2", "ray", 2)]
    servers = {
        name: ServerThread(
            build_server(settings(backend, nodes, args.real), announce=lambda m: None)
        )
        for name, backend, nodes in deployments
    }
    try:
        for srv in servers.values():  # warm-up
            asyncio.run(solo(srv.url + "/v1", workload(4, args.prompt_words, 99), 8))
        # Rounds interleave the deployments, so that a change of the machine's background
        # load falls on all of them; the table gives each metric's median over the rounds.
        runs: dict[str, list[Row]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, srv in servers.items():
                runs[name].append(measure(name, srv, args))
    finally:
        for srv in servers.values():
            srv.stop()
    ray.shutdown()
    rows = [median_row(runs[name]) for name in servers]
    base = rows[0]
    models = "real small models" if args.real else "tiny random-weight models"
    print(
        f"\n{models}; per round {args.solo} requests one at a time, then {args.requests} "
        f"with {args.concurrency} clients; {args.prompt_words}-word prompts, "
        f"{args.max_tokens} output tokens; medians of {args.rounds} rounds\n"
    )
    print(
        "| runtime | groups | req/s | tokens/s | latency ms | added ms | TTFT ms | added ms "
        "| TPOT ms | failed |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r.name} | {r.groups} | {r.rps:.2f} | {r.tokens_s:.0f} | {r.latency * 1e3:.1f} "
            f"| {(r.latency - base.latency) * 1e3:+.1f} | {r.ttft * 1e3:.1f} "
            f"| {(r.ttft - base.ttft) * 1e3:+.1f} | {r.tpot * 1e3:.2f} | {r.failed} |"
        )


if __name__ == "__main__":
    main()
