"""TorchExecutor under the GroupEngine: two models of different architectures sharing one
KV pool, requests interleaved by the DB scheduler, preempted (swapped or recomputed), and each
output equal to that request's output run alone."""

from __future__ import annotations

import copy
import dataclasses
import math
import random

import pytest
import torch
from conftest import TEST_DEVICE

from seallm.config import EngineSpec
from seallm.engine import GroupEngine
from seallm.executor.base import Batch
from seallm.executor.torch import TorchExecutor, live_request, make_torch_engine, run_until_idle
from seallm.kvcache import UnifiedKVCache
from seallm.models.loader import LoadedModel, tiny_model
from seallm.models.sampling import SamplingParams
from seallm.request import Request, Status

PAGE = 4096  # tiny models: 8 llama tokens or 5 gemma tokens a page


@pytest.fixture(scope="module")
def tiny() -> dict[str, LoadedModel]:
    """Both on TEST_DEVICE: make_torch_engine puts the KV pool on the models' device."""
    return {
        "llama": tiny_model("llama", seed=0, device=TEST_DEVICE),
        "gemma": tiny_model("gemma3", seed=1, device=TEST_DEVICE),
    }


def workload(n: int, seed: int = 0) -> list[Request]:
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        prompt = [rng.randrange(256) for _ in range(rng.randrange(3, 40))]
        params = SamplingParams(
            max_tokens=rng.randrange(4, 30),
            temperature=0.0 if i % 3 else 0.9,  # some greedy, some seeded sampling
            top_p=0.9,
            seed=1000 + i,
            ignore_eos=True,
        )
        reqs.append(live_request(i, ["llama", "gemma"][i % 2], prompt, params, 0.0))
    return reqs


def alone(models: dict[str, LoadedModel], req: Request, page: int = PAGE) -> list[int]:
    """The request's output with an engine of its own and room to spare."""
    g = req.generation
    solo = live_request(req.id, req.service, g.prompt_ids, copy.deepcopy(g.params), 0.0)
    engine = make_torch_engine(
        {req.service: models[req.service]}, kv_bytes=64 * page, engine=EngineSpec(page_bytes=page)
    )
    run_until_idle(engine, [solo])
    return solo.generation.output_ids


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are all dispatch overhead: a second thread only adds synchronization."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_and_check(tiny, reqs: list[Request], system: str, pages: int) -> GroupEngine:
    want = {r.id: alone(tiny, r) for r in reqs}
    engine = make_torch_engine(
        tiny, system, kv_bytes=pages * PAGE, engine=EngineSpec(page_bytes=PAGE, block_tokens=4)
    )
    run_until_idle(engine, reqs)
    for r in reqs:
        assert r.status is Status.FINISHED
        assert r.generation.output_ids == want[r.id], (system, pages, r.id)
        assert r.generation.finish_reason == "length"
        assert r.generated == len(r.generation.output_ids) == r.generation.params.max_tokens
    # The two models really shared steps, and every page came back.
    assert engine.steps < sum(r.generated for r in reqs)
    assert engine.kv.stats().used_bytes == 0
    return engine


@pytest.mark.parametrize(("system", "pages"), [("seallm", 200), ("vllm", 240)])
def test_interleaved_requests_equal_alone(tiny, system: str, pages: int) -> None:
    """DB scheduler over the unified pool, and FCFS over static per-model partitions."""
    engine = run_and_check(tiny, workload(12), system, pages)
    assert engine.preemptions == 0


def run_rounds(models, reqs: list[Request], page: int, pages: int) -> set[int]:
    """Step an engine whose every model joins each round; returns the steps that ran both
    models at once."""
    engine = make_torch_engine(
        models,
        kv_bytes=pages * page,
        engine=EngineSpec(page_bytes=page, round_join_slowdown=math.inf),
    )
    for r in reqs:
        engine.add(r, 0.0)
    clock, both = 0.0, set()
    while engine.has_work:
        batch = engine.plan(clock)
        if len({r.service for r in batch.requests}) > 1:
            both.add(engine.steps)
        out = engine.execute(batch, clock)
        clock += out.duration
        engine.commit(batch, out, clock)
    assert engine.kv.stats().used_bytes == 0
    return both


def test_rounds_run_both_models_and_equal_alone(tiny) -> None:
    """Rounds: a step holds a batch of each model (run one after the other on a CPU), and
    every request still produces what it produces alone."""
    reqs = workload(12, seed=5)
    want = {r.id: alone(tiny, r) for r in reqs}
    assert run_rounds(tiny, reqs, PAGE, 200)
    assert {r.id: r.generation.output_ids for r in reqs} == want
    assert all(r.status is Status.FINISHED for r in reqs)


