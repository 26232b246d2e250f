"""Qwen2, Qwen3 and Mistral: tiny random-weight transformers models saved as Hugging Face
folders, loaded by seallm's loader, and compared logit for logit (float32, 1e-4) through the
paged attention: scattered and reversed page tables, windows shorter than the prompt, cached
chunks, and one step mixing prefill, a cached chunk and decodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from conftest import TEST_DEVICE, assert_prompt_logits

from seallm.models.attention import KVPool, SeqSlice
from seallm.models.loader import LoadedModel, byte_tokenizer, load_model
from seallm.models.mistral import MistralConfig
from seallm.models.qwen2 import Qwen2Config
from seallm.models.qwen3 import Qwen3Config

SHAPE = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    intermediate_size=128,
    vocab_size=300,
    max_position_embeddings=1024,
    rope_parameters={"rope_theta": 10000.0, "rope_type": "default"},
)

# name -> (config class, model class, config keys): windows of 5 and 6 tokens slide within and
# across the 8-token pages of the pool below, and are far shorter than the 37-token prompt.
CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    # layer 0 global, layer 1 sliding (transformers: layers from max_window_layers on slide)
    "qwen2-window-tied": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(
            use_sliding_window=True, sliding_window=5, max_window_layers=1, tie_word_embeddings=True
        ),
    ),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "qwen3-bias-tied": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(attention_bias=True, tie_word_embeddings=True),
    ),
    "mistral-window": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=6)),
    "mistral-global": ("MistralConfig", "MistralForCausalLM", dict(sliding_window=None)),
}


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights of a scale that makes every part matter: transformers' own init (std 0.02,
    zero biases, unit norms) leaves logits near uniform and the biases untested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            draw = torch.randn(p.shape, generator=gen)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * draw)
            elif p.dim() == 1:  # a bias
                p.copy_(0.5 * draw)
            else:
                std = 0.5 if "embed" in name else 1.0 / p.shape[1] ** 0.5
                p.copy_(std * draw)


@pytest.fixture(scope="module", params=list(CASES))
def pair(request, tmp_path_factory) -> tuple[str, LoadedModel, torch.nn.Module]:
    """(case, seallm's model loaded from the saved folder, transformers' reference)."""
    case = request.param
    config_cls, model_cls, keys = CASES[case]
    cfg = getattr(transformers, config_cls)(**SHAPE, **keys)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    ref = getattr(transformers, model_cls)(cfg).eval()
    _randomize(ref, seed=len(case))
    folder = tmp_path_factory.mktemp(case)
    ref.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return case, load_model(str(folder), TEST_DEVICE, progress=False), ref


def pool_for(lm: LoadedModel, pages: int = 64) -> Any:
    c = lm.module.cfg
    kv = KVPool(pages, 4096, lm.device).view(c.num_layers, c.num_kv_heads, c.head_dim, lm.dtype)
    assert kv.tokens_per_page == 8  # 4096 / (2 layers x 2 x 2 heads x 16 x 4 bytes)
    return kv


def test_loaded_shapes(pair) -> None:
    case, lm, ref = pair
    cfg = lm.module.cfg
    assert lm.config["model_type"] == ref.config.model_type
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (2, 4, 2, 16)
    assert cfg.tie_word_embeddings == ("tied" in case)
    assert hasattr(lm.module, "lm_head") != cfg.tie_word_embeddings
    # Every transformers weight has a counterpart (tied lm_head aside), none is left over.
    ours = lm.module.hf_state_dict()
    theirs = {
        k for k in ref.state_dict() if not (cfg.tie_word_embeddings and k == "lm_head.weight")
    }
    assert set(ours) == theirs
    assert lm.spec.num_params == sum(p.numel() for p in lm.module.parameters())
    windows = {
        "qwen2-window-tied": (None, 5),
        "mistral-window": (6, 6),
    }.get(case, (None, None))
    assert tuple(lm.module.layer_window(i) for i in range(2)) == windows


@pytest.mark.parametrize("table", [[40, 3, 17, 8, 30, 22, 11, 5, 60, 1], list(range(9, -1, -1))])
def test_logits_match_transformers(pair, table: list[int]) -> None:
    """Whole prompt, then prefill + a cached chunk + decode token by token, on a scattered
    and on a reversed page table."""
    _, lm, ref = pair
    ids = torch.randint(0, 256, (37,), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref(ids[None]).logits[0]
    ids = ids.to(lm.device)
    kv = pool_for(lm)
    assert_prompt_logits(lm, ids, want, table, kv)


def test_mixed_step_matches_each_alone(pair) -> None:
    """One step: two decodes, two fresh prefills and a chunk after a cached prefix, each
    sequence on its own reversed page table, each gets transformers' logits for it alone."""
    _, lm, ref = pair
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 256, (n,), generator=gen) for n in (12, 25, 9, 30, 23)]
    dev = [p.to(lm.device) for p in prompts]
    kv = pool_for(lm, pages=80)
    tables = [list(range(i * 10, i * 10 + 10))[::-1] for i in range(5)]
    cached = {0: 11, 1: 24, 4: 14}  # tokens already in the pool
    for i, n in cached.items():
        lm.module(dev[i][:n], [SeqSlice(0, n, tables[i])], kv)
    order = [0, 2, 4, 1, 3]
    seqs = [
        SeqSlice(cached.get(i, 0), len(prompts[i]) - cached.get(i, 0), tables[i]) for i in order
    ]
    tokens = torch.cat([dev[i][cached.get(i, 0) :] for i in order])
    got = lm.module(tokens, seqs, kv).cpu()
    with torch.no_grad():
        want = torch.stack([ref(prompts[i][None]).logits[0, -1] for i in order])
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_bfloat16_load(pair) -> None:
    _, lm, _ = pair
    half = load_model(str(lm.path), dtype=torch.bfloat16, progress=False)
    assert half.dtype == torch.bfloat16 and half.spec.dtype_bytes == 2
    ids = torch.tensor([5, 9, 100, 42])
    c = half.module.cfg
    kv = KVPool(4, 4096, "cpu").view(c.num_layers, c.num_kv_heads, c.head_dim, torch.bfloat16)
    out = half.module(ids, [SeqSlice(0, 4, [2, 0])], kv)
    assert out.shape == (1, 300) and torch.isfinite(out).all()


