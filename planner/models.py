"""Data that crosses Temporal for durable planning: plain dataclasses for the default JSON converter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["HEARTBEAT_SECONDS", "PLAN_ACTIVITY", "PlanOutput", "PlanRequest", "SessionInput", "SubmitRequest"]

PLAN_ACTIVITY = "duraplan.plan"  # the activity name the session workflow calls
HEARTBEAT_SECONDS = 30.0


@dataclass
class PlanRequest:
    """Input of the ``duraplan.plan`` activity: a goal, or a revision of ``previous_plan``."""

    goal: str
    tenant: str
    session: str = ""
    model: str | None = None
    previous_plan: dict[str, Any] | None = None
    # ``ToolRegistry.catalog()`` entries the plan may use; the worker's registry when None.
    catalog: list[dict[str, Any]] | None = None
    max_attempts: int = 3
    budget_usd: float | None = None


@dataclass
class PlanOutput:
    plan: dict[str, Any]
    model: str
    attempts: list[dict[str, Any]]
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


@dataclass
class SessionInput:
    """One planning session (an agent's conversation about one plan) and how it plans and runs."""

    tenant: str
    session: str
    model: str | None = None
    catalog: list[dict[str, Any]] | None = None
    # Tools the submitter's registry marks short and bounded (local activities in the run).
    local_tools: list[str] = field(default_factory=list)
    max_attempts: int = 3
    budget_usd: float | None = None
    search_attributes: bool = True
    # Where runs go; the session's own task queue when None.
    run_task_queue: str | None = None
    # Temporal owns planning retries (429, 5xx): its policy.
    retry_initial_s: float = 1.0
    retry_max_interval_s: float = 60.0
    retry_max_attempts: int = 6
    planning_timeout_s: float = 600.0
    # A session with no message or submit for this long ends (its revisions stay readable in the
    # closed workflow); one without any revision (every message failed) ends sooner.
    idle_timeout_s: float = 7 * 24 * 3600.0
    empty_timeout_s: float = 3600.0
    # Continue-as-new at this history length too (None: when the server suggests it). Tests use it.
    history_limit: int | None = None
    # Carried across continue-as-new.
    revisions: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SubmitRequest:
    inputs: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
