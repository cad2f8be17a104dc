"""The one start path: every way a run starts goes through ``start_run``.

Python ``submit_plan`` / ``Duraplan.submit_plan``, HTTP, MCP and the CLI call it through
``Duraplan``; ``restart`` calls it with the next generation; a chat session's ``submit`` calls it
from the ``duraplan.start_run`` activity (``executor.worker.starter``); a replanned revision is
checked by ``check_revision`` against the run's pinned quotas and the tenant's grants; a subplan's
child is started by the workflow with its parent's pinned quotas, the tenant's fairness key and
the task timeout (``executor.engine.containers``), its plan checked here when the parent started.

In one place: tenant existence, tool grants, plan quotas, the rate token, the concurrency cap,
fairness priority, timeouts, memo and search attributes. The tenant's registry entry is read at
most once a second per process (``TenantRegistry.context``), off the event loop, and run tokens
are leased from the tenant's bucket a few at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import (
    Priority,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from executor.engine.contract import SA_PLAN_HASH, SA_PLAN_NAME, SA_SESSION, SA_TENANT, WORKFLOW_NAME
from executor.engine.models import ENGINE_VERSION, Revision, RunInput, RunQuotas, plan_hash
from executor.errors import InputsInvalid, PlanInvalid, PlanIssue, RunConflict, RunNotFound, RunStateError
from executor.lang.json_schema import validator
from executor.lang.loader import load_plan
from executor.lang.secret_refs import secret_names
from executor.lang.validate import validate_plan
from executor.lang.validate_cache import validate_plan_cached
from executor.service.admission import Admission, RunningView
from executor.service.config import Settings
from executor.service.names import CHILD_RUN_PATTERN, NAME_PATTERN, RUN_ID_REGEX, check_depth, check_name, check_run_id
from executor.service.tenants import QuotaExceeded, Quotas, TenantRegistry
from schemas.plan import Plan
from tools import ToolRegistry

__all__ = [
    "CHILD_RUN_PATTERN",
    "NAME_PATTERN",
    "RUN_ID_REGEX",
    "Started",
    "TenantContext",
    "check_name",
    "check_revision",
    "check_run_id",
    "first_input",
    "load_context",
    "start_run",
]


@dataclass(frozen=True)
class TenantContext:
    """What a request needs of its tenant, read once: existence, tool grants and quotas.

    ``registry`` None: no tenancy (every tool granted, plan limits and built-in defaults only)."""

    tenant: str
    grants: tuple[str, ...] | None = None
    quotas: Quotas | None = None
    registry: TenantRegistry | None = None

    def is_granted(self, tool: str) -> bool:
        return self.grants is None or any(fnmatch.fnmatchcase(tool, p) for p in self.grants)

    def tools(self, registry: ToolRegistry) -> ToolRegistry:
        """The tools this tenant may use: what a planner is shown."""
        if self.grants is None:
            return registry
        return ToolRegistry(registry.get(n) for n in registry.names() if self.is_granted(n))

    @classmethod
    def load(cls, registry: TenantRegistry | None, tenant: str) -> TenantContext:
        """Blocking (SQLite): call through ``load_context`` on an event loop."""
        check_name("tenant", tenant)
        if registry is None:
            return cls(tenant)
        entry = registry.context(tenant)  # UnknownTenant before anything else; kept CONTEXT_TTL_S
        return cls(tenant, entry.grants, entry.quotas, registry)


async def load_context(registry: TenantRegistry | None, tenant: str) -> TenantContext:
    if registry is None:
        return TenantContext.load(None, tenant)
    entry = registry.fresh_context(check_name("tenant", tenant))
    if entry is not None:  # read within CONTEXT_TTL_S: no thread hop, no database
        return TenantContext(tenant, entry.grants, entry.quotas, registry)
    return await asyncio.to_thread(TenantContext.load, registry, tenant)


def check_revision(
    plan: Plan,
    ctx: TenantContext,
    quotas: RunQuotas | None,
    tools: ToolRegistry,
    previous: Mapping[str, Any] | None = None,
) -> Plan:
    """A replanned revision meets what its run was started under: the tenant's grants, the run's
    pinned quotas (not the tenant's current ones) and, given the ``previous`` plan, names no secret
    it did not (the model read step outputs and errors: data could ask it for any secret)."""
    checked = validate_plan(plan, tools=tools, granted=ctx.is_granted)
    if previous is not None:
        added = secret_names(checked.model_dump(mode="json", by_alias=True, exclude_unset=True)) - secret_names(
            previous
        )
        if added:
            raise PlanInvalid(
                [
                    PlanIssue(
                        "",
                        f"the revision names secret(s) {sorted(added)} that the run's plan did not: a revision "
                        "may use only the secrets its run was started with",
                        code="secret_not_in_plan",
                    )
                ]
            )
    if quotas is not None:
        Quotas(
            max_steps_per_run=quotas.max_steps,
            code_cpu_seconds=quotas.code_cpu_seconds,
            code_memory_mb=quotas.code_memory_mb,
        ).check_plan(checked, ctx.tenant)
    return checked


@dataclass
class Started:
    run_id: str
    created: bool  # False: an existing run with the same id, plan and inputs
    handle: WorkflowHandle[Any, Any] | None  # the handle start_workflow returned, when created


async def start_run(
    client: Client,
    settings: Settings,
    tools: ToolRegistry,
    ctx: TenantContext,
    plan: Mapping[str, Any] | Plan | str | Path,
    *,
    session: str,
    inputs: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    generation: int = 0,
    revisions: list[Revision] | None = None,
    task_queue: str | None = None,
    pins: Callable[[Plan], dict[str, str]] | None = None,
    replacing: bool = False,
) -> Started:
    """Validate and start a run for ``ctx.tenant``; idempotent on ``run_id`` (same plan and inputs:
    the same run). ``generation`` > 0 restarts ``run_id`` (a running generation is terminated).
    ``tools``: what the plan validates against (the worker's and the tenant's source tools);
    ``pins(plan)``: the source tools' catalog schema hashes the run is pinned to; ``replacing``:
    a restart of a generation that is running now (it is terminated, so its slot is the new one's)."""
    check_name("session", session)
    run_id = check_name("run_id", run_id) if run_id else f"run-{uuid.uuid4().hex[:16]}"
    # remembered by content (grants are asked again on every hit): a repeated plan costs no re-validation
    # Off the event loop: a 2 MiB plan takes about half a second of CPU to validate, and an API
    # process serves every tenant from one loop.
    parsed = await asyncio.to_thread(
        lambda: validate_plan_cached(
            plan if isinstance(plan, Plan) else load_plan(plan), tools=tools, granted=ctx.is_granted
        )
    )
    body = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    values = dict(inputs or {})
    check_depth("run inputs", values)
    problems = [
        f"{''.join(f'/{p}' for p in e.path) or '/'}: {e.message}" for e in validator(parsed.inputs).iter_errors(values)
    ]
    if problems:
        raise InputsInvalid("run inputs", problems)
    if ctx.quotas is not None:
        ctx.quotas.check_plan(parsed, ctx.tenant)
    digest = plan_hash(body)
    arg = RunInput(
        plan=body,
        plan_hash=digest,
        tenant=ctx.tenant,
        session=session,
        run_id=run_id,
        inputs=values,
        local_tools=[n for n in tools.names() if tools.get(n).local],
        generation=generation,
        search_attributes=settings.search_attributes,
        quotas=ctx.quotas.for_run() if ctx.quotas is not None else None,
        revisions=revisions or [],
        tool_pins=pins(parsed) if pins is not None else {},
        engine=ENGINE_VERSION,
        metered=settings.metering,
    )
    # After validation (an invalid plan costs no quota); the rate token first: refusing a flood
    # must cost a local SQLite update, not a visibility query per request. Tokens are leased a
    # few at a time (TenantRegistry.take_leased_run_token): most starts spend one from memory.
    registry = ctx.registry
    token = False
    if registry is not None:
        if not registry.spend_leased_run_token(ctx.tenant):
            await asyncio.to_thread(registry.take_leased_run_token, ctx.tenant)
        token = True
    try:
        # A restart of a running generation replaces it: that one run does not count twice. A
        # restart of an ended run is one more running run (it once let a tenant at its cap start
        # one over it).
        cap = None if ctx.quotas is None else ctx.quotas.max_concurrent_runs + (generation > 0 and replacing)
        restart = generation > 0
        async with _admitted(client, settings, ctx.tenant, cap, ctx.quotas) as admitted:
            handle = await client.start_workflow(
                WORKFLOW_NAME,
                arg,
                id=f"{ctx.tenant}/{run_id}",
                task_queue=task_queue or settings.task_queue,
                memo={"generation": generation} if generation else None,  # absent: 0 (less held per run)
                search_attributes=_attributes(arg, parsed.name) if arg.search_attributes else None,
                # Weighted round-robin per tenant when tasks queue up: a flood from one tenant waits
                # its turn behind others' work (the server needs matching.enableFairness; dev sets it).
                priority=Priority(fairness_key=ctx.tenant),
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE
                if restart
                else WorkflowIDReusePolicy.REJECT_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.TERMINATE_EXISTING
                if restart
                else WorkflowIDConflictPolicy.FAIL,
                # Start the first workflow task on this process's worker, if it has one: saves a hop.
                request_eager_start=True,
                task_timeout=timedelta(seconds=settings.workflow_task_timeout),
            )
            admitted(handle.id)
        token = False  # spent: the run started
        return Started(run_id, True, handle)
    except WorkflowAlreadyStartedError:
        # Rare path: compare with what the existing run was started with (no memo on the hot path).
        existing = await first_input(client, ctx.tenant, run_id)
        original = existing.revisions[0].plan_hash if existing.revisions else existing.plan_hash
        if (original, _digest(existing.inputs)) != (digest, _digest(values)):
            raise RunConflict(
                f"run {run_id!r} already exists for tenant {ctx.tenant!r} with a different plan or inputs"
            ) from None
        return Started(run_id, False, None)
    finally:
        if token and registry is not None:  # nothing started: the token goes back (to the lease)
            registry.give_back_run_token(ctx.tenant)


def _attributes(arg: RunInput, plan_name: str) -> TypedSearchAttributes:
    # No DuraplanStatus: a run starts running, and an unset status means running (the listing's
    # filter says so: run_queries.status_clause). Each attribute set at start costs the server about
    # 0.15 ms of CPU per start (bench/start_rate.py), and the workflow sets the status when it changes.
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT, arg.tenant),
            SearchAttributePair(SA_SESSION, arg.session),
            SearchAttributePair(SA_PLAN_HASH, arg.plan_hash),
            SearchAttributePair(SA_PLAN_NAME, plan_name[:200]),
        ]
    )


