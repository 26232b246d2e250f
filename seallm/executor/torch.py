"""The live executor: runs a GroupEngine's batches on real models over one KV pool.

Behind the same interface as SimExecutor. The group's KV cache (`kvcache.py`) decides which
pages a request holds; this executor owns the memory those page ids name: one byte tensor per
pool of the cache (one for a unified cache, one per partition for static ones), viewed by each
model with its own layout (`models/attention.py`). Each `execute` runs one iteration and
reports its measured wall time.

Requests carry their live state in `Request.generation` (prompt ids, sampling parameters,
output so far). A request in `batch.prefill` that already generated tokens was preempted and
dropped its KV: it is prefilled again over prompt + output (recompute). A swapped request's
pages are copied to host memory by `swap_out` and back by `swap_in` (the engine calls them);
their measured time is added to the next step's duration, so the scheduler charges it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import torch

from seallm.catalog import DEVICES
from seallm.colocation import round_pricer
from seallm.config import EngineSpec
from seallm.costmodel import CostModel
from seallm.engine import GroupEngine
from seallm.executor.base import Batch, StepOutcome
from seallm.kvcache import PagedKVCache, StaticKVCache, UnifiedKVCache
from seallm.models.attention import KVPool, PagedKV, SeqSlice
from seallm.models.loader import LoadedModel
from seallm.models.sampling import Generation, SamplingParams, sample
from seallm.profile import offline_profile
from seallm.request import Request
from seallm.scheduling import make_scheduler
from seallm.systems import get_system
from seallm.workload import get_length_distribution


class TorchExecutor:
    def __init__(
        self,
        models: dict[str, LoadedModel],
        kv: PagedKVCache,
        device: str | torch.device = "cpu",
        page_bytes: int | None = None,
    ) -> None:
        self.models = models
        self.kv = kv
        self.device = torch.device(device)
        for s, m in models.items():
            if (m.device.type, m.device.index or 0) != (self.device.type, self.device.index or 0):
                raise ValueError(f"{s} is on {m.device}, the executor on {self.device}")
        self.pools: dict[int, KVPool] = {}
        self.views: dict[str, PagedKV] = {}
        self.first_page: dict[str, int] = {}  # the cache's id of the pool's page 0
        for s, m in models.items():
            pool = kv.pool_of(s)
            size = page_bytes if page_bytes is not None and kv.shared else kv.page_bytes[s]
            if id(pool) not in self.pools:
                self.pools[id(pool)] = KVPool(pool.num_pages, int(size), self.device)
            c = m.module.cfg
            view = self.pools[id(pool)].view(c.num_layers, c.num_kv_heads, c.head_dim, m.dtype)
            if view.tokens_per_page != kv.tokens_per_page[s]:
                raise ValueError(
                    f"{s}: a page holds {view.tokens_per_page} tokens of the loaded model, "
                    f"{kv.tokens_per_page[s]} for the cache (spec {m.spec.name} out of date?)"
                )
            self.views[s] = view
            self.first_page[s] = pool.first
        self.host: dict[int, torch.Tensor] = {}  # request id -> its swapped pages
        self.streams: dict[str, torch.cuda.Stream] = {}  # GPU rounds: one per model
        self.pending_seconds = 0.0  # swap time not yet charged to a step

    # -- one iteration --------------------------------------------------------------------
    def execute(self, batch: Batch, now: float) -> StepOutcome:
        """One iteration of every model in the batch (a round holds several). On a CPU the
        jobs run one after another (`colocation.py`, serial); on a GPU each model's forward
        pass is launched on its own CUDA stream (`colocation.py`, streams: one process, so
        host work and launches add up while kernels overlap), then all are sampled."""
        t0 = time.perf_counter()
        jobs: dict[str, tuple[list[Request], list[Request]]] = {}
        for r in batch.prefill:
            jobs.setdefault(r.service, ([], []))[0].append(r)
        for r in batch.decode:
            jobs.setdefault(r.service, ([], []))[1].append(r)
        concurrent = len(jobs) > 1 and self.device.type == "cuda"
        launched = [
            (service, prefill + decode, self._launch(service, prefill, decode, concurrent))
            for service, (prefill, decode) in jobs.items()
        ]
        if concurrent:  # sampling waits for every model's stream
            main = torch.cuda.current_stream(self.device)
            for service, _, logits in launched:
                main.wait_stream(self.streams[service])
                logits.record_stream(main)
        finished: list[Request] = []
        for service, reqs, logits in launched:
            finished += self._sample(service, reqs, logits)
        duration = time.perf_counter() - t0 + self.pending_seconds
        self.pending_seconds = 0.0
        return StepOutcome(1, duration, finished)

    def _stream(self, service: str) -> torch.cuda.Stream:
        stream = self.streams.get(service)
        if stream is None:
            stream = self.streams[service] = torch.cuda.Stream(self.device)
        return stream

    def _launch(
        self, service: str, prefill: list[Request], decode: list[Request], concurrent: bool
    ) -> torch.Tensor:
        """Start one model's forward pass; with `concurrent` (a GPU round), on the model's
        own stream, after the work already queued on the main stream (earlier writes to the
        pool), so that the models' kernels overlap."""
        if not concurrent:
            return self._forward(service, prefill, decode)
        stream = self._stream(service)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            return self._forward(service, prefill, decode)

    def _forward(self, service: str, prefill: list[Request], decode: list[Request]) -> torch.Tensor:
        """One forward pass of one model: the logits of each request's last token."""
        lm = self.models[service]
        tokens: list[int] = []
        seqs: list[SeqSlice] = []
        for r in prefill:
            g = self._generation(r)
            ids = g.prompt_ids + g.output_ids  # a recompute after preemption includes output
            tokens.extend(ids)
            seqs.append(SeqSlice(0, len(ids), self._pages(r)))
        for r in decode:
            g = self._generation(r)
            tokens.append(g.output_ids[-1])
            seqs.append(SeqSlice(len(g.prompt_ids) + len(g.output_ids) - 1, 1, self._pages(r)))
        ids = torch.tensor(tokens, dtype=torch.long, device=self.device)
        return lm.module(ids, seqs, self.views[service])

    def _sample(self, service: str, reqs: list[Request], logits: torch.Tensor) -> list[Request]:
        """Sample each request's next token; returns the requests that finished."""
        lm = self.models[service]
        gens = [r.generation for r in reqs]
        finished = []
        for r, g, t in zip(reqs, gens, sample(logits, gens), strict=True):
            g.append(t, lm.tokenizer, lm.eos_token_ids, lm.max_context)
            if g.finished:
                finished.append(r)
        return finished

    def _generation(self, r: Request) -> Generation:
        g = r.generation
        if g is None:
            raise ValueError(f"request {r.id} has no generation (live requests need one)")
        if r.generated != len(g.output_ids) or r.prompt_tokens != len(g.prompt_ids):
            raise ValueError(
                f"request {r.id}: engine counts {r.prompt_tokens}+{r.generated} tokens, "
                f"generation holds {len(g.prompt_ids)}+{len(g.output_ids)}"
            )
        return g

    def _pages(self, r: Request) -> list[int]:
        first = self.first_page[r.service]
        table = self.kv.page_tables[r.id]
        return [p - first for p in table] if first else table

    # -- preemption by swapping, and aborts -----------------------------------------------------
    def _valid_pages(self, r: Request, table: list[int]) -> list[int]:
        """Pages holding K/V: the context but its last token, whose K/V the next step writes."""
        first = self.first_page[r.service]
        n = self.kv.pages_for(r.service, max(1, r.context_tokens - 1))
        return [p - first for p in table[:n]]

    def swap_out(self, r: Request, page_table: list[int]) -> None:
        t0 = time.perf_counter()
        data = self.views[r.service].pages(self._valid_pages(r, page_table))
        if self.device.type == "cuda":
            data = data.to("cpu", non_blocking=False)
        self.host[r.id] = data
        self.pending_seconds += time.perf_counter() - t0

    def swap_in(self, r: Request, page_table: list[int]) -> None:
        t0 = time.perf_counter()
        data = self.host.pop(r.id)
        self.views[r.service].put_pages(self._valid_pages(r, page_table), data)
        self.pending_seconds += time.perf_counter() - t0

    def release(self, r: Request) -> None:
        """Forget per-request state (an aborted request's host copy)."""
        self.host.pop(r.id, None)


