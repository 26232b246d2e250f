"""Intra-op threads for engines that run in their own thread (the live runtime, the profiler).

PyTorch's CPU kernels run on an OpenMP team per calling thread. Measured on the 2-core VM
(docs/validation.md): once the main thread has run parallel kernels (loading the models), an
engine thread's SmolLM2 decode step takes 22-24 ms instead of 14-16 ms, even with the main
thread idle and set back to one thread afterwards. So a process that runs an engine thread
keeps its main thread at one intra-op thread from the start, and gives the engine thread the
machine's threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")

_engine_threads: int | None = None


def reserve_for_engine() -> int:
    """Call before any torch work in a process whose engines run in other threads: the main
    thread keeps one intra-op thread; returns the count engine threads should use."""
    global _engine_threads
    if _engine_threads is None:
        _engine_threads = torch.get_num_threads()
        torch.set_num_threads(1)
    return _engine_threads


def enter_engine_thread() -> None:
    """First call of an engine thread: take the threads the main thread left it."""
    if _engine_threads is not None:
        torch.set_num_threads(_engine_threads)


def run_in_engine_thread(fn: Callable[[], T]) -> T:
    """fn() in a fresh engine thread (as the live runtime runs steps); its result or error."""
    out: dict[str, object] = {}

    def body() -> None:
        enter_engine_thread()
        try:
            out["value"] = fn()
        except BaseException as err:  # re-raised in the caller
            out["error"] = err

    t = threading.Thread(target=body, name="seallm-engine-profile")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]  # type: ignore[return-value]
