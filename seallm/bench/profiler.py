"""`seallm profile`: time the real engine's iterations and write a profile file.

For each model, on its device, this times (median of `repeats`) prefill iterations over
prompt lengths and batch sizes, decode iterations over batch sizes and context lengths, and a
few mixed ones, through the same TorchExecutor and paged KV pool that serve. The simulator
reads the file in place of the roofline cost model (`seallm.profiled`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from seallm.executor.base import Batch
from seallm.kvcache import UnifiedKVCache
from seallm.profiled import Measurement, ModelProfile, Profile
from seallm.request import Request


@dataclass(frozen=True)
class Grid:
    prefill: tuple[tuple[int, int], ...] = (
        (1, 16),
        (1, 64),
        (1, 128),
        (1, 256),
        (1, 512),
        (2, 128),
        (4, 64),
        (4, 256),
    )  # (requests, prompt tokens)
    decode: tuple[tuple[int, int], ...] = tuple(
        (b, c) for b in (1, 2, 4, 8, 16, 32) for c in (32, 256, 1024)
    )  # (requests, context tokens each)
    mixed: tuple[tuple[int, int, int], ...] = ((1, 128, 8), (1, 256, 16))  # prefill + decode

    @classmethod
    def quick(cls) -> Grid:
        return cls(((1, 16), (1, 64), (2, 32)), ((1, 32), (4, 32), (4, 128)), ((1, 32, 2),))


def _requests(
    service: str, n: int, prompt: int, first_id: int, vocab: int, gen: torch.Generator
) -> list[Request]:
    from seallm.executor.torch import live_request
    from seallm.models.sampling import SamplingParams

    out = []
    for i in range(n):
        ids = torch.randint(3, vocab, (prompt,), generator=gen).tolist()
        params = SamplingParams(max_tokens=1 << 20, temperature=0.0, ignore_eos=True)
        out.append(live_request(first_id + i, service, ids, params, 0.0))
    return out


class ModelTimer:
    """One model on its own pool: builds batches of given shapes and times iterations."""

    def __init__(self, service: str, model, pool_bytes: float, page_bytes: int) -> None:
        from seallm.executor.torch import TorchExecutor

        self.service, self.model = service, model
        self.kv = UnifiedKVCache({service: model.spec}, 1, pool_bytes, page_bytes)
        self.executor = TorchExecutor({service: model}, self.kv, device=model.device)
        self.vocab = int(model.spec.vocab_size)
        self.gen = torch.Generator().manual_seed(0)
        self.next_id = 0

    def new_requests(self, n: int, prompt: int) -> list[Request]:
        reqs = _requests(self.service, n, prompt, self.next_id, self.vocab, self.gen)
        self.next_id += n
        return reqs

    def step(self, prefill: list[Request], decode: list[Request]) -> float:
        for r in prefill:
            self.kv.allocate(r, r.context_tokens + 1)
        out = self.executor.execute(Batch(self.service, list(prefill), list(decode)), 0.0)
        for r in [*prefill, *decode]:
            r.generated += 1
            self.kv.allocate(r, r.context_tokens + 1)
        return out.duration

    def free(self, reqs: list[Request]) -> None:
        for r in reqs:
            self.kv.release(r)

    def prefill(self, n: int, prompt: int) -> Measurement:
        reqs = self.new_requests(n, prompt)
        t = self.step(reqs, [])
        self.free(reqs)
        return Measurement(n * prompt, float(n * prompt * prompt), 0, 0, t)

    def decode(self, n: int, context: int, steps: int) -> list[Measurement]:
        reqs = self.new_requests(n, context)
        self.step(reqs, [])  # fill their KV (untimed)
        out = []
        for _ in range(steps):
            ctx = sum(r.context_tokens for r in reqs)
            out.append(Measurement(0, 0.0, n, ctx, self.step([], reqs)))
        self.free(reqs)
        return out

    def mixed(self, n_prefill: int, prompt: int, n_decode: int) -> Measurement:
        running = self.new_requests(n_decode, 64)
        self.step(running, [])
        fresh = self.new_requests(n_prefill, prompt)
        ctx = sum(r.context_tokens for r in running)
        t = self.step(fresh, running)
        self.free(running + fresh)
        return Measurement(n_prefill * prompt, float(n_prefill * prompt * prompt), n_decode, ctx, t)


def _median(ms: list[Measurement]) -> Measurement:
    m = ms[len(ms) // 2]
    return Measurement(
        m.prefill_tokens,
        m.prefill_sq_sum,
        m.n_decode,
        m.decode_ctx_sum,
        statistics.median(x.seconds for x in ms),
    )


def measure(timer: ModelTimer, grid: Grid, repeats: int) -> Iterator[Measurement]:
    timer.prefill(1, 8)  # warm-up: first calls allocate and compile kernels
    timer.decode(1, 8, 2)
    for n, p in grid.prefill:
        yield _median([timer.prefill(n, p) for _ in range(repeats)])
    for n, c in grid.decode:
        yield _median(timer.decode(n, c, repeats))
    for n, p, d in grid.mixed:
        yield _median([timer.mixed(n, p, d) for _ in range(repeats)])


def profile_models(
    models: dict[str, object],
    device: str,
    grid: Grid,
    repeats: int = 3,
    pool_bytes: float = 2 * 2**30,
    page_bytes: int = 2 * 2**20,
    on_point: Callable[[str], None] | None = None,
) -> Profile:
    """Time every model of `models` (service name -> LoadedModel) and fit its profile."""
    profiles = []
    for service, model in models.items():
        timer = ModelTimer(service, model, pool_bytes, page_bytes)
        points = []
        for m in measure(timer, grid, repeats):
            points.append(m)
            if on_point:
                on_point(service)
        profiles.append(ModelProfile(model.spec.name, 1, points).fit())
    meta = {"threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": repeats}
    return Profile(device, profiles, meta)


def grid_size(grid: Grid, repeats: int) -> int:
    return len(grid.prefill) + len(grid.decode) + len(grid.mixed)
