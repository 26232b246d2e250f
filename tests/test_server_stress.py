"""The server under stress: overload (bounded queues, 429 + Retry-After), clients that go away
(their requests aborted, their KV pages freed), an executor that fails (its requests answered
with errors, the others served), and SIGTERM (drain with the socket open and answering 503,
then fail what is left, close, exit 0)."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from tiny_server import GEMMA, SMOL, running, tiny_settings

from seallm.executor.torch import TorchExecutor


def metric(url: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f"{name}{{{want}}}") or (not labels and line.startswith(name + " ")):
            return float(line.split()[-1])
    raise AssertionError(f"{name}{{{want}}} not exported")


def wait_until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def kv_idle(srv) -> bool:
    engines = srv.runtime.controller.engines.values()
    return srv.runtime.in_flight == 0 and all(e.kv.stats().used_bytes == 0 for e in engines)


def test_overload_gets_429_with_retry_after_and_the_queue_stays_bounded():
    settings = tiny_settings(max_queue=3)
    settings.config.engine.max_batch_size = 2
    with running(settings) as srv:
        peak = {"queued": 0, "in_flight": 0}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                snap = srv.runtime.snapshot()
                peak["queued"] = max(peak["queued"], snap["services"][SMOL]["queued"])
                peak["in_flight"] = max(peak["in_flight"], snap["in_flight"])
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()

        async def burst():
            body = {"model": SMOL, "prompt": "overload", "max_tokens": 120, "ignore_eos": True}
            async with httpx.AsyncClient(timeout=60) as client:
                return await asyncio.gather(
                    *[client.post(srv.url + "/v1/completions", json=body) for _ in range(30)]
                )

        try:
            responses = asyncio.run(burst())
        finally:
            stop.set()
            sampler.join()
        codes = [r.status_code for r in responses]
        assert set(codes) == {200, 429}
        assert codes.count(200) >= 5  # a full batch and a full queue at least were accepted
        for r in responses:
            if r.status_code == 429:
                err = r.json()["error"]
                assert err["type"] == "rate_limit_error" and err["code"] == "rate_limit_exceeded"
                assert "already holds 5 requests" in err["message"]
                assert int(r.headers["Retry-After"]) >= 1
            else:
                assert r.json()["usage"]["completion_tokens"] == 120
        # The bound holds at every moment: memory cannot grow with the offered load.
        assert peak["in_flight"] <= 3 + 2
        assert peak["queued"] <= 3 + 2
        assert metric(srv.url, "seallm_requests_total", model=SMOL, outcome="overloaded") == (
            codes.count(429)
        )
        wait_until(lambda: kv_idle(srv))


def test_client_disconnect_mid_stream_aborts_and_frees_kv():
    with running() as srv:
        body = {
            "model": GEMMA,
            "prompt": "disconnect me",
            "max_tokens": 1000,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=30) as resp:
            assert resp.status_code == 200
            got = 0
            for line in resp.iter_lines():
                got += line.startswith("data:")
                if got == 3:
                    break
            assert srv.runtime.in_flight == 1
        # Leaving the block closed the connection mid-stream.
        wait_until(lambda: kv_idle(srv))
        assert metric(srv.url, "seallm_requests_total", model=GEMMA, outcome="cancelled") == 1
        assert metric(srv.url, "seallm_requests_total", model=GEMMA, outcome="completed") == 0
        assert metric(srv.url, "seallm_generation_tokens_total", model=GEMMA) < 1000
        # The pool is whole again and the server serves on.
        engine = next(iter(srv.runtime.controller.engines.values()))
        assert engine.kv.stats().free_pages == engine.kv._pool_of[GEMMA].num_pages
        ok = httpx.post(srv.url + "/v1/completions", json={"model": GEMMA, "prompt": "a"})
        assert ok.status_code == 200


def test_client_disconnect_while_waiting_for_a_non_streamed_answer():
    with running() as srv:
        body = json.dumps(
            {"model": SMOL, "prompt": "gone", "max_tokens": 1000, "ignore_eos": True}
        ).encode()
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as sock:
            head = (
                f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)
            wait_until(lambda: srv.runtime.in_flight == 1)
        wait_until(lambda: kv_idle(srv))
        assert metric(srv.url, "seallm_requests_total", model=SMOL, outcome="cancelled") == 1
        assert metric(srv.url, "seallm_generation_tokens_total", model=SMOL) < 1000


class FailOnPoison(TorchExecutor):
    """The real executor, failing any batch holding a request whose prompt has token 299."""

    def execute(self, batch, now):
        if any(299 in r.generation.prompt_ids for r in batch.requests):
            raise RuntimeError("injected failure")
        return super().execute(batch, now)


def test_executor_failure_answers_with_errors_and_keeps_serving():
    with running(executor_factory=lambda models, kv: FailOnPoison(models, kv)) as srv:
        poison = {"model": SMOL, "prompt": [65, 299, 66], "max_tokens": 5}
        resp = httpx.post(srv.url + "/v1/completions", json=poison, timeout=30)
        assert resp.status_code == 500
        err = resp.json()["error"]
        assert err["type"] == "server_error"
        assert "internal error while generating: RuntimeError: injected failure" in err["message"]
        stream = httpx.post(srv.url + "/v1/completions", json=poison | {"stream": True})
        events = [b for b in stream.text.split("\n\n") if b.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert "injected failure" in json.loads(events[-2][6:])["error"]["message"]
        for model in (SMOL, GEMMA):
            ok = httpx.post(
                srv.url + "/v1/completions",
                json={"model": model, "prompt": "fine", "max_tokens": 4},
                timeout=30,
            )
            assert ok.status_code == 200
        wait_until(lambda: kv_idle(srv))
        assert metric(srv.url, "seallm_requests_total", model=SMOL, outcome="error") == 2


LONG = 10
# One request per step: the LONG x 1000 tokens asked for take 10,000 steps (about 7 s of tiny
# model steps here), far beyond the 1.5 s grace. The drain lets the running one go on until
# the deadline and fails the rest with an explicit error.
SERVE_YAML = """
name: tiny-duo
cluster: {device: cpu, num_nodes: 1, gpus_per_node: 1}
services:
  - {name: smollm2-135m, model: smollm2-135m}
  - {name: gemma-3-270m, model: gemma-3-270m}
