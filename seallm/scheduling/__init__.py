"""Scheduling policies behind one interface (`base.Scheduler`), chosen by name."""

from seallm.scheduling import adbs, doubling_budget, fcfs, oracle, slack  # noqa: F401  (registers)
from seallm.scheduling.base import SCHEDULERS, Decision, EngineState, Scheduler, make_scheduler

__all__ = ["SCHEDULERS", "Decision", "EngineState", "Scheduler", "make_scheduler"]
