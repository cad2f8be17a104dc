"""The duraplan worker: the generic plan workflow plus the step activities, on one task queue."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from executor.activities import StepActivities
from executor.config import Settings
from executor.sandbox import Sandbox
from executor.tenants import TenantRegistry
from executor.workflow import PlanWorkflow
from planner.worker import worker_parts
from tools import Store, ToolRegistry, default_registry

__all__ = ["WorkerDeps", "running_worker", "workflow_runner"]


def workflow_runner() -> SandboxedWorkflowRunner:
    # Our own modules are deterministic and import-safe; passing them through skips re-importing
    # them for every workflow run, which is most of a short run's start-up cost.
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "executor", "schemas", "tools", "jmespath", "jsonschema", "pydantic", "referencing"
        )
    )


@dataclass
class WorkerDeps:
    settings: Settings
    registry: ToolRegistry
    store: Store
    sandbox: Sandbox
    activities: StepActivities


@contextlib.asynccontextmanager
async def running_worker(
    client: Client,
    settings: Settings,
    *,
    registry: ToolRegistry | None = None,
    store: Store | None = None,
    task_queue: str | None = None,
    completion: Callable[..., Awaitable[Any]] | None = None,
    tenants: TenantRegistry | None = None,
    **worker_options: Any,
) -> AsyncIterator[WorkerDeps]:
    """Run a worker until the block exits; shuts down the worker, sandbox pool and store cleanly.

    ``completion`` replaces ``litellm.acompletion`` for llm steps and replanning (tests); ``tenants``
    enforces tool grants at dispatch."""
    registry = registry or default_registry(extra_modules=settings.tool_modules)
    own_store = store is None
    if store is None:
        settings.home.mkdir(parents=True, exist_ok=True)
        store = Store(settings.home / "store.db")
    sources = None
    if tenants is not None:
        from executor.sources import SourceCalls
        from tools.sources.pool import SourcePool

        sources = SourceCalls(tenants, SourcePool(allow_stdio=settings.mcp_stdio))
    try:
        async with Sandbox() as sandbox:
            activities = StepActivities(
                registry,
                store,
                sandbox,
                default_model=settings.default_model,
                completion=completion,
                tenants=tenants,
                sources=sources,
            )
            planner_workflows, planner_activities = worker_parts(settings, registry=registry, completion=completion)
            worker = Worker(
                client,
                task_queue=task_queue or settings.task_queue,
                workflows=[PlanWorkflow, *planner_workflows],
                activities=[*activities.all(), *planner_activities],
                workflow_runner=workflow_runner(),
                **worker_options,
            )
            async with worker:
                yield WorkerDeps(settings, registry, store, sandbox, activities)
    finally:
        if sources is not None:
            await sources.pool.close()
        if own_store:
            store.close()
