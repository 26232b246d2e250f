"""The Ray runtime on a real local Ray cluster: the cpu-duo services with tiny random-weight
models on a cluster of two single-device nodes, in two groups (one serving the Llama, one
shared by the Gemma and the Llama: the seallm system's placement), each group engine in its
own Ray actor, behind the real HTTP server on loopback. Actors are killed with `ray.kill`, and
a new plan moves a service between actors, under load: every request must end with its full
response or an explicit error."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import ray
from tiny_server import GEMMA, SMOL, running, tiny_models, tiny_settings

from seallm.config import ConfigError
from seallm.placement.plan import GroupPlan, Plan
from seallm.server.launch import ServerThread, build_server
from seallm.server.settings import ServeSettings, settings_from_dict

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


# What the tests expect; the seallm placement gives it (`apply_plan` below keeps its actors).
PLAN = Plan([GroupPlan(0, 0, 0, 1, (SMOL,)), GroupPlan(1, 1, 0, 1, (GEMMA, SMOL))])


def ray_settings(**server: object) -> ServeSettings:
    settings = tiny_settings(**server)
    settings.config.cluster.num_nodes = 2  # two plan nodes (both on this one Ray node)
    settings.server.backend = "ray"
    return settings.validate()


@contextmanager
def ray_server(**server: object) -> Iterator[ServerThread]:
    built = build_server(
        ray_settings(**server), tiny_models(), announce=lambda m: None, log_level="warning"
    )
    thread = ServerThread(built)
    try:
        built.runtime.apply_plan(PLAN)  # a no-op unless the placement algorithm changed
        yield thread
    finally:
        thread.stop()


@pytest.fixture(scope="module")
def cluster():
    # Logical CPUs: two deployments of two one-CPU actors may be up at once.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def server(cluster):
    with ray_server() as srv:
        yield srv


def complete(url: str, model: str, prompt: str, max_tokens: int = 12, **extra) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    resp = httpx.post(
        url + "/v1/completions", json={**body, "ignore_eos": True, **extra}, timeout=60
    )
    assert resp.status_code == 200, resp.text
    return resp.json()


async def stream(client: httpx.AsyncClient, url: str, model: str, prompt: str, n: int) -> dict:
    """One streamed completion: its status, text, finish reason, usage and error event."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": n,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out: dict = {"text": "", "finish": None, "usage": None, "error": None, "done": False}
    async with client.stream("POST", url + "/v1/completions", json=body) as resp:
        out["status"] = resp.status_code
        if resp.status_code != 200:
            out["error"] = (await resp.aread()).decode()
            return out
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[len("data: ") :]
            if data == "[DONE]":
                out["done"] = True
                break
            event = json.loads(data)
            if "error" in event:
                out["error"] = event["error"]["message"]
            elif event["choices"]:
                out["text"] += event["choices"][0]["text"]
                out["finish"] = event["choices"][0]["finish_reason"] or out["finish"]
            elif event.get("usage"):
                out["usage"] = event["usage"]
    return out


def wait_idle(srv: ServerThread, timeout: float = 10.0) -> None:
    """Every request ended (a client may read its last event before the stream is closed)."""
    deadline = time.monotonic() + timeout
    while srv.runtime.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.runtime.in_flight == 0


def metric(url: str, model: str, outcome: str) -> float:
    want = f'seallm_requests_total{{model="{model}",outcome="{outcome}"}}'
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(want):
            return float(line.split()[-1])
    raise AssertionError(f"{want} not exported")


