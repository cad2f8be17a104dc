"""duraplan's planner: a goal in, a validated plan out; durable planning sessions on Temporal.

Imports are lazy (this package is imported inside Temporal's workflow sandbox, and litellm is slow
to import): ``from planner import plan_goal`` loads only what it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from planner.client import ChatSession, Revision, submit_goal
    from planner.core import Attempt, PlanResult, plan_goal
    from planner.errors import (
        BudgetExhausted,
        ModelNotConfigured,
        PlannerError,
        ProviderRejected,
        ProviderUnreachable,
        RateLimited,
        RepairExhausted,
    )
    from planner.worker import worker_parts

__all__ = [
    "Attempt",
    "BudgetExhausted",
    "ChatSession",
    "ModelNotConfigured",
    "PlanResult",
    "PlannerError",
    "ProviderRejected",
    "ProviderUnreachable",
    "RateLimited",
    "RepairExhausted",
    "Revision",
    "plan_goal",
    "submit_goal",
    "worker_parts",
]

_HOME = {
    "ChatSession": "planner.client",
    "Revision": "planner.client",
    "submit_goal": "planner.client",
    "Attempt": "planner.core",
    "PlanResult": "planner.core",
    "plan_goal": "planner.core",
    "BudgetExhausted": "planner.errors",
    "ModelNotConfigured": "planner.errors",
    "PlannerError": "planner.errors",
    "ProviderRejected": "planner.errors",
    "ProviderUnreachable": "planner.errors",
    "RateLimited": "planner.errors",
    "RepairExhausted": "planner.errors",
    "worker_parts": "planner.worker",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'planner' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME[name]), name)
