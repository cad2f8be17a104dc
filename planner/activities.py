"""The ``duraplan.plan`` activity: ``plan_goal`` on a worker, its errors as Temporal failures.

One activity execution is one ``plan_goal`` (its repair loop included). Temporal owns retries:
``PlannerError.retryable`` becomes the ``ApplicationError``'s ``non_retryable`` flag (429 and 5xx
retried, with the provider's Retry-After as the next delay; 4xx, missing configuration, exhausted
repairs or budget fail at once), and the error's ``details()`` travel as the first detail.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from executor.engine.contract import RUN_REPLAN
from executor.engine.models import ReplanRequest
from executor.errors import DuraplanError, to_failure
from executor.service.start import check_revision, load_context
from executor.service.tenants import TenantRegistry
from executor.worker.activities import heartbeating
from planner.core import plan_goal
from planner.errors import PlannerError, RateLimited
from planner.models import HEARTBEAT_SECONDS, PLAN_ACTIVITY, PlanOutput, PlanRequest
from planner.provider import Completion
from tools.registry import Tool, ToolContext, ToolRegistry

__all__ = ["HEARTBEAT_SECONDS", "PLAN_ACTIVITY", "PlannerActivities", "registry_from_catalog", "to_application_error"]

T = TypeVar("T")


def to_application_error(exc: PlannerError) -> ApplicationError:
    delay = None
    if isinstance(exc, RateLimited) and exc.retry_after:
        delay = timedelta(seconds=exc.retry_after)
    return ApplicationError(
        str(exc), exc.details(), type=type(exc).__name__, non_retryable=not exc.retryable, next_retry_delay=delay
    )


async def _not_callable(args: dict[str, Any], ctx: ToolContext) -> Any:  # pragma: no cover - never dispatched
    raise RuntimeError("catalog entries only validate plans")


def registry_from_catalog(catalog: Sequence[Mapping[str, Any]]) -> ToolRegistry:
    """A registry that validates plans against a catalog (``ToolRegistry.catalog()`` entries)."""
    return ToolRegistry(
        Tool(
            name=str(entry["name"]),
            description=str(entry.get("description", "")),
            args_schema=dict(entry.get("args_schema") or {"type": "object"}),
            handler=_not_callable,
            side_effects=bool(entry.get("side_effects", False)),
        )
        for entry in catalog
    )


async def _litellm_loaded() -> None:
    """litellm takes seconds to import: do it off the event loop (workflows and heartbeats go on)."""
    if "litellm" not in sys.modules:
        await asyncio.to_thread(importlib.import_module, "litellm")


class PlannerActivities:
    def __init__(
        self,
        registry: ToolRegistry,
        *,
        default_model: str | None = None,
        completion: Completion | None = None,
        tenants: TenantRegistry | None = None,
    ) -> None:
        self.registry = registry
        self.default_model = default_model
        self._completion = completion
        self.tenants = tenants  # a revision meets the tenant's grants (and the run's pinned quotas)

    def all(self) -> list[Callable[..., Any]]:
        return [self.plan, self.replan]

    @activity.defn(name=PLAN_ACTIVITY)
    async def plan(self, request: PlanRequest) -> PlanOutput:
        tools = self.registry if request.catalog is None else registry_from_catalog(request.catalog)
        await _litellm_loaded()
        try:
            result = await heartbeating(
                plan_goal(
                    request.goal,
                    tools=tools,
                    model=request.model or self.default_model,
                    max_attempts=request.max_attempts,
                    completion=self._completion,
                    budget_usd=request.budget_usd,
                    previous=request.previous_plan,
                )
            )
        except PlannerError as exc:
            raise to_application_error(exc) from None
        return PlanOutput(
            plan=result.plan_json,
            model=result.model,
            attempts=[a.to_dict() for a in result.attempts],
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cost_usd=result.cost_usd,
        )

    @activity.defn(name=RUN_REPLAN)
    async def replan(self, request: ReplanRequest) -> dict[str, Any]:
        """A revised plan for the rest of a failed run, validated against this worker's tools.

        Registered under the engine's ``RUN_REPLAN`` name: the workflow asks for a revision by name
        and never imports the planner."""
        await _litellm_loaded()
        try:
            context = await load_context(self.tenants, request.tenant)
            tools = await asyncio.to_thread(self._tools_of, request.tenant)
            result = await heartbeating(
                plan_goal(
                    _replan_request_text(request),
                    tools=context.tools(tools),  # the model sees, and may use, granted tools only
                    model=request.model or self.default_model,
                    previous=request.plan,
                    completion=self._completion,
                )
            )
            # What the run was started under: its pinned quotas, not the tenant's current ones.
            check_revision(result.plan, context, request.quotas, tools, previous=request.plan)
        except PlannerError as exc:
            raise to_application_error(exc) from None
        except DuraplanError as exc:
            raise to_failure(exc) from None
        return result.plan_json

    def _tools_of(self, tenant: str) -> ToolRegistry:
        """This worker's tools and the tenant's source tools, as a submit validates against
        (blocking: the tenant store)."""
        if self.tenants is None:
            return self.registry
        from executor.service.sources import ToolSources

        return ToolSources(self.tenants).registry_for(tenant, self.registry)


def _replan_request_text(request: ReplanRequest) -> str:
    done = json.dumps(request.completed, default=str)[:20_000]
    return (
        f"Goal: {request.goal}\n"
        f"The run failed at step {request.failed_step!r}: {request.error.type}: {request.error.message}\n"
        "Revise the plan so the remaining work succeeds. Steps that already completed are listed with "
        "their outputs; keep their ids and definitions unchanged: they will not run again and their "
        f"outputs are reused.\nCompleted: {done}"
    )
