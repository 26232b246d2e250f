"""SpatialEngine: a group engine whose steps run a prefill and decode rounds concurrently.

The `muxserve` baseline's engine. Its scheduler (ADBS, `scheduling/adbs.py`) returns one
LLM's prefill batch together with the decode batches of every co-located LLM; its executor
(`executor/spatial.py`) runs them sharing the group. Two changes to the serial engine:

- *The SM-part gate.* The executor says which LLMs' decode jobs get their SM parts this step
  (MuxServe, `muxserve/muxsched/resource.py` and `scheduler.py`); the requests of the others
  leave the batch before it runs, so every request of `batch.decode` advances by the step's
  iterations and the ones that wait keep their tokens and pages for the next step. A step
  without a prefill that left some waiting is one iteration (MuxServe relaunches its decode
  jobs one iteration at a time), so they try again at the next.
- *Rounds during a prefill.* When a step holds a prefill, its decode rounds are not one
  iteration but as many as run while the prefill does, so memory is prepared for that many
  (the executor picks how many within `max_iters`). This does not depend on `fuse`: it is
  what the step means, not a shortcut, so fused and one-by-one runs stay identical.
"""

from __future__ import annotations

from seallm.engine import GroupEngine
from seallm.executor.base import Batch


class SpatialEngine(GroupEngine):
    def plan(self, now: float, horizon: float = float("inf")) -> Batch | None:
        batch = super().plan(now, horizon)
        if batch is None:
            return None
        admit = getattr(self.executor, "admit", None)
        if admit is not None and batch.decode:
            started = admit(batch)
            if len(started) < len(batch.decode):
                batch.decode = started
                batch.max_iters = 1
        if batch.prefill and batch.decode:
            # The prefill's pages are allocated already: decode grows within what is left.
            steps = self.kv.max_decode_steps(batch.decode, self.limits.max_fused_iterations)
            batch.max_iters = max(1, steps)
        return batch
