"""The live runtime: the Controller and its GroupEngines in real time, with real executors.

One engine thread per group runs plan -> execute -> commit back to back while the group has
work, and sleeps on a condition variable when it has none. The controller and the engines are
shared with the asyncio side under one lock, held only for the short bookkeeping steps (plan,
commit, submit), never while the executor computes: `GroupEngine.add` may run between plan and
commit, nothing else may. Aborts (a client gone, a shutdown) are queued and applied by the
engine thread between two steps, since the request may be in the executing batch.

Tokens reach asyncio through `loop.call_soon_threadsafe`, one event per request per step
(fuse=False, so every token streams as soon as it is sampled). Every accepted request ends
with exactly one final event: its finish reason, or an error (executor failure, abort,
shutdown); an executor exception fails that batch's requests and the engine goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from seallm.controller import Controller
from seallm.engine import GroupEngine
from seallm.executor.base import Batch
from seallm.request import Request, Status
from seallm.runtime.driver import StepHooks, run_steps

if TYPE_CHECKING:
    from seallm.models.sampling import Generation

log = logging.getLogger("seallm.runtime")

SHUTDOWN_REASON = "the server is shutting down"
RATE_WINDOW_S = 30.0  # completions counted for the drain-rate estimate behind Retry-After


class Overloaded(Exception):
    """The service holds as many requests as it may; retry after `retry_after` seconds."""

    def __init__(self, service: str, held: int, retry_after: int) -> None:
        super().__init__(
            f"{service} already holds {held} requests (a full batch and a full queue); "
            f"retry after {retry_after} s"
        )
        self.retry_after = retry_after


class Rejected(Exception):
    """The controller refused the request (the message says why)."""


class ShuttingDown(Exception):
    """The runtime is draining and accepts no new request."""


@dataclass
class TokenEvent:
    text: str  # new text since the previous event
    token_ids: list[int]  # new tokens since the previous event
    finish_reason: str | None = None  # set on the final event of a finished request
    error: str | None = None  # set on the final event of a failed request

    @property
    def final(self) -> bool:
        return self.finish_reason is not None or self.error is not None


@dataclass(eq=False)
class Stream:
    """The asyncio side of one accepted request: its events, in order."""

    req: Request
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[TokenEvent] = field(default_factory=asyncio.Queue)
    sent_tokens: int = 0
    sent_chars: int = 0
    ended: bool = False  # the final event was produced (engine side)

    @property
    def generation(self) -> Generation:
        assert self.req.generation is not None
        return self.req.generation

    async def next(self) -> TokenEvent:
        return await self.events.get()

    def _deliver(self, event: TokenEvent) -> None:
        # A closed event loop raises RuntimeError: nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class LiveRuntime:
    def __init__(
        self,
        controller: Controller,
        max_queue: int | dict[str, int] = 64,
        on_end: Callable[[Request], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        step_log: TextIO | None = None,
    ) -> None:
        self.controller = controller
        # One JSON line per engine step (its batch's shape, the executor's seconds and the
        # step's wall seconds): what simulator validation compares against the profile.
        self.step_log = step_log
        services = list(controller.hosts)
        self.max_queue = (
            dict.fromkeys(services, max_queue) if isinstance(max_queue, int) else dict(max_queue)
        )
        self.on_end = on_end or (lambda r: None)
        self.clock = clock
        self.t0 = clock()
        self.lock = threading.Condition()
        self.streams: dict[int, Stream] = {}
        self._aborts: list[tuple[Request, str]] = []
        self._ids = itertools.count()
        self._done_at: dict[str, deque[float]] = {s: deque(maxlen=1024) for s in services}
        self._threads: list[threading.Thread] = []
        self.draining = False
        self._stopping = False

    def now(self) -> float:
        return self.clock() - self.t0

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for engine in self.controller.engines.values():
            t = threading.Thread(
                target=self._run, args=(engine,), name=f"seallm-engine-{engine.id}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        """Stop the engine threads; any request still in flight ends with an error."""
        with self.lock:
            self.draining = self._stopping = True
            self.lock.notify_all()
        for t in self._threads:
            t.join()
        self._threads.clear()
        with self.lock:
            for stream in list(self.streams.values()):
                engine = self.controller.engines[stream.req.group or 0]
                engine.abort(stream.req, SHUTDOWN_REASON)
                self._end(stream)

    async def drain(self, grace_s: float) -> int:
        """Accept nothing new, give in-flight requests `grace_s` seconds to finish, then fail
        the rest with an error. Returns how many were failed."""
        with self.lock:
            self.draining = True
        deadline = time.monotonic() + grace_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        with self.lock:
            left = list(self.streams.values())
        for stream in left:
            self.abort(stream, SHUTDOWN_REASON)
        while self.in_flight and self._threads and time.monotonic() < deadline + 5.0:
            await asyncio.sleep(0.02)
        # Some may have finished in the step that was running when the aborts were queued.
        return sum(1 for stream in left if stream.req.status is Status.ABORTED)

    @property
    def in_flight(self) -> int:
        return len(self.streams)

    # -- the asyncio side ---------------------------------------------------------------------
    def submit(self, service: str, generation: Generation) -> Stream:
        """Accept a request (call from the event loop). Raises ShuttingDown, Overloaded or
        Rejected; on return the request is queued on its group and its events will come."""
        loop = asyncio.get_running_loop()
        params = generation.params
        with self.lock:
            if self.draining:
                raise ShuttingDown(SHUTDOWN_REASON)
            limit = self.limit(service)
            held = self.held(service)
            if held >= limit:
                raise Overloaded(service, held, self.retry_after(service, held - limit + 1))
            req = Request(
                next(self._ids), service, len(generation.prompt_ids), params.max_tokens, self.now()
            )
            req.generation = generation
            if self.controller.submit(req, req.arrival) is None:
                raise Rejected(req.error or "rejected")
            stream = Stream(req, loop)
            self.streams[req.id] = stream
            self.lock.notify_all()
        return stream

    def abort(self, stream: Stream, reason: str) -> None:
        """Ask the engine thread to end the request (no-op once it has ended)."""
        with self.lock:
            if not stream.ended:
                self._aborts.append((stream.req, reason))
                self.lock.notify_all()

    def limit(self, service: str) -> int:
        """Most accepted, unfinished requests a service may hold: a full batch of the
        group's engine plus `max_queue` waiting. The bound on the server's memory: requests
        beyond it are refused (429), whatever the offered load."""
        engines = self.controller.hosts.get(service, ())
        return sum(e.limits.max_batch_size for e in engines) + self.max_queue.get(service, 0)

    def held(self, service: str) -> int:
        """Accepted, unfinished requests of `service` (queued, running or swapped). Locked."""
        return sum(
            1
            for e in self.controller.hosts.get(service, ())
            for q in (e.waiting, e.running, e.swapped)
            for r in q
            if r.service == service
        )

    def queued(self, service: str) -> int:
        """Accepted requests of `service` not on a device (waiting or swapped). Call locked."""
        return sum(
            1
            for e in self.controller.hosts.get(service, ())
            for q in (e.waiting, e.swapped)
            for r in q
            if r.service == service
        )

    def retry_after(self, service: str, excess: int) -> int:
        """Seconds until `excess` requests of the service have ended, at its recent completion
        rate (1 s when nothing ended recently), within [1, 60]."""
        now = self.now()
        recent = sum(1 for t in self._done_at[service] if now - t <= RATE_WINDOW_S)
        if not recent:
            return 1
        rate = recent / min(RATE_WINDOW_S, max(now, 1.0))
        return max(1, min(60, math.ceil(excess / rate)))

    def snapshot(self) -> dict[str, Any]:
        """Engine state for monitoring: per service queue, running and KV bytes; per group
        KV pool and preemption counters."""
        with self.lock:
            services = {}
            for s, engines in self.controller.hosts.items():
                kv_used = 0.0
                for e in engines:  # pages are held by running requests and fresh prefills
                    pages = sum(
                        len(e.kv.page_tables.get(r.id, ()))
                        for q in (e.running, e.waiting)
                        for r in q
                        if r.service == s
                    )
                    kv_used += pages * e.kv.page_bytes[s]
                services[s] = {
                    "queued": self.queued(s),
                    "running": sum(e.running_count[s] for e in engines),
                    "kv_used_bytes": kv_used,
                }
            groups = []
            for e in self.controller.engines.values():
                kv = e.kv.stats()
                groups.append(
                    {
                        "group": e.id,
                        "services": list(e.models),
                        "kv_total_bytes": kv.total_bytes,
                        "kv_used_bytes": kv.used_bytes,
                        "kv_free_pages": kv.free_pages,
                        "preemptions": e.preemptions,
                        "swaps": e.swaps,
                        "iterations": e.iterations,
                    }
                )
            return {"services": services, "groups": groups, "in_flight": len(self.streams)}

    # -- the engine threads ------------------------------------------------------------------
    def _run(self, engine: GroupEngine) -> None:
        from seallm.executor.threads import enter_engine_thread

        enter_engine_thread()

        def wait_for_work() -> bool:
            self._apply_aborts()
            while not engine.has_work and not self._stopping:
                self.lock.wait()
                self._apply_aborts()
            return not self._stopping

        def before(batch: Batch) -> tuple[Any, dict | None]:
            step_log = self.step_log  # read once a step (the server's warm-up mutes it)
            return step_log, batch_shape(batch) if step_log is not None else None

        def after(batch: Batch, outcome: Any, pre: Any, start: float, end: float) -> None:
            step_log, shape = pre
            if step_log is not None:
                self._log_step(step_log, batch, outcome, shape, start, end - start)

        run_steps(
            engine,
            self.lock,
            self.now,
            StepHooks(
                wait_for_work,
                lambda reqs, err: self._fail(engine, reqs, err),
                self._emit,
                before,
                after,
            ),
        )

    def _log_step(
        self,
        step_log: Any,
        batch: Batch,
        outcome: Any,
        shape: dict | None,
        now: float,
        wall: float,
    ) -> None:
        line = {"t": round(now, 6), "service": batch.service, **(shape or {})}
        line |= {"iterations": outcome.iterations, "executor_s": outcome.duration, "step_s": wall}
        step_log.write(json.dumps(line) + "\n")

    def _emit(self, batch: Batch) -> None:
        for r in batch.requests:
            stream = self.streams.get(r.id)
            if stream is None:
                continue
            gen = stream.generation
            finished = r.status is Status.FINISHED
            # While a stop string may still match, its first characters are held back.
            text = gen.text if finished else gen.stable_text()
            delta = text[stream.sent_chars :]
            tokens = gen.output_ids[stream.sent_tokens :]
            stream.sent_chars += len(delta)
            stream.sent_tokens = len(gen.output_ids)
            if finished:
                stream._deliver(TokenEvent(delta, tokens, gen.finish_reason or "stop"))
                self._end(stream)
            elif delta or tokens:
                stream._deliver(TokenEvent(delta, tokens))

    def _apply_aborts(self) -> None:
        aborts, self._aborts = self._aborts, []
        for req, reason in aborts:
            stream = self.streams.get(req.id)
            engine = self.controller.engines.get(req.group if req.group is not None else -1)
            if stream is None or engine is None:
                continue
            engine.abort(req, reason)
            self._end(stream)

    def _fail(self, engine: GroupEngine, reqs: list[Request], err: Exception) -> None:
        for r in list(reqs):
            stream = self.streams.get(r.id)
            engine.abort(r, f"internal error while generating: {type(err).__name__}: {err}")
            if stream is not None:
                self._end(stream)

    def _end(self, stream: Stream) -> None:
        """The request left the engine: deliver its final event (an error unless finished)."""
        r = stream.req
        self.streams.pop(r.id, None)
        stream.ended = True
        if r.status is not Status.FINISHED:
            if r.status is not Status.ABORTED:
                r.status = Status.ABORTED
                r.error = r.error or SHUTDOWN_REASON
            stream._deliver(TokenEvent("", [], error=r.error or "aborted"))
        else:
            self._done_at[r.service].append(self.now())
        try:
            self.on_end(r)
        except Exception:
            log.exception("on_end hook failed")


def batch_shape(batch: Batch) -> dict[str, float]:
    """A batch's cost-model features (as the SimExecutor computes them), before it runs."""
    lens = [r.context_tokens for r in batch.prefill]
    return {
        "prefill_tokens": sum(lens),
        "prefill_sq_sum": float(sum(x * x for x in lens)),
        "n_decode": len(batch.decode),
        "decode_ctx_sum": sum(r.context_tokens for r in batch.decode),
    }