async def until(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def shared(srv: ServerThread):
    """The group serving both models (the Gemma's only one)."""
    return next(g for g in srv.runtime.groups.values() if len(g.plan.services) == 2)


def prompts(n: int) -> list[tuple[str, str]]:
    return [(SMOL, f"{i} smol") for i in range(n)] + [(GEMMA, f"{i} gemma") for i in range(n)]


async def under_load(srv: ServerThread, n: int, tokens: dict[str, int], event) -> list[dict]:
    """`n` streamed requests per service (`tokens[service]` tokens each); once the shared
    group (the Gemma's only group, one of the Llama's two) has streamed tokens of requests of
    both services, run `event(that group)`. Returns the answers in `prompts(n)` order."""
    runtime = srv.runtime
    group = shared(srv)

    def loaded() -> bool:
        with runtime.lock:
            reqs = list(group.inflight.values())
        return all(any(r.service == s and r.generated for r in reqs) for s in (SMOL, GEMMA))

    async with httpx.AsyncClient(timeout=120) as client:
        work = prompts(n)
        # The Llama's requests first, so that least-load dispatch puts some on each group.
        tasks = [asyncio.create_task(stream(client, srv.url, m, p, tokens[m])) for m, p in work[:n]]
        await until(lambda: runtime.held(SMOL) == n)
        tasks += [
            asyncio.create_task(stream(client, srv.url, m, p, tokens[m])) for m, p in work[n:]
        ]
        await until(loaded)
        await event(group)
        return await asyncio.wait_for(asyncio.gather(*tasks), 120)


async def kill(group) -> None:
    ray.kill(group.actor)


async def uninterrupted(url: str, n: int, tokens: dict[str, int]) -> list[str]:
    """The texts of `prompts(n)` when nothing goes wrong (greedy: what each must produce)."""
    async with httpx.AsyncClient(timeout=120) as client:
        answers = await asyncio.gather(
            *(stream(client, url, m, p, tokens[m]) for m, p in prompts(n))
        )
    return [a["text"] for a in answers]


def check_complete(answers: list[dict], n: int, tokens: dict[str, int]) -> None:
    assert len(answers) == 2 * n
    for a, (model, _) in zip(answers, prompts(n), strict=True):
        assert a["status"] == 200 and a["error"] is None, a
        assert a["done"] and a["finish"] == "length"
        assert a["usage"]["completion_tokens"] == tokens[model]


def test_settings_choose_the_backend():
    data = {"preset": "cpu-duo", "server": {"backend": "ray", "ray_address": "auto"}}
    assert settings_from_dict(data).server.ray_address == "auto"
    with pytest.raises(ConfigError, match=r"server\.backend"):
        settings_from_dict({"server": {"backend": "threads"}})
    with pytest.raises(ConfigError, match="ray_address"):
        settings_from_dict({"server": {"ray_address": "auto"}})
    with pytest.raises(ConfigError, match="ray_max_restarts"):
        settings_from_dict({"server": {"backend": "ray", "ray_max_restarts": -1}})


def test_each_group_runs_in_its_own_actor(server):
    placement = httpx.get(server.url + "/v1/placement").json()
    groups = sorted((g["node"], sorted(g["services"])) for g in placement["groups"])
    assert groups == [(0, [SMOL]), (1, sorted([GEMMA, SMOL]))]
    pids = {g.where["pid"] for g in server.runtime.groups.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    assert all(g["state"] == "up" for g in server.runtime.snapshot()["groups"])


def test_two_actors_answer_like_the_in_process_runtime(server):
    inputs = ["hello", "the quick brown fox"]
    with running() as local:
        want = {
            (m, p): complete(local.url, m, p)["choices"][0]["text"]
            for m in [SMOL, GEMMA]
            for p in inputs
        }
    before = {g.id: (g.last.iterations if g.last else 0) for g in server.runtime.groups.values()}
    for (model, prompt), text in want.items():
        body = complete(server.url, model, prompt)
        assert body["choices"][0]["text"] == text
        assert body["usage"]["completion_tokens"] == 12
        # Streamed, the same text arrives in pieces.
        chunks = asyncio.run(_stream_once(server.url, model, prompt))
        assert chunks["done"] and chunks["text"] == text and chunks["finish"] == "length"
    # Requests one at a time: the Llama's go to its own group, the Gemma's to the shared one.
    after = {g.id: g.last.iterations for g in server.runtime.groups.values()}
    assert all(after[g] > before[g] for g in after)
    wait_idle(server)


async def _stream_once(url: str, model: str, prompt: str) -> dict:
    async with httpx.AsyncClient(timeout=60) as client:
        return await stream(client, url, model, prompt, 12)


def test_a_client_that_goes_away_frees_its_request_on_the_actor(server):
    body = {"model": GEMMA, "prompt": "bye", "max_tokens": 900, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=60) as resp:
        for i, _ in enumerate(resp.iter_lines()):
            if i > 4:
                break
    group = shared(server)
    deadline = time.monotonic() + 10
    while server.runtime.in_flight or group.kv.stats().used_bytes:
        assert time.monotonic() < deadline, "the request was not freed"
        time.sleep(0.02)
    assert metric(server.url, GEMMA, "cancelled") >= 1


def test_actor_killed_under_load_every_request_completes(server):
    """The shared group dies mid-generation: its Llama requests move to the Llama's other
    group (recomputing their prefix), its Gemma requests wait for the replacement actor; all
    finish in full, with the very text they would have had without the failure."""
    n, tokens = 6, {SMOL: 400, GEMMA: 120}
    group = shared(server)
    done = {m: metric(server.url, m, "completed") for m in (SMOL, GEMMA)}
    answers = asyncio.run(under_load(server, n, tokens, kill))
    check_complete(answers, n, tokens)
    assert server.runtime.redispatched >= 1  # a Llama request went on on the other group
    assert group.restarts == 1 and group.state == "up"
    wait_idle(server)
    for m in (SMOL, GEMMA):
        assert metric(server.url, m, "completed") == done[m] + n
    # The replacement serves; greedy, the moved requests' texts are the uninterrupted ones.
    assert [a["text"] for a in answers] == asyncio.run(uninterrupted(server.url, n, tokens))


def test_a_new_plan_moves_a_service_between_actors_under_load(server):
    """Re-placement: the shared group gives way to a new group serving the Gemma alone, on
    the same plan node; the Llama's own group keeps its actor. Requests in flight move."""
    n, tokens = 4, {SMOL: 400, GEMMA: 120}
    runtime = server.runtime
    old = shared(server)
    keep = next(g for g in runtime.groups.values() if g is not old)
    plan = Plan([keep.plan, GroupPlan(1, old.plan.node, 0, 1, (GEMMA,))])

    async def replace(group) -> None:
        await asyncio.to_thread(runtime.apply_plan, plan)

    answers = asyncio.run(under_load(server, n, tokens, replace))
    check_complete(answers, n, tokens)
    groups = httpx.get(server.url + "/v1/placement").json()["groups"]
    assert sorted(g["services"] for g in groups) == [[GEMMA], [SMOL]]
    assert keep in runtime.groups.values() and old.state == "retired"
    with pytest.raises(ray.exceptions.RayActorError):  # its models are unloaded
        ray.get(old.actor.info.remote(), timeout=30)
    wait_idle(server)
    assert [a["text"] for a in answers] == asyncio.run(uninterrupted(server.url, n, tokens))


def test_a_group_that_cannot_be_replaced_fails_its_requests_clearly(cluster):
    n, tokens = 4, {SMOL: 400, GEMMA: 120}
    with ray_server(ray_max_restarts=0) as srv:
        group = shared(srv)
        answers = asyncio.run(under_load(srv, n, tokens, kill))
        smol, gemma = answers[:n], answers[n:]
        for a in smol:  # moved to the Llama's other group
            assert a["error"] is None and a["usage"]["completion_tokens"] == tokens[SMOL], a
        for a in gemma:  # no other group serves the Gemma, and none replaces the lost one
            assert a["status"] == 200 and a["done"], a
            assert "could not be replaced" in a["error"]
        assert group.state == "failed"
        wait_idle(srv)
        assert metric(srv.url, GEMMA, "error") == n
        assert metric(srv.url, SMOL, "completed") == n
        resp = httpx.post(
            srv.url + "/v1/completions", json={"model": GEMMA, "prompt": "x"}, timeout=30
        )
        assert resp.status_code == 503 and "failed" in resp.json()["error"]["message"]
        assert complete(srv.url, SMOL, "still here")["usage"]["completion_tokens"] == 12
