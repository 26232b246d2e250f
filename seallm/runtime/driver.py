"""The engine thread's step loop, written once for the real-time runtimes (the in-process
live runtime and the Ray actor): plan under the runtime's lock, execute outside it (so that
requests keep arriving and aborting while the models run), commit under the lock again.

The simulator drives the same three GroupEngine calls from its event loop (`runtime/sim.py`):
plan and execute when an engine goes idle with work, commit at the step's end event. Each
step is a round (`scheduling/rounds.py`): every model in the batch runs its part.

A failure in any of the three calls must not hang the clients: the requests it touches are
failed with an error (`fail`), and the loop goes on with the rest.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seallm.engine import GroupEngine
from seallm.executor.base import Batch, StepOutcome
from seallm.request import Request

log = logging.getLogger("seallm.runtime")


@dataclass
class StepHooks:
    """What a runtime does around each step (all but `after` run under the lock)."""

    wait_for_work: Callable[[], bool]  # apply aborts, wait for work; False: stop the loop
    fail: Callable[[list[Request], Exception], None]  # end these requests with an error
    committed: Callable[[Batch], None]  # deliver the step's tokens
    before: Callable[[Batch], Any] | None = None  # outside the lock, before execute
    after: Callable[[Batch, StepOutcome, Any, float, float], None] | None = None
    # after(batch, outcome, before's value, step start time, planning clock) outside the lock


def run_steps(
    engine: GroupEngine,
    lock: threading.Condition,
    now: Callable[[], float],
    hooks: StepHooks,
) -> None:
    """Step `engine` until `hooks.wait_for_work` says stop."""
    while True:
        with lock:
            if not hooks.wait_for_work():
                return
            start = now()
            try:
                batch = engine.plan(start)
            except Exception as err:  # a bug must not hang every client: fail them all
                log.exception("group %d: plan failed", engine.id)
                hooks.fail(engine.waiting + engine.running + engine.swapped, err)
                continue
            if batch is None:  # nothing fits now; wait for an abort or a new arrival
                lock.wait(0.01)
                continue
        extra = hooks.before(batch) if hooks.before is not None else None
        try:
            outcome = engine.execute(batch, start)
        except Exception as err:
            log.exception("group %d: executor failed", engine.id)
            with lock:
                engine.busy = False
                hooks.fail(batch.requests, err)
            continue
        with lock:
            try:
                engine.commit(batch, outcome, now())
            except Exception as err:
                log.exception("group %d: commit failed", engine.id)
                engine.busy = False
                hooks.fail(batch.requests, err)
                continue
            hooks.committed(batch)
        if hooks.after is not None:
            hooks.after(batch, outcome, extra, start, now())
