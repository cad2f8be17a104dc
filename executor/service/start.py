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
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import jsonschema
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import (
    Priority,
    RawValue,
    SearchAttributeKey,
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
from executor.lang.validate_cache import CACHE_SIZE, validate_plan_cached
from executor.service.admission import Admission, RunningView
from executor.service.config import Settings
from executor.service.converter import writes_utf8_json
from executor.service.names import CHILD_RUN_PATTERN, NAME_PATTERN, RUN_ID_REGEX, check_depth, check_name, check_run_id
from executor.service.start_request import can_start_directly, direct_start, encode_run_input, plan_json
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

    # Remembered by content (grants are asked again on every hit): a repeated plan costs no
    # re-validation. A large plan is validated off the event loop (a 2 MiB plan takes about half a
    # second of CPU, and an API process serves every tenant from one loop); a small one here, where
    # the hop to a thread would cost more than validating it (a cache hit: tens of microseconds).
    def validated() -> Plan:
        return validate_plan_cached(
            plan if isinstance(plan, Plan) else load_plan(plan), tools=tools, granted=ctx.is_granted
        )

    parsed = validated() if _small(plan) else await asyncio.to_thread(validated)
    prepared = _prepare(parsed)
    values = dict(inputs or {})
    check_depth("run inputs", values)
    problems = (
        []
        if not values and prepared.none_needed
        else [f"{''.join(f'/{p}' for p in e.path) or '/'}: {e.message}" for e in prepared.inputs.iter_errors(values)]
    )
    if problems:
        raise InputsInvalid("run inputs", problems)
    if ctx.quotas is not None and ctx.quotas not in prepared.within:
        ctx.quotas.check_plan(parsed, ctx.tenant)
        if len(prepared.within) < _QUOTAS_KEPT:
            prepared.within.add(ctx.quotas)
    digest = prepared.digest
    arg = RunInput(
        plan=prepared.body,
        plan_hash=digest,
        tenant=ctx.tenant,
        session=session,
        run_id=run_id,
        inputs=values,
        local_tools=tools.local_names(),
        generation=generation,
        search_attributes=settings.search_attributes,
        quotas=ctx.quotas.for_run() if ctx.quotas is not None else None,
        revisions=revisions or [],
        tool_pins=pins(parsed) if pins is not None else {},
        engine=ENGINE_VERSION,
        metered=settings.metering,
    )
    payload = encode_run_input(arg, prepared.encoded)  # what the start sends (and the SDK would encode)
    if len(payload.data) > MAX_START_INPUT_BYTES:
        _refuse_oversized(len(prepared.encoded.encode()), len(payload.data))
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
        workflow_id = f"{ctx.tenant}/{run_id}"
        queue = task_queue or settings.task_queue
        memo = {"generation": generation} if generation else None  # absent: 0 (less held per run)
        task_timeout = timedelta(seconds=settings.workflow_task_timeout)
        direct = can_start_directly(client)
        async with _admitted(client, settings, ctx.tenant, cap, ctx.quotas) as admitted:
            if direct:  # the same request, from parts kept between starts (executor.service.start_request)
                handle = await direct_start(
                    client,
                    workflow=WORKFLOW_NAME,
                    workflow_id=workflow_id,
                    task_queue=queue,
                    payload=payload,
                    attributes=_attribute_values(arg, parsed.name) if arg.search_attributes else [],
                    memo=memo,
                    fairness_key=ctx.tenant,
                    restart=restart,
                    task_timeout=task_timeout,
                )
            else:
                handle = await client.start_workflow(
                    WORKFLOW_NAME,
                    # The payload encoded above, when the client's converter would write the same bytes.
                    RawValue(payload) if writes_utf8_json(client) else arg,
                    id=workflow_id,
                    task_queue=queue,
                    memo=memo,
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
                    task_timeout=task_timeout,
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


@dataclass(frozen=True)
class _Prepared:
    """What a start derives from a validated plan alone, kept with it (``_prepare``)."""

    plan: Plan  # held: its id() is the key, and must not be reused while the entry lives
    body: dict[str, Any]  # the plan's JSON, shared by every run started from it: read-only
    digest: str  # plan_hash(body)
    encoded: str  # the body as a run input's payload holds it (start_request.plan_json)
    inputs: jsonschema.Draft202012Validator  # the plan's inputs schema, compiled
    none_needed: bool  # the inputs schema accepts {}: a start without inputs needs no check
    # tenants' quotas the plan was checked against and is within (Quotas is frozen: a changed
    # quota is another value, checked afresh); a walk of every step, ~75 us at 50 steps
    within: set[Quotas] = field(default_factory=set)


_PREPARED: OrderedDict[int, _Prepared] = OrderedDict()
_QUOTAS_KEPT = 64  # distinct quotas remembered per plan
_PREPARED_LOCK = threading.Lock()


# Temporal refuses a payload over 2 MB (its default blob size limit, Temporal Cloud's too) with an
# error naming neither the plan nor the inputs; a run's start input is checked against it first.
MAX_START_INPUT_BYTES = 2 * 1024 * 1024 - 1024


def _refuse_oversized(plan_bytes: int, total: int) -> NoReturn:
    limit = f"a run's start input (plan, inputs and run settings) is limited to {MAX_START_INPUT_BYTES} bytes"
    if plan_bytes >= total - plan_bytes:  # the larger part is named: that is what to shrink
        raise PlanInvalid(
            [
                PlanIssue(
                    "", f"the plan is {plan_bytes} bytes as JSON and the start input {total}: {limit}", code="too_large"
                )
            ]
        )
    raise InputsInvalid("run inputs", [f"/: the start input is {total} bytes with these inputs: {limit}"])


# A plan under this many JSON values plus characters of its strings is validated on the event loop.
_INLINE_PLAN_BUDGET = 16 * 1024


def _small(plan: object) -> bool:
    """Whether ``plan`` is a mapping small enough to validate without leaving the event loop: a
    bounded walk, so a large plan costs at most the budget to find out."""
    if not isinstance(plan, Mapping):
        return False  # a file or text (read and parsed first), or a Plan (checked whole)
    budget = _INLINE_PLAN_BUDGET
    stack: list[Any] = [plan]
    while stack:
        node = stack.pop()
        budget -= 1
        if isinstance(node, str):
            budget -= len(node)
        elif isinstance(node, Mapping):
            budget -= sum(len(k) if isinstance(k, str) else 1 for k in node)
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
        if budget < 0:
            return False
    return True


def _prepare(parsed: Plan) -> _Prepared:
    """The plan's JSON, hash and inputs validator, once per validated plan: a resubmitted plan is
    the same ``Plan`` object from the validation cache (executor.lang.validate_cache), and dumping,
    hashing and compiling its inputs schema again cost more per start than the rest of this module."""
    with _PREPARED_LOCK:
        hit = _PREPARED.get(id(parsed))
        if hit is not None and hit.plan is parsed:
            _PREPARED.move_to_end(id(parsed))
            return hit
    body = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
    inputs = validator(parsed.inputs)
    prepared = _Prepared(parsed, body, plan_hash(body), plan_json(body), inputs, inputs.is_valid({}))
    with _PREPARED_LOCK:
        _PREPARED[id(parsed)] = prepared
        while len(_PREPARED) > CACHE_SIZE:
            _PREPARED.popitem(last=False)
    return prepared


def _attribute_values(arg: RunInput, plan_name: str) -> list[tuple[SearchAttributeKey[str], str]]:
    # No DuraplanStatus: a run starts running, and an unset status means running (the listing's
    # filter says so: run_queries.status_clause). Each attribute set at start costs the server about
    # 0.15 ms of CPU per start (bench/start_rate.py), and the workflow sets the status when it changes.
    return [
        (SA_TENANT, arg.tenant),
        (SA_SESSION, arg.session),
        (SA_PLAN_HASH, arg.plan_hash),
        (SA_PLAN_NAME, plan_name[:200]),
    ]


def _attributes(arg: RunInput, plan_name: str) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(k, v) for k, v in _attribute_values(arg, plan_name)])


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