engine: {max_batch_size: 1, page_bytes: 65536}
system: seallm
server:
  port: 0
  kv_pool_mb: 16
  drain_s: 1.5
  models: {smollm2-135m: tiny-llama, gemma-3-270m: tiny-gemma3}
"""


@pytest.mark.slow
def test_sigterm_drains_fails_the_rest_and_exits_cleanly(tmp_path: Path):
    config = tmp_path / "serve.yaml"
    config.write_text(SERVE_YAML)
    proc = subprocess.Popen(
        [sys.executable, "-m", "seallm", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True)
    reader.start()
    try:
        url, log = None, []
        while url is None:
            line = lines.get(timeout=60)
            log.append(line)
            if m := re.search(r"at (http://127\.0\.0\.1:\d+)/v1", line):
                url = m.group(1)
        results: dict[str, list[str]] = {}
        longs = [f"long{i}" for i in range(LONG)]
        accepted = {k: threading.Event() for k in longs}

        def stream(name: str, max_tokens: int) -> None:
            body = {
                "model": SMOL,
                "prompt": "drain",
                "max_tokens": max_tokens,
                "temperature": 0,  # greedy: this prompt's first token is text at once
                "ignore_eos": True,
                "stream": True,
            }
            events = results.setdefault(name, [])
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as resp:
                assert resp.status_code == 200
                accepted[name].set()  # the headers come once the request is queued
                for line in resp.iter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])

        threads = [threading.Thread(target=stream, args=(name, 1000)) for name in longs]
        for t in threads:
            t.start()
        # Every one accepted before the signal (they run one at a time: batch size 1).
        assert all(accepted[name].wait(30) for name in longs)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        # Draining: the socket is still open, and says so (a load balancer stops routing).
        health = httpx.get(url + "/health", timeout=5)
        assert (health.status_code, health.json()) == (503, {"status": "draining"})
        new = httpx.post(url + "/v1/completions", json={"model": SMOL, "prompt": "x"}, timeout=5)
        assert new.status_code == 503
        err = new.json()["error"]
        assert (err["type"], err["code"]) == ("server_error", "shutting_down")
        assert "shutting down" in err["message"]
        for t in threads:
            t.join(30)
        proc.wait(60)
        reader.join(10)
        with pytest.raises(httpx.ConnectError):  # closed once drained
            httpx.get(url + "/health", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(log) + "".join(lines.queue)
    assert proc.returncode == 0, out
    # Every long request either finished or got an explicit error, then the end of its
    # stream; those still running at the deadline were failed (and announced).
    failed = 0
    for name in longs:
        assert results[name][-1] == "[DONE]"
        last = json.loads(results[name][-2])
        if "error" in last:
            failed += 1
            assert last["error"]["code"] == "shutdown_aborted"
            assert "shutting down" in last["error"]["message"]
        else:
            assert last["choices"][0]["finish_reason"] == "length"
    assert failed >= LONG // 2
    assert f"failed {failed} request(s) still running after 1.5 s" in out


def test_engine_abort_frees_queued_and_running_requests():
    from seallm.config import EngineSpec
    from seallm.executor.torch import live_request, make_torch_engine, run_until_idle
    from seallm.models.loader import tiny_model
    from seallm.models.sampling import SamplingParams
    from seallm.request import Status

    limits = EngineSpec(page_bytes=64 * 1024)
    engine = make_torch_engine({SMOL: tiny_model("llama")}, "seallm", 2**20, limits)
    params = SamplingParams(max_tokens=50, ignore_eos=True)
    running, queued, other = (live_request(i, SMOL, [65] * 20, params, 0.0) for i in range(3))
    for r in (running, other):
        engine.add(r, 0.0)
    batch = engine.plan(0.0)
    engine.commit(batch, engine.execute(batch, 0.0), 0.01)
    engine.add(queued, 0.01)
    assert running.status is Status.RUNNING and queued.status is Status.QUEUED
    assert engine.abort(running, "client gone") and engine.abort(queued, "client gone")
    assert not engine.abort(running, "again")  # no longer in the engine
    assert running.status is queued.status is Status.ABORTED
    assert running.error == "client gone"
    assert running.id not in engine.kv.page_tables
    assert engine.scheduler.entry.keys() == {other.id}
    run_until_idle(engine, clock=0.02)  # the other request is unaffected
    assert other.status is Status.FINISHED and len(other.generation.output_ids) == 50
    assert engine.kv.stats().used_bytes == 0
