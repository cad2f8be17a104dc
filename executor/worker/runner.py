"""The duraplan worker: the generic plan workflow plus the step activities, on one task queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from executor.engine.workflow import PlanWorkflow
from executor.service.config import Settings
from executor.service.converter import utf8_client
from executor.service.telemetry import client_interceptors, configure_telemetry
from executor.service.tenants import TenantRegistry
from executor.worker.activation import DetachedStartRunner
from executor.worker.activities import StepActivities
from executor.worker.memory import pin_mmap_threshold
from executor.worker.metering import Meter
from executor.worker.sandbox import Sandbox
from executor.worker.starter import RunStarter
from tools import Store, ToolRegistry, default_registry
from tools.usage import UsageStore

__all__ = ["PASSTHROUGH", "WorkerDeps", "WorkerParts", "running_worker", "workflow_runner"]

# Modules imported once, outside Temporal's workflow sandbox, and shared by every workflow run:
# only deterministic ones (the engine, the plan language, the plan model and their libraries).
PASSTHROUGH = (
    "executor.engine",
    "executor.lang",
    "executor.errors",
    "schemas",
    "jmespath",
    "jsonschema",
    "pydantic",
    "referencing",
    "re2",
)


class WorkerParts(Protocol):
    """More workflows and activities for a worker (the planner's, for planning sessions and replanning)."""

    def __call__(
        self,
        settings: Settings,
        *,
        registry: ToolRegistry,
        completion: Callable[..., Awaitable[Any]] | None,
        tenants: TenantRegistry | None = None,
    ) -> tuple[list[type], list[Callable[..., Any]]]: ...


def workflow_runner(*extra_passthrough: str) -> SandboxedWorkflowRunner:
    # Passing deterministic modules through skips re-importing them for every workflow run, which
    # is most of a short run's start-up cost; everything else is re-imported inside the sandbox.
    # Detached from the start activation's protobuf: see executor/worker/activation.py.
    return DetachedStartRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH, *extra_passthrough)
    )


@dataclass
class WorkerDeps:
    settings: Settings
    registry: ToolRegistry
    store: Store
    sandbox: Sandbox
    activities: StepActivities


@contextlib.asynccontextmanager
async def _reconciling(client: Client, usage: UsageStore | None, settings: Settings) -> AsyncIterator[None]:
    """Fold closed runs' ends into the ledger while the worker runs (executor.service.usage_reconcile)."""
    if usage is None:
        yield
        return
    from executor.service.usage_reconcile import Reconciler

    task = asyncio.create_task(
        Reconciler(utf8_client(client), usage, settings.task_queue, search_attributes=settings.search_attributes).run()
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
    parts: Sequence[WorkerParts] = (),
    **worker_options: Any,
) -> AsyncIterator[WorkerDeps]:
    """Run a worker until the block exits; shuts down the worker, sandbox pool and store cleanly.

    ``completion`` replaces ``litellm.acompletion`` for llm steps and replanning (tests); ``tenants``
    enforces tool grants at dispatch; ``parts`` add workflows and activities (``duraplan.running_worker``
    adds the planner's)."""
    registry = registry or default_registry(extra_modules=settings.tool_modules)
    configure_telemetry(settings)
    traced = [i for i in client_interceptors() if i not in client.config()["interceptors"]]
    if traced:  # a client connected before tracing was on (e.g. the dev server's): the worker traces
        worker_options["interceptors"] = [*worker_options.get("interceptors", []), *traced]
    pin_mmap_threshold()  # large payloads go back to the OS when freed (see executor/worker/memory.py)
    own_store = store is None
    if store is None:
        settings.home.mkdir(parents=True, exist_ok=True)
        store = Store(settings.store_location())
    # The usage ledger lives in the tool store's database, on a connection of its own.
    usage = UsageStore(settings.store_location()) if settings.metering else None
    sources = None
    if tenants is not None:
        from executor.service.sources import SourceCalls
        from tools.sources.pool import SourcePool

        sources = SourceCalls(tenants, SourcePool(allow_stdio=settings.mcp_stdio))
    try:
        async with Sandbox(spares=settings.sandbox_spares) as sandbox:
            activities = StepActivities(
                registry,
                store,
                sandbox,
                default_model=settings.default_model,
                completion=completion,
                tenants=tenants,
                meter=Meter(usage),
                sources=sources,
            )
            workflows: list[type] = [PlanWorkflow]
            extra_activities: list[Callable[..., Any]] = []
            for part in parts:
                more_workflows, more_activities = part(
                    settings, registry=registry, completion=completion, tenants=tenants
                )
                workflows += more_workflows
                extra_activities += more_activities
            worker = Worker(
                utf8_client(client),  # history in UTF-8 JSON, as every size limit counts it
                task_queue=task_queue or settings.task_queue,
                workflows=workflows,
                activities=[
                    *activities.all(),
                    *RunStarter(client, settings, registry, tenants).all(),
                    *extra_activities,
                ],
                workflow_runner=workflow_runner(),
                **worker_options,
            )
            async with worker, _reconciling(client, usage, settings):
                yield WorkerDeps(settings, registry, store, sandbox, activities)
    finally:
        if usage is not None:
            usage.close()
        if sources is not None:
            await sources.pool.close()
        if own_store:
            store.close()