def _digest(value: Any) -> str:
    return plan_hash(value if isinstance(value, dict) else {"value": value})


# One per process: a tenant's check-and-start is one step here, so a burst cannot all count the
# same few running runs (see executor/service/admission.py).
_ADMISSION = Admission()
_IDS_PER_QUERY = 100  # workflow ids per visibility query in the exact check


@contextlib.asynccontextmanager
async def _admitted(
    client: Client, settings: Settings, tenant: str, cap: int | None, quotas: Quotas | None
) -> AsyncIterator[Callable[[str], None]]:
    """The tenant's running-run cap, checked and held across the start. Visibility is eventually
    consistent: runs this process started recently count until it lists them."""
    if cap is None or not settings.search_attributes:
        yield lambda _workflow_id: None
        return
    running = (
        f"DuraplanTenant = {json.dumps(tenant)} AND ExecutionStatus = 'Running' AND WorkflowType = '{WORKFLOW_NAME}'"
    )

    async def count() -> int:
        return (await client.count_workflows(running)).count

    async def listed(ids: list[str]) -> set[str]:
        out: set[str] = set()
        for i in range(0, len(ids), _IDS_PER_QUERY):
            chunk = ids[i : i + _IDS_PER_QUERY]
            query = f"{running} AND WorkflowId IN ({', '.join(json.dumps(k) for k in chunk)})"
            out.update([wf.id async for wf in client.list_workflows(query, limit=len(chunk))])
        return out

    async def alive(workflow_id: str) -> bool:
        desc = await client.get_workflow_handle(workflow_id).describe()
        return desc.status == WorkflowExecutionStatus.RUNNING

    def refuse(running: int) -> QuotaExceeded:
        return QuotaExceeded("max_concurrent_runs", None, tenant=tenant, detail=f"{running} running, cap {cap}")

    rate, burst = (quotas.runs_per_second, quotas.runs_burst) if quotas is not None else (0.0, 0)
    async with _ADMISSION.admit(
        tenant, cap, RunningView(count, listed, alive), refuse, rate=rate, burst=burst
    ) as started:
        yield started


async def first_input(client: Client, tenant: str, run_id: str) -> RunInput:
    """What the current generation of a run was started with (its first execution's input)."""
    handle = client.get_workflow_handle(f"{tenant}/{run_id}")
    try:
        async for event in handle.fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                [value] = client.data_converter.payload_converter.from_payloads(payloads, [RunInput])
                assert isinstance(value, RunInput)
                return value
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise RunNotFound(tenant, run_id) from None
        raise
    raise RunStateError(f"run {run_id!r} has no start event")