def live_request(
    rid: int, service: str, prompt_ids: list[int], params: SamplingParams, arrival: float
) -> Request:
    """A Request carrying its Generation, with the engine's counts set to match."""
    params.validate()
    return Request(
        rid,
        service,
        len(prompt_ids),
        params.max_tokens,
        arrival,
        generation=Generation(list(prompt_ids), params),
    )


def run_until_idle(
    engine: GroupEngine, requests: Iterable[Request] = (), clock: float = 0.0
) -> float:
    """Add `requests` and step `engine` until it has no work; time advances by each step's
    measured duration. Returns the clock at the end. (Tests and benchmarks; the server uses
    runtime/live.py.)"""
    for r in requests:
        engine.add(r, clock)
    while engine.has_work:
        batch = engine.plan(clock)
        if batch is None:
            raise RuntimeError("the engine has work but planned no batch (KV pool too small?)")
        out = engine.execute(batch, clock)
        clock += out.duration
        engine.commit(batch, out, clock)
    return clock


def make_torch_engine(
    models: dict[str, LoadedModel],
    system: str = "seallm",
    kv_bytes: float = 64 * 2**20,
    engine: EngineSpec | None = None,
    lengths: str = "azure-conv",
    group_id: int = 0,
) -> GroupEngine:
    """A GroupEngine serving `models` (service -> model, all on one device) with the named
    system's scheduler, KV layout and preemption, over a pool of `kv_bytes`. Scheduler
    profiles come from the CPU cost model and the `lengths` distribution."""
    spec = get_system(system)
    limits = engine or EngineSpec()
    specs = {s: m.spec for s, m in models.items()}
    if spec.kv == "unified":
        kv: PagedKVCache = UnifiedKVCache(specs, 1, kv_bytes, limits.page_bytes)
    else:
        kv = StaticKVCache(specs, 1, kv_bytes, limits.block_tokens)
    cost = CostModel(DEVICES["cpu"])
    dist = get_length_distribution(lengths)
    profiles = {s: offline_profile(s, cost.for_model(m, 1), dist) for s, m in specs.items()}
    device = next(iter(models.values())).device
    rounds = None
    if spec.engine == "rounds":
        rounds = round_pricer(cost, specs, 1)
    elif spec.engine != "temporal":
        raise ValueError(f"{system}: engine {spec.engine!r} runs in the simulator only")
    return GroupEngine(
        group_id,
        specs,
        1,
        make_scheduler(spec.scheduler, profiles, limits, rounds),
        kv,
        TorchExecutor(models, kv, device),
        limits,
        profiles,
        preemption=spec.preemption,
        fuse=False,
        swap_time=lambda r: cost.swap_time(specs[r.service], 1, r.context_tokens),
    )