# -- config parsing: what is supported, what is refused -------------------------------------

BASE = {
    "vocab_size": 300,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def test_config_defaults_follow_transformers() -> None:
    # An older-format config (rope_theta at the top, rope_scaling null), keys left out.
    q2 = Qwen2Config.from_hf(
        {**BASE, "model_type": "qwen2", "rope_theta": 1e6, "rope_scaling": None}
    )
    assert (q2.rope_theta, q2.tie_word_embeddings, q2.max_position) == (1e6, False, 32768)
    assert q2.layer_windows == (None,) * 4 and (q2.qkv_bias, q2.o_bias) == (True, False)
    q3 = Qwen3Config.from_hf({**BASE, "model_type": "qwen3"})
    assert (q3.head_dim, q3.qkv_bias, q3.o_bias) == (128, False, False)
    assert Qwen3Config.from_hf({**BASE, "attention_bias": True, "model_type": "qwen3"}).o_bias
    m = MistralConfig.from_hf({**BASE, "model_type": "mistral"})
    assert m.layer_windows == (4096,) * 4 and m.head_dim == 16  # transformers' default window
    m = MistralConfig.from_hf({**BASE, "model_type": "mistral", "sliding_window": None})
    assert m.layer_windows == (None,) * 4


def test_qwen_sliding_layers() -> None:
    cfg = {**BASE, "model_type": "qwen2", "sliding_window": 64, "max_window_layers": 2}
    assert Qwen2Config.from_hf(cfg).layer_windows == (None,) * 4  # use_sliding_window false
    on = {**cfg, "use_sliding_window": True}
    assert Qwen2Config.from_hf(on).layer_windows == (None, None, 64, 64)
    types = ["sliding_attention", "full_attention"] * 2
    assert Qwen3Config.from_hf({**on, "layer_types": types}).layer_windows == (64, None, 64, None)
    with pytest.raises(ValueError, match="layer_types"):
        Qwen2Config.from_hf({**on, "layer_types": ["chunked_attention"] * 4})


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"rope_scaling": {"type": "yarn", "factor": 4.0}}, "rope_scaling 'yarn'"),
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling 'llama3'"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6}}, "rope_type 'yarn'"),
        ({"hidden_act": "gelu"}, "hidden_act"),
    ],
)
@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "mistral"])
def test_unsupported_configs_are_refused(tmp_path: Path, arch: str, keys: dict, match: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**BASE, "model_type": arch, **keys}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=match):
        load_model(str(tmp_path), progress=False)


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_scaling 'llama3'"),
        ({"attention_bias": True}, "attention_bias"),
        ({"mlp_bias": True}, "mlp_bias"),
    ],
)
def test_llama_refuses_what_its_layout_does_not_implement(
    tmp_path: Path, keys: dict, match: str
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({**BASE, "model_type": "llama", **keys}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=match):
        load_model(str(tmp_path), progress=False)
