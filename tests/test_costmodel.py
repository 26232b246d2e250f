"""Behaviour of the analytical cost model (seallm/costmodel.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seallm.calibration import read_profiles
from seallm.catalog import DEVICES, MODELS
from seallm.costmodel import (
    CALIBRATIONS,
    DEFAULT_CALIBRATION,
    LINEAR_OPS,
    Calibration,
    CostModel,
    ModelCost,
)
from seallm.specs import DeviceSpec

A100 = DEVICES["a100-80gb"]
H100 = DEVICES["h100-80gb"]
L7 = MODELS["llama-2-7b"]
L70 = MODELS["llama-2-70b"]
PROFILES = Path(__file__).resolve().parents[2] / "shared" / "profiles"


def cost(model=L7, tp=1, device=A100, calibration=None) -> ModelCost:
    return CostModel(device, calibration).for_model(model, tp)


def test_calibrations_exist_and_unknown_device_gets_default():
    assert {"a100-80gb", "h100-80gb", "cpu"} <= set(CALIBRATIONS)
    assert all(isinstance(c, Calibration) for c in CALIBRATIONS.values())
    assert CostModel(A100).calibration is CALIBRATIONS["a100-80gb"]
    odd = DeviceSpec("mystery-gpu", 40e9, 100e12, 1e12, 100e9, 10e9, 10e9)
    assert CostModel(odd).calibration is DEFAULT_CALIBRATION
    assert CostModel(odd).for_model(L7, 1).iteration_time(0, 0, 8, 8000) > 0


def test_for_model_is_cached_per_model_and_tp():
    cm = CostModel(A100)
    assert cm.for_model(L7, 1) is cm.for_model(L7, 1)
    assert cm.for_model(L7, 1) is not cm.for_model(L7, 2)


def test_zero_work_costs_nothing():
    mc = cost()
    assert mc.iteration_time(0, 0, 0, 0) == 0.0
    assert mc.prefill_time(0) == 0.0
    assert list(mc.decode_times(0, 0, 3)) == [0.0, 0.0, 0.0]
    assert len(mc.decode_times(4, 100, 0)) == 0


@pytest.mark.parametrize("device", [A100, H100, DEVICES["cpu"]])
@pytest.mark.parametrize("tp", [1, 2, 4])
def test_monotonic_in_batch_tokens_and_context(device, tp):
    mc = cost(MODELS["llama-3-8b"], tp, device)
    for n in [1, 2, 8, 64, 255, 1024]:
        assert mc.iteration_time(0, 0, n + 1, 1000 * n) > mc.iteration_time(0, 0, n, 1000 * n)
        assert mc.iteration_time(0, 0, n, 1000 * n + 512) > mc.iteration_time(0, 0, n, 1000 * n)
    for p in [1, 16, 100, 512, 2048]:
        assert mc.prefill_time(p + 1) > mc.prefill_time(p)
        assert mc.iteration_time(p, p * p, 4, 4000) > mc.iteration_time(p, p * p, 3, 3000)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 512),
    ctx=st.integers(1, 4096),
    extra_tokens=st.integers(1, 64),
    extra_ctx=st.integers(1, 4096),
)
def test_monotonic_property(n, ctx, extra_tokens, extra_ctx):
    mc = cost(L70, 4, H100)
    base = mc.iteration_time(0, 0, n, n * ctx)
    assert mc.iteration_time(0, 0, n + extra_tokens, n * ctx) > base
    assert mc.iteration_time(0, 0, n, n * ctx + extra_ctx) > base


def test_batching_is_cheaper_than_running_separately():
    mc = cost()
    together = mc.iteration_time(512, 512 * 512, 32, 32 * 800)
    apart = mc.prefill_time(512) + mc.iteration_time(0, 0, 32, 32 * 800)
    assert together < apart
    assert mc.iteration_time(0, 0, 64, 64 * 500) < 2 * mc.iteration_time(0, 0, 32, 32 * 500)


def test_prefill_attention_grows_with_squared_lengths():
    mc = cost()
    # same tokens, one long prompt vs 8 short ones: more causal-attention FLOPs
    assert mc.iteration_time(4096, 4096**2, 0, 0) > mc.iteration_time(4096, 8 * 512**2, 0, 0)


@pytest.mark.parametrize("device", [A100, H100])
def test_tp2_faster_than_tp1_for_big_model_at_large_batch_but_not_twice(device):
    for args in [(2048, 2048**2, 0, 0), (0, 0, 128, 128 * 1000)]:
        t1 = cost(L70, 1, device).iteration_time(*args)
        t2 = cost(L70, 2, device).iteration_time(*args)
        assert t2 < t1 < 2 * t2


def test_bigger_model_is_slower():
    for device in (A100, H100):
        for tp in (1, 2, 4, 8):
            small, big = cost(L7, tp, device), cost(L70, tp, device)
            assert big.prefill_time(1000) > 2 * small.prefill_time(1000)
            assert big.iteration_time(0, 0, 16, 16000) > 2 * small.iteration_time(0, 0, 16, 16000)
            assert big.standalone_latency(500, 100) > big.prefill_time(500)
            assert big.standalone_latency(500, 100) > small.standalone_latency(500, 100)


def test_h100_faster_than_a100():
    assert cost(L70, 4, H100).prefill_time(2048) < cost(L70, 4, A100).prefill_time(2048)
    assert cost(L70, 4, H100).iteration_time(0, 0, 8, 8000) < cost(L70, 4, A100).iteration_time(
        0, 0, 8, 8000
    )


def test_decode_step_realistic_magnitude():
    # Llama-2-7B, batch 1 on an A100: weights (13.5 GB) streamed at ~1.6 TB/s + overheads.
    t = cost(L7, 1, A100).iteration_time(0, 0, 1, 100)
    assert 6e-3 < t < 15e-3


@pytest.mark.parametrize("model", [L7, L70, MODELS["llama-3-8b"], MODELS["gemma-3-270m"]])
@pytest.mark.parametrize("tp", [1, 2, 8])
def test_decode_times_equal_the_loop(model, tp):
    mc = cost(model, tp, H100)
    for n, ctx, k in [(1, 10, 50), (7, 7 * 300, 200), (256, 256 * 1500, 64), (3, 0, 5)]:
        fused = mc.decode_times(n, ctx, k)
        loop = [mc.iteration_time(0, 0, n, ctx + i * n) for i in range(k)]
        assert fused.shape == (k,)
        np.testing.assert_allclose(fused, loop, rtol=1e-9, atol=0)


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 2048), ctx=st.integers(0, 10**6), k=st.integers(1, 40))
def test_decode_times_equal_the_loop_property(n, ctx, k):
    mc = cost(MODELS["mistral-7b"], 2, A100)
    loop = [mc.iteration_time(0, 0, n, ctx + i * n) for i in range(k)]
    np.testing.assert_allclose(mc.decode_times(n, ctx, k), loop, rtol=1e-9, atol=0)


def test_prefill_time_is_one_prompt_iteration():
    mc = cost()
    assert mc.prefill_time(300) == mc.iteration_time(300, 300 * 300, 0, 0)


# Calibrations under which decode attention is compute bound (SLOW_ATTN), or turns compute
# bound at a context of ~2000 tokens (CROSSING: KV bytes read per context token = FLOPs per
# context token / achieved FLOP/s, counting the per-request query read), so that
# standalone_latency's closed forms and its vectorized fallback are all exercised.
_A100_CAL = CALIBRATIONS["a100-80gb"]
SLOW_ATTN = dataclasses.replace(_A100_CAL, attn_compute_eff=2e-4)
_kv_s = 2 * L7.num_kv_heads * L7.head_dim * 2 / (A100.memory_bandwidth * _A100_CAL.attn_memory_eff)
_q_s = 2 * L7.num_heads * L7.head_dim * 2 / (A100.memory_bandwidth * _A100_CAL.attn_memory_eff)
CROSSING = dataclasses.replace(
    _A100_CAL,
    attn_compute_eff=4 * L7.num_heads * L7.head_dim / (A100.peak_flops * (_kv_s + _q_s / 2000)),
)


@pytest.mark.parametrize("calibration", [None, SLOW_ATTN, CROSSING])
@pytest.mark.parametrize(
    "prompt,output", [(1, 1), (10, 2), (500, 300), (1500, 1000), (3000, 1000), (0, 5)]
)
def test_standalone_latency_is_prefill_plus_decodes(calibration, prompt, output):
    mc = cost(L7, 1, A100, calibration)
    expected = mc.prefill_time(prompt) + sum(
        mc.iteration_time(0, 0, 1, prompt + i) for i in range(1, output)
    )
    assert mc.standalone_latency(prompt, output) == pytest.approx(expected, rel=1e-9)


def test_linear_op_times_keys_and_scaling():
    mc = cost(L70, 1, H100)
    ops = mc.linear_op_times(1024)
    assert set(ops) == set(LINEAR_OPS)
    assert all(isinstance(v, float) and v > 0 for v in ops.values())
    sharded = cost(L70, 4, H100).linear_op_times(1024)
    for op in ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj", "mlp_act"):
        assert sharded[op] < ops[op]
    assert sharded["input_layernorm"] == ops["input_layernorm"]  # replicated


def test_load_time_scales_with_bytes():
    cm = CostModel(A100)
    t7, t70 = cm.load_time(L7, 1), cm.load_time(L70, 1)
    assert t70 / t7 == pytest.approx(L70.weight_bytes / L7.weight_bytes)
    assert cm.load_time(L70, 4) == pytest.approx(t70 / 4)  # shards load in parallel
    assert cm.load_time(L7, 1, "disk") > cm.load_time(L7, 1, "host")
    assert t7 == pytest.approx(L7.weight_bytes / A100.host_bandwidth)
    with pytest.raises(ValueError):
        cm.load_time(L7, 1, "tape")


def test_swap_time_scales_with_bytes():
    cm = CostModel(A100)
    assert cm.swap_time(L7, 1, 0) == 0.0
    lat = cm.calibration.swap_latency
    one, two = cm.swap_time(L7, 1, 1000) - lat, cm.swap_time(L7, 1, 2000) - lat
    assert two == pytest.approx(2 * one)
    assert one == pytest.approx(1000 * L7.kv_bytes_per_token / A100.host_bandwidth)
    assert cm.swap_time(L7, 2, 1000) - lat == pytest.approx(one / 2)
    # GQA: 70B has 8 KV heads, so less KV per token than 7B despite its size.
    assert cm.swap_time(L70, 1, 1000) < cm.swap_time(L7, 1, 1000)


@pytest.mark.skipif(not PROFILES.is_dir(), reason="../shared/profiles not available")
def test_calibrated_against_measured_profile_rows():
    """A sample of measured rows (every model, GPU and tp; decode to long-prefill token
    counts): per-layer linear time within 15% at the median, no row off by half."""
    rows = [r for r in read_profiles(PROFILES) if r.num_tokens in (1, 8, 64, 256, 1024, 4096)]
    assert len(rows) > 100
    errors = []
    for r in rows:
        device = {"a100": A100, "h100": H100}[r.gpu]
        pred = CostModel(device).for_model(r.model, r.tp).linear_op_times(r.num_tokens)
        pred_layer = sum(pred.values()) + pred["add"]  # a layer runs two residual adds
        meas_layer = sum(r.times[op] for op in pred) + r.times["add"]
        errors.append(abs(pred_layer / meas_layer - 1))
    assert np.median(errors) < 0.15
    assert max(errors) < 0.5