def test_swapped_requests_equal_alone(tiny) -> None:
    """Pools too small for all: the DB scheduler preempts, swapping KV to host and back."""
    swaps = sum(run_and_check(tiny, workload(12), "seallm", p).swaps for p in (14, 16, 18))
    assert swaps > 0


def test_recomputed_requests_equal_alone(tiny) -> None:
    """Preempted requests drop their KV and are prefilled again over prompt + output."""
    engines = [run_and_check(tiny, workload(12), "seallm-fcfs", p) for p in (18, 20)]
    assert sum(e.preemptions for e in engines) > 0 and sum(e.swaps for e in engines) == 0


def test_requests_arriving_during_decode(tiny) -> None:
    """Requests added between steps join running batches (continuous batching)."""
    reqs = workload(8, seed=3)
    want = {r.id: alone(tiny, r) for r in reqs}
    engine = make_torch_engine(tiny, kv_bytes=200 * PAGE, engine=EngineSpec(page_bytes=PAGE))
    clock, pending = 0.0, list(reqs)
    while pending or engine.has_work:
        if pending:
            engine.add(pending.pop(0), clock)
        batch = engine.plan(clock)
        out = engine.execute(batch, clock)
        assert out.iterations == 1 and out.duration > 0
        clock += out.duration
        engine.commit(batch, out, clock)
    assert {r.id: r.generation.output_ids for r in reqs} == want


def test_executor_checks_requests(tiny) -> None:
    specs = {s: m.spec for s, m in tiny.items()}
    kv = UnifiedKVCache(specs, 1, 16 * PAGE, PAGE)
    ex = TorchExecutor(tiny, kv, TEST_DEVICE)
    bare = Request(1, "llama", 3, 4, 0.0)
    kv.allocate(bare, 4)
    with pytest.raises(ValueError, match="no generation"):
        ex.execute(Batch("llama", prefill=[bare]), 0.0)
    r = live_request(2, "llama", [1, 2, 3], SamplingParams(), 0.0)
    r.generated = 1  # the engine believes a token exists that the generation lacks
    kv.allocate(r, 5)
    with pytest.raises(ValueError, match="engine counts"):
        ex.execute(Batch("llama", decode=[r]), 0.0)
    with pytest.raises(ValueError, match="temperature"):
        live_request(3, "llama", [1], SamplingParams(temperature=-1), 0.0)
    # A cache whose pages disagree with the loaded shapes (a stale spec) is refused.
    stale = {**specs, "llama": dataclasses.replace(specs["llama"], dtype_bytes=2)}
    with pytest.raises(ValueError, match="tokens of the loaded model"):
        TorchExecutor(tiny, UnifiedKVCache(stale, 1, 16 * PAGE, PAGE), TEST_DEVICE)


@pytest.mark.slow
def test_real_models_share_one_pool(real_models) -> None:
    """SmolLM2 (Llama, GQA) and Gemma 3 (sliding + global, QK norm) in one unified pool."""
    prompts = {
        "smollm2-135m": ["What is the capital of France?", "Name three colors."],
        "gemma-3-270m": ["The sea is", "Once upon a time"],
    }
    reqs, rid = [], 0
    for name, texts in prompts.items():
        lm = real_models[name]
        for text in texts:
            ids = (
                lm.apply_chat_template([{"role": "user", "content": text}])
                if name.startswith("smol")
                else lm.encode(text)
            )
            reqs.append(
                live_request(rid, name, ids, SamplingParams(max_tokens=12, temperature=0), 0.0)
            )
            rid += 1
    want = {r.id: alone(real_models, r, page=2**21) for r in reqs}
    engine = make_torch_engine(real_models, kv_bytes=16 * 2**21)
    run_until_idle(engine, reqs)
    for r in reqs:
        assert r.generation.output_ids == want[r.id]
        assert r.generation.text.strip()
    # The instruct model answers and ends its turn (EOS); the base model runs to max_tokens.
    reasons = {(r.service, r.generation.finish_reason) for r in reqs}
    assert reasons == {("smollm2-135m", "stop"), ("gemma-3-270m", "length")}
    assert engine.kv.tokens_per_page == {"smollm2-135m": 45, "gemma-3-270m": 56}
    # Served in rounds (both models in one step), the same tokens again.
    again = [
        live_request(
            r.id,
            r.service,
            r.generation.prompt_ids,
            SamplingParams(max_tokens=12, temperature=0),
            0.0,
        )
        for r in reqs
    ]
    assert run_rounds(real_models, again, 2**21, 16)
    assert {r.id: r.generation.output_ids for r in again} == want
