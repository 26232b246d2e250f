"""A request's state and timestamps, as the engine and the metrics see it."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seallm.models.sampling import Generation


class Status(enum.Enum):
    QUEUED = "queued"  # accepted, not yet prefilled (or preempted and waiting to recompute)
    RUNNING = "running"  # has its KV on the device
    SWAPPED = "swapped"  # KV moved to host memory by a preemption
    FINISHED = "finished"
    REJECTED = "rejected"  # refused at the door (no host for its service, too long, overload)
    ABORTED = "aborted"  # ended with an error after acceptance (client gone, worker failure)


@dataclass(slots=True, eq=False)
class Request:
    """One generation request. `output_tokens` is the true length: the simulator's executor
    uses it to decide when the request ends (a live executor uses EOS / max tokens); schedulers
    must not read it, except the oracle ablation."""

    id: int
    service: str
    prompt_tokens: int
    output_tokens: int
    arrival: float
    generated: int = 0
    first_token_time: float | None = None
    finish_time: float | None = None
    status: Status = Status.QUEUED
    error: str | None = None
    group: int | None = None  # the group engine it was dispatched to
    standalone: float = 0.0  # standalone latency on its group (metrics, SLO)
    # Scheduler state (doubling budget and friends); the engine charges `attained`.
    estimate: float = 0.0  # L̂_r: standalone execution-time estimate known to the scheduler
    budget: float = 0.0
    level: int = 0
    attained: float = 0.0
    last_run: float = 0.0  # when it last took part in an iteration (ageing)
    max_stall: float = 0.0  # longest wait between two iterations it took part in (starvation)
    preemptions: int = 0
    generation: Generation | None = None  # live mode: tokens, text and sampling parameters

    @property
    def context_tokens(self) -> int:
        """Tokens whose KV the request holds once it has run: prompt plus generated."""
        return self.prompt_tokens + self.generated

    @property
    def done(self) -> bool:
        return self.status in (Status.FINISHED, Status.REJECTED, Status.ABORTED)
