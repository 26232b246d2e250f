"""The OpenAI-compatible server end to end over loopback HTTP: tiny random-weight models behind
the real live runtime, GroupEngine, scheduler, KV cache and TorchExecutor."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest
from tiny_server import GEMMA, SMOL, running, tiny_settings

MODELS = [SMOL, GEMMA]


@pytest.fixture(scope="module")
def server():
    with running() as srv:
        yield srv


def post(srv, path: str, body: dict) -> httpx.Response:
    return httpx.post(srv.url + path, json=body, timeout=60)


def sse(resp: httpx.Response) -> list[dict | str]:
    """The data of each server-sent event ("[DONE]" as the string)."""
    events = []
    for block in resp.text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def wait_idle(srv, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while srv.runtime.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.runtime.in_flight == 0


def kv_used(srv) -> float:
    return sum(e.kv.stats().used_bytes for e in srv.runtime.controller.engines.values())


def test_health_models_and_openapi(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    data = httpx.get(server.url + "/v1/models").json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == MODELS
    assert all(m["max_model_len"] == 1024 for m in data["data"])
    schema = httpx.get(server.url + "/openapi.json").json()
    for path in ("/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/placement"):
        assert path in schema["paths"]


@pytest.mark.parametrize("model", MODELS)
def test_completion_non_streaming(server, model):
    resp = post(
        server,
        "/v1/completions",
        {"model": model, "prompt": "hello", "max_tokens": 12, "ignore_eos": True, "temperature": 0},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "text_completion" and body["model"] == model
    assert body["id"].startswith("cmpl-")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    # The byte tokenizer: "hello" is 5 tokens.
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 12, "total_tokens": 17}
    assert isinstance(choice["text"], str)


@pytest.mark.parametrize("model", MODELS)
def test_streaming_equals_non_streaming_when_greedy(server, model):
    body = {
        "model": model,
        "prompt": "The cat sat",
        "max_tokens": 16,
        "temperature": 0,
        "ignore_eos": True,
    }
    full = post(server, "/v1/completions", body).json()["choices"][0]["text"]
    resp = post(
        server,
        "/v1/completions",
        body | {"stream": True, "stream_options": {"include_usage": True}},
    )
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse(resp)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == full
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert len(chunks) > 1  # tokens stream one by one, not as one final blob
    usage = events[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 16


@pytest.mark.parametrize("model", MODELS)
def test_chat_streaming_and_not(server, model):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": 8,
        "temperature": 0,
        "ignore_eos": True,
    }
    resp = post(server, "/v1/chat/completions", body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"]["role"] == "assistant"
    # The ChatML template adds its turn markers to the prompt.
    assert out["usage"]["prompt_tokens"] > len("Be brief.Hi")
    events = sse(post(server, "/v1/chat/completions", body | {"stream": True}))
    assert events[-1] == "[DONE]"
    first = events[0]["choices"][0]["delta"]
    assert first["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == out["choices"][0]["message"]["content"]
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])


def test_seed_reproduces_sampled_text(server):
    body = {
        "model": SMOL,
        "prompt": "seed",
        "max_tokens": 24,
        "temperature": 1.0,
        "top_p": 0.9,
        "seed": 1234,
        "ignore_eos": True,
    }
    a = post(server, "/v1/completions", body).json()["choices"][0]["text"]
    b = post(server, "/v1/completions", body).json()["choices"][0]["text"]
    c = post(server, "/v1/completions", body | {"seed": 99}).json()["choices"][0]["text"]
    assert a == b
    assert a != c


def test_stop_string_ends_generation_and_is_not_returned(server):
    body = {
        "model": GEMMA,
        "prompt": "stop here",
        "max_tokens": 40,
        "temperature": 0,
        "ignore_eos": True,
    }
    text = post(server, "/v1/completions", body).json()["choices"][0]["text"]
    stop = text[10:12]
    assert len(stop) == 2
    cut = text[: text.index(stop)]
    for stream in (False, True):
        resp = post(server, "/v1/completions", body | {"stop": [stop], "stream": stream})
        if stream:
            events = sse(resp)[:-1]
            got = "".join(e["choices"][0]["text"] for e in events)
            reason = events[-1]["choices"][0]["finish_reason"]
        else:
            got = resp.json()["choices"][0]["text"]
            reason = resp.json()["choices"][0]["finish_reason"]
        assert got == cut
        assert reason == "stop"


def test_concurrent_requests_of_both_models_all_complete_and_free_the_pool(server):
    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(
                *[
                    client.post(
                        server.url + "/v1/completions",
                        json={
                            "model": MODELS[i % 2],
                            "prompt": "x" * (5 + 7 * i),
                            "max_tokens": 10 + i,
                            "ignore_eos": True,
                            "stream": i % 3 == 0,
                        },
                    )
                    for i in range(24)
                ]
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 24
    for i, r in enumerate(responses):
        if i % 3:
            assert r.json()["usage"]["completion_tokens"] == 10 + i
    wait_idle(server)
    assert kv_used(server) == 0


def test_placement_and_metrics(server):
    plan = httpx.get(server.url + "/v1/placement").json()
    assert plan["system"]["name"] == "seallm"
    assert plan["system"]["scheduler"] == "slack"
    (group,) = plan["groups"]
    assert sorted(group["services"]) == sorted(MODELS)
    assert group["kv"]["layout"] == "unified" and group["kv"]["total_bytes"] == 16 * 2**20
    post(server, "/v1/completions", {"model": SMOL, "prompt": "m", "max_tokens": 3})
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "seallm_requests_total",
        "seallm_request_latency_seconds_bucket",
        "seallm_time_to_first_token_seconds_bucket",
        "seallm_time_per_output_token_seconds_bucket",
        "seallm_queue_length",
        "seallm_running_requests",
        "seallm_kv_pool_bytes",
        "seallm_kv_used_bytes",
        "seallm_preemptions_total",
        "seallm_swaps_total",
    ):
        assert name in text, name
    completed = [
        line
        for line in text.splitlines()
        if line.startswith(f'seallm_requests_total{{model="{SMOL}",outcome="completed"}}')
    ]
    assert completed and float(completed[0].split()[-1]) >= 1


def test_vllm_system_serves_with_fcfs_and_static_partitions():
    with running(tiny_settings("vllm")) as srv:
        plan = httpx.get(srv.url + "/v1/placement").json()
        assert plan["system"]["name"] == "vllm"
        assert plan["groups"][0]["scheduler"] == "fcfs"
        assert plan["groups"][0]["kv"]["layout"] == "static"
        for model in MODELS:
            resp = post(
                srv,
                "/v1/completions",
                {"model": model, "prompt": "v", "max_tokens": 5, "ignore_eos": True},
            )
            assert resp.json()["usage"]["completion_tokens"] == 5
        wait_idle(srv)
        assert kv_used(srv) == 0


def test_serve_settings_from_yaml(tmp_path):
    from seallm.config import ConfigError
    from seallm.server.settings import load_settings

    path = tmp_path / "serve.yaml"
    path.write_text("preset: cpu-duo\nsystem: vllm\nserver: {port: 9001, max_queue: 8}\n")
    s = load_settings(path)
    assert (s.config.name, s.system.name, s.server.port, s.server.max_queue) == (
        "cpu-duo",
        "vllm",
        9001,
        8,
    )
    assert s.source_of(SMOL) == SMOL
    for text, message in [
        ("server: {prot: 1}", "server.prot: unknown key"),
        ("system: nope", "system: 'nope' is not one of"),
        ("server: {port: 70000}", "server.port must be an integer in [0, 65535]"),
        ("server: {max_queue: 0}", "server.max_queue must be a positive number"),
        ("server: {models: {nope: tiny-llama}}", "server.models.nope: no such service"),
        ("preset: paper32", "live serving runs one group on one device"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings(path)


def test_models_say_whether_instruct_or_base_and_retrieve_one(server):
    cards = httpx.get(server.url + "/v1/models").json()["data"]
    for card in cards:  # random weights and a generic ChatML template
        assert (card["kind"], card["has_chat_template"]) == ("base", False)
    for card in cards:
        assert httpx.get(server.url + f"/v1/models/{card['id']}").json() == card
    schema = httpx.get(server.url + "/openapi.json").json()
    assert "/v1/models/{model_id}" in schema["paths"]


def test_model_kind_comes_from_the_catalog_then_the_chat_template():
    import dataclasses

    from seallm.models.loader import tiny_model
    from seallm.server.app import has_chat_template, model_kind

    tiny = tiny_model("llama")
    assert (model_kind(tiny), has_chat_template(tiny)) == ("base", False)
    assert model_kind(dataclasses.replace(tiny, name="smollm2-135m")) == "instruct"
    assert model_kind(dataclasses.replace(tiny, name="gemma-3-270m")) == "base"
    own = tiny_model("gemma3")
    own.tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert (model_kind(own), has_chat_template(own)) == ("instruct", True)


def test_placement_does_not_claim_live_re_placement(server):
    from seallm.server.app import live_description
    from seallm.systems import SYSTEMS

    system = httpx.get(server.url + "/v1/placement").json()["system"]
    assert system["replacement"].startswith("off (live serving keeps its placement")
    assert "re-placement" not in system["description"]
    assert system["description"].startswith("SeaLLM: services share groups")
    for spec in SYSTEMS.values():
        text = live_description(spec.description)
        assert "adaptive re-placement" not in text and "re-placing" not in text, spec.name


def test_docs_are_served_without_a_cdn(server):
    for page in ("/docs", "/redoc"):
        html = httpx.get(server.url + page).text
        assert "cdn." not in html and "https://" not in html, page
        for asset in re.findall(r'(?:src|href)="(/[^"]+)"', html):
            resp = httpx.get(server.url + asset)
            assert resp.status_code == 200 and len(resp.content) > 1000, asset
    assert "swagger-ui-bundle.js" in httpx.get(server.url + "/docs").text
    assert httpx.get(server.url + "/openapi.json").status_code == 200


def test_models_are_warmed_up_before_the_server_listens_and_leave_no_trace(tmp_path):
    from seallm.server.warmup import WARMUP_PARAMS

    steps = tmp_path / "steps.jsonl"
    with running(tiny_settings(step_log=str(steps))) as srv:
        assert set(srv.server.app.state.warmup_s) == set(MODELS)
        engines = list(srv.runtime.controller.engines.values())
        # Every model ran its prefill and decode steps before the URL was known...
        assert sum(e.iterations for e in engines) >= len(MODELS) * len(WARMUP_PARAMS)
        # ... and nothing of it is left: no request, no KV page, no count, no step logged.
        assert srv.runtime.in_flight == 0
        for e in engines:
            assert not (e.waiting or e.running or e.swapped)
            assert e.kv.stats().used_bytes == 0
            pools = {id(p): p for p in e.kv._pool_of.values()}.values()  # unified: one
            assert e.kv.stats().free_pages == sum(p.num_pages for p in pools)
        assert all(not done for done in srv.runtime._done_at.values())
        text = httpx.get(srv.url + "/metrics").text
        for line in text.splitlines():
            if line.startswith(
                (
                    "seallm_requests_total{",
                    "seallm_prompt_tokens_total{",
                    "seallm_generation_tokens_total{",
                    "seallm_time_to_first_token_seconds_count{",
                )
            ):
                assert float(line.split()[-1]) == 0, line
        assert steps.read_text() == ""
        post(srv, "/v1/completions", {"model": SMOL, "prompt": "first", "max_tokens": 3})
        text = httpx.get(srv.url + "/metrics").text
        assert f'seallm_requests_total{{model="{SMOL}",outcome="completed"}} 1.0' in text
        assert all("prefill_tokens" in json.loads(x) for x in steps.read_text().splitlines())
