"""Model conversion shows one bar of ours: transformers' own bars and warnings are silenced
while it converts, its de-quantization loop moves our bar, and all is restored after."""

from __future__ import annotations

import pytest

pytest.importorskip("gguf")


def test_conversion_quiets_transformers_and_restores_it():
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    from seallm.models.loader import CONVERSION_SHARES, _ConversionBar, _quiet_transformers

    updates: list[dict] = []
    bar = _ConversionBar("m", lambda **kw: updates.append(kw))
    before = (gguf_utils.tqdm, hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled())
    bar.step("reading the GGUF")
    with _quiet_transformers(bar):
        assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.get_verbosity() == hf_logging.ERROR
        assert list(gguf_utils.tqdm(range(4), desc="Converting...")) == [0, 1, 2, 3]
    assert (gguf_utils.tqdm, hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == (
        before
    )
    assert updates[0]["description"] == "converting m: reading the GGUF"
    assert updates[1]["description"] == "converting m: de-quantizing tensors"
    done = [u["completed"] for u in updates]
    assert done == sorted(done)  # the bar never goes back
    shares = list(CONVERSION_SHARES.values())
    assert done[-1] == pytest.approx(sum(shares[:3]))


def test_conversion_bar_steps_fill_to_the_end():
    from seallm.models.loader import CONVERSION_SHARES, _ConversionBar

    updates: list[dict] = []
    bar = _ConversionBar("m", lambda **kw: updates.append(kw))
    for label in CONVERSION_SHARES:
        bar.step(label)
    assert updates[-1] == {"description": "converting m: done", "completed": 100.0}
    _ConversionBar("quiet").step("done")  # no bar: nothing to update
