"""SpatialEngine: a group engine whose steps run a prefill and decode rounds concurrently.

The `muxserve` baseline's engine. Its scheduler (ADBS, `scheduling/adbs.py`) returns one
LLM's prefill batch together with the decode batches of every co-located LLM; its executor
(`executor/spatial.py`) runs them sharing the group's compute and bandwidth. The only change
to the serial engine: when a step holds a prefill, its decode rounds are not one iteration but
as many as run while the prefill does, so memory is prepared for that many (the executor
picks how many within `max_iters`). This does not depend on `fuse`: it is what the step
means, not a shortcut, so fused and one-by-one runs stay identical.
"""

from __future__ import annotations

from seallm.engine import GroupEngine
from seallm.executor.base import Batch


class SpatialEngine(GroupEngine):
    def plan(self, now: float, horizon: float = float("inf")) -> Batch | None:
        batch = super().plan(now, horizon)
        if batch is not None and batch.prefill and batch.decode:
            # The prefill's pages are allocated already: decode grows within what is left.
            steps = self.kv.max_decode_steps(batch.decode, self.limits.max_fused_iterations)
            batch.max_iters = max(1, steps)
        return batch
