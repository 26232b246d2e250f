"""Our paged forward passes against transformers' own implementations, the loader, sampling."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TEST_DEVICE, assert_prompt_logits
from transformers import (
    AutoModelForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
)

from seallm.models.attention import KVPool, SeqSlice
from seallm.models.loader import LoadedModel, cache_dir, load_model, tiny_model
from seallm.models.sampling import Generation, SamplingParams, sample

REFERENCE = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM),
}


def reference(lm: LoadedModel, arch: str) -> torch.nn.Module:
    """transformers' model of the same config and weights, in float32 eager attention, on the
    CPU whatever device `lm` is on (tests compare our logits `.cpu()`)."""
    config_cls, model_cls = REFERENCE[arch]
    cfg = config_cls(**{k: v for k, v in lm.config.items() if k != "model_type"})
    cfg._attn_implementation = "eager"
    ref = model_cls(cfg).eval()
    ref.load_state_dict(lm.module.hf_state_dict(), strict=False)  # lm_head is tied
    return ref


def pool_for(lm: LoadedModel, pages: int = 64, page_bytes: int = 4096):
    c = lm.module.cfg
    pool = KVPool(pages, page_bytes, lm.device)
    return pool.view(c.num_layers, c.num_kv_heads, c.head_dim, lm.dtype)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_tiny_logits_match_transformers(arch: str) -> None:
    lm = tiny_model(arch, seed=3, device=TEST_DEVICE)
    ref = reference(lm, arch)
    kv = pool_for(lm)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (37,), generator=gen)
    with torch.no_grad():
        want = ref(ids[None]).logits[0]
    ids = ids.to(lm.device)
    # Pages out of order and scattered: the page table, not the layout, decides.
    table = [40, 3, 17, 8, 30, 22, 11, 5, 60, 1]
    assert_prompt_logits(lm, ids, want, table, kv)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_tiny_batched_mixed_step_matches_each_alone(arch: str) -> None:
    """A step mixing two decodes and two prefills of different lengths gives each sequence
    the logits it gets alone."""
    lm = tiny_model(arch, seed=5, device=TEST_DEVICE)
    ref = reference(lm, arch)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 256, (n,), generator=gen) for n in (12, 25, 9, 30)]
    on_dev = [p.to(lm.device) for p in prompts]
    kv = pool_for(lm, pages=80)
    tables = [list(range(i * 10, i * 10 + 10))[::-1] for i in range(4)]
    # Sequences 0 and 1 are already cached but their last token.
    for i in (0, 1):
        n = len(prompts[i]) - 1
        lm.module(on_dev[i][:n], [SeqSlice(0, n, tables[i])], kv)
    seqs = [
        SeqSlice(len(prompts[0]) - 1, 1, tables[0]),
        SeqSlice(0, len(prompts[2]), tables[2]),
        SeqSlice(len(prompts[1]) - 1, 1, tables[1]),
        SeqSlice(0, len(prompts[3]), tables[3]),
    ]
    tokens = torch.cat([on_dev[0][-1:], on_dev[2], on_dev[1][-1:], on_dev[3]])
    got = lm.module(tokens, seqs, kv).cpu()
    with torch.no_grad():
        want = [ref(prompts[i][None]).logits[0, -1] for i in (0, 2, 1, 3)]
    torch.testing.assert_close(got, torch.stack(want), atol=1e-4, rtol=1e-4)


def test_pool_is_one_tensor_viewed_per_model() -> None:
    a, b = tiny_model("llama", device=TEST_DEVICE), tiny_model("gemma3", device=TEST_DEVICE)
    pool = KVPool(8, 4096, TEST_DEVICE)
    va = pool.view(2, 2, 16, torch.float32)
    vb = pool.view(3, 1, 32, torch.float32)
    # 4096 bytes / (2 layers x 2 x 2 heads x 16 x 4 bytes) = 8 tokens; gemma: 4096 / 768 = 5.
    assert (va.tokens_per_page, vb.tokens_per_page) == (8, 5)
    assert va.cache.data_ptr() == vb.cache.data_ptr() == pool.data.data_ptr()
    # A page written by one model is the same bytes the other sees.
    ids = torch.tensor([1, 2, 3], device=TEST_DEVICE)
    a.module(ids, [SeqSlice(0, 3, [2])], va)
    page = pool.data[2 * 4096 : 3 * 4096]
    assert page.any() and not pool.data[3 * 4096 :].any()
    before = page.clone()
    b.module(ids, [SeqSlice(0, 3, [2])], vb)
    assert not torch.equal(page, before)
    with pytest.raises(ValueError, match="holds no token"):
        KVPool(2, 512, TEST_DEVICE).view(3, 1, 32, torch.float32)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_stale_page_bytes_are_harmless(arch: str) -> None:
    """Pages come back from other requests (or models, of other dtypes) holding any bytes,
    NaN patterns included; what a sequence has not written must not reach its attention."""
    lm = tiny_model(arch, seed=7, device=TEST_DEVICE)
    ref = reference(lm, arch)
    c = lm.module.cfg
    pool = KVPool(16, 4096, lm.device)
    pool.data.fill_(0xFF)  # every float32 is NaN
    kv = pool.view(c.num_layers, c.num_kv_heads, c.head_dim, torch.float32)
    ids = torch.randint(0, 256, (13,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = ref(ids[None]).logits[0, 11:]
    ids = ids.to(lm.device)
    table = [9, 4, 12]
    lm.module(ids[:11], [SeqSlice(0, 11, table)], kv)
    got = torch.cat([lm.module(ids[p : p + 1], [SeqSlice(p, 1, table)], kv) for p in (11, 12)])
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)


def test_local_hf_folder_loads(tmp_path) -> None:
    lm = tiny_model("llama", seed=2)
    ref = reference(lm, "llama")
    ref.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), TEST_DEVICE, progress=False)
    assert loaded.name == tmp_path.name and loaded.path == tmp_path
    assert loaded.spec.num_layers == 2 and loaded.spec.dtype_bytes == 4
    ids = torch.tensor([5, 9, 100, 42])
    with torch.no_grad():
        want = ref(ids[None]).logits[0, -1:]
    kv = pool_for(loaded, pages=2, page_bytes=8192)
    got = loaded.module(ids.to(loaded.device), [SeqSlice(0, 4, [0])], kv)
    torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)
    assert loaded.apply_chat_template([{"role": "user", "content": "hi"}])[0] == 256
    # A half-precision load keeps the page geometry honest.
    half = load_model(str(tmp_path), dtype=torch.bfloat16, progress=False)
    assert half.spec.dtype_bytes == 2 and half.dtype == torch.bfloat16


def test_loader_errors(tmp_path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="neither a packaged model"):
        load_model(str(tmp_path / "nothing"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="model_type 'mamba' is not one of"):
        load_model(str(tmp_path))
    monkeypatch.setenv("SEALLM_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    with pytest.raises(ValueError, match="arch"):
        tiny_model("gpt2")


# -- sampling ---------------------------------------------------------------------------------


def test_sampling_params_validate() -> None:
    SamplingParams().validate()
    for bad, field in [
        (dict(max_tokens=0), "max_tokens"),
        (dict(temperature=-1.0), "temperature"),
        (dict(temperature=float("nan")), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(stop=[""]), "stop"),
    ]:
        with pytest.raises(ValueError, match=field):
            SamplingParams(**bad).validate()


def _gen(**kw) -> Generation:
    return Generation([1, 2, 3], SamplingParams(**kw))


def test_sample_greedy_topk_topp_and_seed() -> None:
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)).to(TEST_DEVICE)
    best = logits.argmax(-1).tolist()
    assert sample(logits, [_gen(temperature=0)] * 4) == best
    assert sample(logits, [_gen(top_k=1)] * 4) == best
    assert sample(logits, [_gen(top_p=1e-6, seed=1)] * 4) == best
    # top_k keeps the sample among the k best.
    top3 = logits.topk(3).indices.tolist()
    for s in range(20):
        toks = sample(logits, [_gen(top_k=3, seed=s) for _ in range(4)])
        assert all(t in top3[i] for i, t in enumerate(toks))
    # A seed gives the same draws whatever else is in the batch.
    a = [sample(logits[:1], [g])[0] for g in [_gen(seed=7)] for _ in range(5)]
    g1, g2 = _gen(seed=7), _gen(seed=99)
    b = [sample(logits[:2], [g1, g2])[0] for _ in range(5)]
    assert a == b
    assert len(set(a)) > 1  # temperature 1 over 50 tokens does vary


def test_generation_finishes_on_eos_stop_length_context() -> None:
    tok = tiny_model("llama").tokenizer
    eos = [tok.eos_token_id]
    g = _gen(max_tokens=10)
    for t in tok("ab")["input_ids"]:
        g.append(t, tok, eos, 100)
    g.append(eos[0], tok, eos, 100)
    assert (g.finish_reason, g.text, len(g.output_ids)) == ("stop", "ab", 3)
    g = _gen(max_tokens=10, ignore_eos=True)
    g.append(eos[0], tok, eos, 100)
    assert g.finish_reason is None
    g = _gen(max_tokens=20, stop=["END", "xy"])
    for t in tok("hello ENDING")["input_ids"]:
        g.append(t, tok, eos, 100)
        if g.finished:
            break
    assert (g.finish_reason, g.text) == ("stop", "hello ")
    g = _gen(max_tokens=3)
    for t in tok("abcdef")["input_ids"][:3]:
        g.append(t, tok, eos, 100)
    assert (g.finish_reason, g.text) == ("length", "abc")
    g = _gen(max_tokens=50)
    for t in tok("abcdef")["input_ids"]:
        g.append(t, tok, eos, 6)  # 3 prompt tokens + 3 outputs fill a 6-token context
        if g.finished:
            break
    assert (g.finish_reason, len(g.output_ids)) == ("length", 3)


def test_incremental_text_equals_full_decode_with_split_characters() -> None:
    tok = tiny_model("gemma3").tokenizer
    text = "naïve café — 東京 🚀 ok"
    ids = tok(text)["input_ids"]
    assert len(ids) > len(text)  # multi-byte characters span several byte tokens
    g = _gen(max_tokens=1000, stop=["zz"])
    seen = []
    for t in ids:
        g.append(t, tok, [tok.eos_token_id], 10_000)
        seen.append(g.text)
        assert "\ufffd" not in g.text
        assert g.text.startswith(g.stable_text())
    assert g.text == text
    assert len(g.stable_text()) == len(text) - 1  # a stop string of 2 may still be forming


# -- the real packaged models (on the CPU whatever TEST_DEVICE is; skipped when absent) -------


def _hf_reference(lm: LoadedModel) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(lm.path, dtype=torch.float32).eval()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma-3-270m"])
def test_real_model_matches_transformers(real_models, name: str) -> None:
    """Logits on a random prompt (float32) and 32 greedy tokens equal transformers'."""
    from seallm.executor.torch import live_request, make_torch_engine, run_until_idle

    lm = real_models[name]
    ref = _hf_reference(lm)
    ids = torch.randint(0, lm.spec.vocab_size, (40,), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = ref(ids[None]).logits[0]
    c = lm.module.cfg
    kv = KVPool(4, 2**21, "cpu").view(c.num_layers, c.num_kv_heads, c.head_dim, lm.dtype)
    got = lm.module(ids, [SeqSlice(0, 40, [2, 0])], kv, all_logits=True)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)

    prompt = lm.apply_chat_template([{"role": "user", "content": "Tell me about the sea."}])
    with torch.no_grad():
        out = ref.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),  # pad id = EOS id
            max_new_tokens=32,
            do_sample=False,
            eos_token_id=None,
        )
    engine = make_torch_engine({name: lm}, kv_bytes=8 * 2**21)
    req = live_request(
        0, name, prompt, SamplingParams(max_tokens=32, temperature=0, ignore_eos=True), 0
    )
    run_until_idle(engine, [req])
    assert req.generation.output_ids == out[0, len(prompt) :].tolist()
    assert req.generation.finish_reason == "length" and req.generation.text
