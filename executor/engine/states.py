"""The one vocabulary of run and step states (``executor.engine.run_status`` re-exports it with
the status models). Apart from them so that a command line can name the states without
building pydantic models.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "FINAL_RUN_STATES",
    "FINAL_STEP_STATES",
    "OPEN_RUN_STATES",
    "RUN_STATES",
    "STEP_STATES",
    "RunState",
    "StepState",
]

RunState = Literal[
    "running",  # steps execute
    "waiting",  # running, but nothing executes: every open step sleeps or waits for an event
    "paused",  # no new step starts
    "replanning",  # a step failed and the planner is revising the plan
    "compensating",  # failed or cancelled; undo actions run
    "completed",
    "failed",
    "cancelled",
    "terminated",
]
RUN_STATES: tuple[str, ...] = get_args(RunState)
FINAL_RUN_STATES: frozenset[str] = frozenset({"completed", "failed", "cancelled", "terminated"})
OPEN_RUN_STATES: tuple[str, ...] = tuple(s for s in RUN_STATES if s not in FINAL_RUN_STATES)

StepState = Literal[
    "pending",
    "running",
    "retrying",
    "throttled",  # refused by the worker's per-tenant gate; dispatched again (not an attempt)
    "sleeping",
    "waiting",
    "completed",
    "failed",
    "skipped",  # its `when` was false, its switch branch was not taken, or its run ended first
    "compensated",
    "cancelled",  # it was running when its run ended
]
STEP_STATES: tuple[str, ...] = get_args(StepState)
FINAL_STEP_STATES: frozenset[str] = frozenset({"completed", "failed", "skipped", "compensated", "cancelled"})
