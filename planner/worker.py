"""What a worker registers for durable planning: the session workflow and the planning activity."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from executor.service.config import Settings
from executor.service.tenants import TenantRegistry
from planner.provider import Completion
from tools.registry import ToolRegistry

__all__ = ["worker_parts"]


def worker_parts(
    settings: Settings,
    *,
    registry: ToolRegistry | None = None,
    completion: Completion | None = None,
    tenants: TenantRegistry | None = None,
) -> tuple[list[type], list[Callable[..., Any]]]:
    """``(workflows, activities)`` to add to a worker: ``PlanningSession`` and ``duraplan.plan``.

    Plans are validated against ``registry`` (the worker's; the default registry plus
    ``settings.tool_modules`` when None) and use ``settings.default_model`` unless the session names
    a model. ``completion`` replaces ``litellm.acompletion`` (tests).
    """
    from planner.activities import PlannerActivities
    from planner.workflows import PlanningSession

    if registry is None:
        from tools import default_registry

        registry = default_registry(extra_modules=settings.tool_modules)
    activities = PlannerActivities(
        registry, default_model=settings.default_model, completion=completion, tenants=tenants
    )
    return [PlanningSession], activities.all()
