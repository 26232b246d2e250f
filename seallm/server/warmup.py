"""Warm every model up before the server listens, so that no client pays for a cold start.

A model's first steps are far slower than the next ones (PyTorch sets up its kernels, thread
pools and allocations on first use: on the CPU a first request of 8 tokens took 8.6 s, the next
0.8 s). So at startup, before the URL is announced and `/health` answers, each model runs short
requests through the real path (runtime.submit, its engine thread, the executor's prefill and
decode steps, greedy and sampled). They leave no trace: they are not counted in `/metrics`'
requests and tokens, nor in the step log, nor in the completion rate behind Retry-After, and
their KV pages are freed when they finish, as every request's are.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from seallm.models.sampling import Generation, SamplingParams

if TYPE_CHECKING:
    from seallm.models.loader import LoadedModel
    from seallm.runtime.live import LiveRuntime

log = logging.getLogger("seallm.server")

WARMUP_TEXT = "Warming up: the quick brown fox jumps over the lazy dog."
WARMUP_PROMPT_TOKENS = 16
WARMUP_TOKENS = 4  # decode steps per request
WARMUP_PARAMS = (
    SamplingParams(max_tokens=WARMUP_TOKENS, temperature=0.0, ignore_eos=True),
    SamplingParams(max_tokens=WARMUP_TOKENS, temperature=1.0, top_p=0.9, seed=0, ignore_eos=True),
)


async def warm_up(runtime: LiveRuntime, models: dict[str, LoadedModel]) -> dict[str, float]:
    """Run each model's warm-up requests (the runtime started); seconds each model took. A
    failure is logged, not raised: the server still starts, and that model's requests will
    report the error themselves."""
    hook, step_log = runtime.on_end, runtime.step_log
    runtime.on_end = lambda r: None
    runtime.step_log = None
    seconds: dict[str, float] = {}
    try:
        for name, model in models.items():
            ids = list(model.encode(WARMUP_TEXT))[:WARMUP_PROMPT_TOKENS] or [0]
            t0 = time.perf_counter()
            for params in WARMUP_PARAMS:
                try:
                    stream = runtime.submit(name, Generation(list(ids), params))
                except Exception as err:  # e.g. a KV pool too small for even this
                    log.warning("warm-up of %s skipped: %s", name, err)
                    break
                while not (event := await stream.next()).final:
                    pass
                if event.error is not None:
                    log.warning("warm-up of %s failed: %s", name, event.error)
            seconds[name] = time.perf_counter() - t0
    finally:
        # Under the lock: an engine thread calls on_end while it holds it, so none is still
        # running the muted hook for a warm-up request after this.
        with runtime.lock:
            runtime.on_end = hook
            runtime.step_log = step_log
            for done in runtime._done_at.values():
                done.clear()
    return seconds
