"""The Python API agent frameworks call: submit a plan, steer and watch its run.

Every run belongs to a tenant and an agent session. Its Temporal workflow id is
``<tenant>/<run_id>``, so run ids are unique per tenant and another tenant's run id is simply not
found. Plans are validated (and inputs checked) before anything reaches Temporal.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import (
    Priority,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from executor.engine.limits import json_size
from executor.engine.models import EventRecord, RunInput, plan_hash
from executor.engine.workflow import WORKFLOW_NAME, PlanWorkflow
from executor.errors import InputsInvalid, RunConflict, RunFailed, RunNotFound, RunStateError
from executor.lang.depth import MAX_JSON_DEPTH, deepest
from executor.lang.loader import load_plan
from executor.lang.validate import validate_plan
from executor.service.admission import Admission
from executor.service.bulk import BulkResult, RunFilter, run_bulk
from executor.service.config import SA_PLAN_HASH, SA_PLAN_NAME, SA_SESSION, SA_STATUS, SA_TENANT, Settings, connect
from executor.service.converter import utf8_client
from executor.service.telemetry import submit_span
from executor.service.tenants import QuotaExceeded, TenantRegistry
from executor.service.usage import UsageReport, record_run_start, usage_report
from schemas.plan import Plan
from tools import ToolRegistry, default_registry
from tools.usage import UsageStore

if TYPE_CHECKING:
    from executor.service.sources import ToolSources

__all__ = ["MAX_EVENT_BYTES", "Duraplan", "RunHandle", "list_runs", "submit_plan"]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
MAX_EVENT_BYTES = 1024 * 1024  # the reference product's event payload limit
_STATUS = {
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "cancelled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "failed",
}
_STATUS_FILTER = {
    "completed": "ExecutionStatus = 'Completed'",
    "failed": "(ExecutionStatus = 'Failed' OR ExecutionStatus = 'TimedOut')",
    "cancelled": "ExecutionStatus = 'Canceled'",
    "terminated": "ExecutionStatus = 'Terminated'",
    "running": "ExecutionStatus = 'Running'",
    "paused": "ExecutionStatus = 'Running' AND DuraplanStatus = 'paused'",
}


def _check_name(kind: str, value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise InputsInvalid(kind, [f"{value!r} must match {NAME_PATTERN.pattern}"])
    return value


def _digest(value: Any) -> str:
    return plan_hash(value if isinstance(value, dict) else {"value": value})


class Duraplan:
    """A connection to Temporal plus the tool registry plans are validated against."""

    def __init__(
        self,
        client: Client,
        settings: Settings | None = None,
        registry: ToolRegistry | None = None,
        tenants: TenantRegistry | None = None,
        usage: UsageStore | None = None,
    ) -> None:
        """``tenants``: enforce the tenant registry (known tenant, tool grants, run-creation rate);
        ``usage``: the usage ledger (default: the workers' store database when metering is on, opened on first use)."""
        self.client = utf8_client(client)  # payloads as UTF-8 JSON: what the size limits count
        self.settings = settings or Settings.from_env()
        self.registry = registry or default_registry(extra_modules=self.settings.tool_modules)
        self.tenants = tenants
        self._owns_tenants = False  # opened by connect(): close() closes it
        self._admission = Admission()
        self._usage = usage
        self._recording: set[asyncio.Task[None]] = set()

    @property
    def usage_store(self) -> UsageStore | None:
        """The workers' ledger: the shared database, or ``<home>/store.db`` once a worker created it
        (a client never creates a ledger of its own that no worker writes to)."""
        if self._usage is None and self.settings.metering:
            local = self.settings.home / "store.db"
            if self.settings.database_url or local.exists():
                self._usage = UsageStore(self.settings.store_location())
        return self._usage

    async def usage(
        self, *, tenant: str, day: str | None = None, first: str | None = None, last: str | None = None
    ) -> UsageReport:
        """The tenant's usage for ``day``, or ``first``..``last`` (UTC, inclusive); today by default."""
        store = self.usage_store
        if store is None:
            why = "metering is off (DURAPLAN_METERING=0)" if not self.settings.metering else "no worker has written one"
            raise RunStateError(f"no usage ledger at {self.settings.store_location()}: {why}")
        return await usage_report(store, _check_name("tenant", tenant), day=day, first=first, last=last)

    @classmethod
    async def connect(cls, settings: Settings | None = None, registry: ToolRegistry | None = None) -> Duraplan:
        settings = settings or Settings.from_env()
        dp = cls(await connect(settings), settings, registry, settings.tenant_registry())
        dp._owns_tenants = True
        return dp

    async def __aenter__(self) -> Duraplan:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Release what ``connect`` opened, while the interpreter is still whole: the Temporal
        runtime's native threads crash a Python that finalizes with a live client under them
        (exit 134, PyGILState_Release). ``async with await Duraplan.connect() as dp:`` does it."""
        if self._owns_tenants and self.tenants is not None:
            self.tenants.close()
        self.__dict__.pop("client", None)
        gc.collect()  # the client's native handles go now, not during interpreter shutdown

    async def submit_plan(
        self,
        plan: Mapping[str, Any] | Plan | str | Path,
        *,
        tenant: str,
        session: str,
        inputs: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        tool_pins: Mapping[str, str] | None = None,
    ) -> RunHandle:
        """Validate and start a run; idempotent on ``run_id`` (same plan and inputs: same run).

        ``tool_pins``: source tool -> schema hash of the catalog the plan was made with (default:
        the tenant's current catalog); a call to a tool that changed since fails the step."""
        run_id = _check_name("run_id", run_id) if run_id else f"run-{uuid.uuid4().hex[:16]}"
        # The root of the run's trace: the interceptor's StartWorkflow span and everything after nest under it.
        with submit_span(tenant, session, run_id):
            return await self._submit_plan(
                plan, tenant=tenant, session=session, inputs=inputs, run_id=run_id, tool_pins=tool_pins
            )

    async def _submit_plan(
        self,
        plan: Mapping[str, Any] | Plan | str | Path,
        *,
        tenant: str,
        session: str,
        inputs: Mapping[str, Any] | None,
        run_id: str,
        tool_pins: Mapping[str, str] | None,
    ) -> RunHandle:
        _check_name("tenant", tenant)
        _check_name("session", session)
        granted = None
        if self.tenants is not None:
            self.tenants.get(tenant)  # UnknownTenant before anything else
            granted = functools.partial(self.tenants.is_tool_granted, tenant)
        parsed = validate_plan(
            plan if isinstance(plan, Plan) else load_plan(plan), tools=self.registry_for(tenant), granted=granted
        )
        body = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        inputs = dict(inputs or {})
        _check_depth("run inputs", inputs)
        problems = [
            f"{''.join(f'/{p}' for p in e.path) or '/'}: {e.message}"
            for e in jsonschema.Draft202012Validator(parsed.inputs).iter_errors(inputs)
        ]
        if problems:
            raise InputsInvalid("run inputs", problems)
        digest = plan_hash(body)
        tenants = self.tenants
        tenant_quotas = tenants.quotas(tenant) if tenants is not None else None
        if tenant_quotas is not None:
            tenant_quotas.check_plan(parsed, tenant)
        arg = RunInput(
            plan=body,
            plan_hash=digest,
            tenant=tenant,
            session=session,
            run_id=run_id,
            inputs=inputs,
            local_tools=[n for n in self.registry.names() if self.registry.get(n).local],
            search_attributes=self.settings.search_attributes,
            quotas=tenant_quotas.for_run() if tenant_quotas is not None else None,
            tool_pins=self._pins(tenant, parsed, tool_pins),
        )
        # After validation (an invalid plan costs no quota); the rate token first: refusing a
        # flood must cost a local SQLite update, not a visibility query per request.
        token = False
        if tenants is not None:
            tenants.require_run_tokens(tenant)
            token = True
        handle = RunHandle(self, tenant, run_id)
        try:
            cap = tenant_quotas.max_concurrent_runs if tenant_quotas is not None else None
            async with self._admitted(tenant, cap) as started:
                handle._started = await self._start(
                    arg, parsed.name, WorkflowIDReusePolicy.REJECT_DUPLICATE, WorkflowIDConflictPolicy.FAIL
                )
                started(handle.workflow_id)
            token = False  # spent: the run started
            self._record_start(tenant, run_id, arg.generation)
        except WorkflowAlreadyStartedError:
            # Rare path: compare with what the existing run was started with (no memo on the hot path).
            existing = await handle._first_input()
            original = existing.revisions[0].plan_hash if existing.revisions else existing.plan_hash
            if (original, _digest(existing.inputs)) != (digest, _digest(inputs)):
                raise RunConflict(
                    f"run {run_id!r} already exists for tenant {tenant!r} with a different plan or inputs"
                ) from None
        finally:
            if token and tenants is not None:  # nothing started: the token goes back
                tenants.return_run_tokens(tenant)
        return handle

    async def bulk(
        self,
        action: str,
        *,
        tenant: str,
        session: str | None = None,
        plan_hash: str | None = None,
        state: str | None = None,
        dry_run: bool = False,
    ) -> BulkResult:
        """cancel, terminate, pause or resume every open run of ``tenant`` matching the filter
        (``dry_run``: only count them). Never reaches another tenant's runs."""
        if not self.settings.search_attributes:
            raise RunStateError("bulk operations need search attributes (Settings.search_attributes)")
        return await run_bulk(
            self.client, tenant, action, RunFilter(session=session, plan_hash=plan_hash, state=state), dry_run=dry_run
        )

    def _record_start(self, tenant: str, run_id: str, generation: int) -> None:
        """Meter the start off the submit path (the worker backfills it at the run's end if this
        process exits first), so a submit never waits for the ledger."""
        if self.usage_store is None:
            return
        task = asyncio.create_task(record_run_start(self.usage_store, tenant, run_id, generation))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    @contextlib.asynccontextmanager
    async def _admitted(self, tenant: str, cap: int | None) -> AsyncIterator[Callable[[str], None]]:
        """The tenant's running-run cap, checked and held across the start (see admission.py)."""
        if cap is None or not self.settings.search_attributes:
            yield lambda _workflow_id: None
            return
        query = (
            f"DuraplanTenant = {json.dumps(tenant)} AND ExecutionStatus = 'Running' "
            f"AND WorkflowType = '{WORKFLOW_NAME}'"
        )

        async def visible(limit: int) -> set[str]:
            return {wf.id async for wf in self.client.list_workflows(query, limit=limit)}

        async def alive(workflow_id: str) -> bool:
            desc = await self.client.get_workflow_handle(workflow_id).describe()
            return desc.status == WorkflowExecutionStatus.RUNNING

        def refuse(running: int) -> QuotaExceeded:
            return QuotaExceeded("max_concurrent_runs", None, tenant=tenant, detail=f"{running} running, cap {cap}")

        async with self._admission.admit(tenant, cap, visible, alive, refuse) as started:
            yield started

    async def _start(
        self,
        arg: RunInput,
        plan_name: str,
        reuse: WorkflowIDReusePolicy,
        conflict: WorkflowIDConflictPolicy,
    ) -> WorkflowHandle[Any, Any]:
        return await self.client.start_workflow(
            PlanWorkflow.run,
            arg,
            id=f"{arg.tenant}/{arg.run_id}",
            task_queue=self.settings.task_queue,
            search_attributes=None
            if not arg.search_attributes
            else TypedSearchAttributes(
                [
                    SearchAttributePair(SA_TENANT, arg.tenant),
                    SearchAttributePair(SA_SESSION, arg.session),
                    SearchAttributePair(SA_PLAN_HASH, arg.plan_hash),
                    SearchAttributePair(SA_PLAN_NAME, plan_name[:200]),
                ]
            ),
            # Weighted round-robin per tenant when tasks queue up: a flood from one tenant waits
            # its turn behind others' work (the server needs matching.enableFairness; dev sets it).
            priority=Priority(fairness_key=arg.tenant),
            id_reuse_policy=reuse,
            id_conflict_policy=conflict,
            # Start the first workflow task on this process's worker, if it has one: saves a hop.
            request_eager_start=True,
            task_timeout=timedelta(seconds=self.settings.workflow_task_timeout),
        )

    def tools_for(self, tenant: str) -> ToolRegistry:
        """The tools ``tenant`` may use: what a planner should be shown (all of them without tenancy)."""
        if self.tenants is None:
            return self.registry
        self.tenants.get(tenant)
        every = self.registry_for(tenant)
        return ToolRegistry(every.get(name) for name in every.names() if self.tenants.is_tool_granted(tenant, name))

    @functools.cached_property
    def sources(self) -> ToolSources:
        """The tenants' tool sources (MCP servers, OpenAPI services); needs the tenant registry."""
        from executor.service.sources import ToolSources

        if self.tenants is None:
            raise RunStateError("tool sources need the tenant registry (DURAPLAN_TENANCY=1)")
        reserved = frozenset(name.split(".", 1)[0] for name in self.registry.names())
        return ToolSources(self.tenants, reserved=reserved, allow_stdio=self.settings.mcp_stdio)

    def registry_for(self, tenant: str) -> ToolRegistry:
        """The worker's tools plus ``tenant``'s source tools, granted or not (what plans validate against)."""
        if self.tenants is None:
            return self.registry
        return self.sources.registry_for(tenant, self.registry)

    def catalog_for(self, tenant: str) -> list[dict[str, Any]]:
        """The granted catalog a planner is shown; source tools carry ``source`` and ``schema_hash``."""
        entries = self.tools_for(tenant).catalog()
        if self.tenants is None:
            return entries
        extra = {e["name"]: e for e in self.sources.entries(tenant)}
        return [{**e, **extra.get(e["name"], {})} for e in entries]

    def _pins(self, tenant: str, plan: Plan, given: Mapping[str, str] | None) -> dict[str, str]:
        if self.tenants is None:
            return dict(given or {})
        from executor.service.sources import plan_tools, tool_pins

        used = plan_tools(plan)
        current = tool_pins(used, self.sources.entries(tenant))
        return {**current, **{k: v for k, v in (given or {}).items() if k in used}}

    def get_run(self, run_id: str, *, tenant: str) -> RunHandle:
        return RunHandle(self, _check_name("tenant", tenant), _check_name("run_id", run_id))

    async def list_runs(
        self,
        *,
        tenant: str,
        session: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Runs of one tenant, newest first, optionally of one session and in one status."""
        if not self.settings.search_attributes:
            raise RunStateError("listing runs needs search attributes (Settings.search_attributes)")
        clauses = [f"DuraplanTenant = {json.dumps(_check_name('tenant', tenant))}", f"WorkflowType = '{WORKFLOW_NAME}'"]
        if session is not None:
            clauses.append(f"DuraplanSession = {json.dumps(_check_name('session', session))}")
        if status is not None:
            if status not in _STATUS_FILTER:
                raise InputsInvalid("status filter", [f"{status!r} is not one of {', '.join(_STATUS_FILTER)}"])
            clauses.append(_STATUS_FILTER[status])
        out = []
        async for wf in self.client.list_workflows(" AND ".join(clauses), limit=limit):
            sa = wf.typed_search_attributes
            run_id = wf.id.split("/", 1)[1] if "/" in wf.id else wf.id
            if "/" in run_id:
                continue  # a subplan's child run: listed through its parent
            out.append(
                {
                    "run_id": run_id,
                    "tenant": sa.get(SA_TENANT),
                    "session": sa.get(SA_SESSION),
                    "plan_name": sa.get(SA_PLAN_NAME),
                    "plan_hash": sa.get(SA_PLAN_HASH),
                    "state": _STATUS.get(wf.status, sa.get(SA_STATUS) or "running") if wf.status else "running",
                    "started_at": wf.start_time.isoformat(),
                    "closed_at": wf.close_time.isoformat() if wf.close_time else None,
                }
            )
        return out


class RunHandle:
    """One run of one tenant. Every method fails with ``RunNotFound`` for an unknown run."""

    def __init__(self, dp: Duraplan, tenant: str, run_id: str) -> None:
        self._dp = dp
        self.tenant = tenant
        self.run_id = run_id
        self.workflow_id = f"{tenant}/{run_id}"
        # The handle start_workflow returned, when this process started the run: client
        # interceptors (e.g. the time-skipping test server's) attach to it.
        self._started: WorkflowHandle[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"RunHandle(tenant={self.tenant!r}, run_id={self.run_id!r})"

    @property
    def _handle(self) -> WorkflowHandle[Any, Any]:
        return self._dp.client.get_workflow_handle(self.workflow_id)  # latest run of the chain

    async def _describe(self) -> Any:
        try:
            return await self._handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFound(self.tenant, self.run_id) from None
            raise

    async def status(self) -> dict[str, Any]:
        """Run state and per-step state, attempts, timings, errors and output previews."""
        desc = await self._describe()
        try:
            status: dict[str, Any] = await self._handle.query(PlanWorkflow.status)
        except (RPCError, Exception):  # no worker to answer: describe alone still tells the state
            sa = desc.typed_search_attributes
            status = {
                "run_id": self.run_id,
                "tenant": self.tenant,
                "session": sa.get(SA_SESSION),
                "plan_name": sa.get(SA_PLAN_NAME),
                "plan_hash": sa.get(SA_PLAN_HASH),
                "state": sa.get(SA_STATUS) or "running",
                "steps": [],
            }
        if desc.status in _STATUS:
            status["state"] = _STATUS[desc.status]
        status["started_at_server"] = desc.start_time.isoformat()
        status["closed_at"] = desc.close_time.isoformat() if desc.close_time else None
        return status

    async def plan(self) -> dict[str, Any]:
        """The plan the run executes now and every step record by path (nested steps included).

        ``plan`` is None when no worker answers the query (the run's state still comes from ``status``)."""
        await self._describe()  # RunNotFound for an unknown run, another tenant's included
        view: dict[str, Any] = {"plan": None, "plan_hash": None, "revision": None, "records": {}}
        try:
            view.update(await self._handle.query(PlanWorkflow.plan_view))
            # Apart: a huge foreach's records can outgrow a query answer; the plan alone still draws.
            view["records"] = await self._handle.query(PlanWorkflow.step_records)
        except (RPCError, Exception):  # as in status(): a closed run without a worker cannot answer
            pass
        return {"run_id": self.run_id, **view}

    async def result(self, timeout: float | None = None) -> Any:
        """The run's output; ``RunFailed`` if it failed, was cancelled or terminated."""
        try:
            return await (self._started or self._handle).result(
                rpc_timeout=timedelta(seconds=timeout) if timeout else None
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFound(self.tenant, self.run_id) from None
            raise
        except WorkflowFailureError as exc:
            desc = await self._describe()
            state = _STATUS.get(desc.status, "failed")
            cause: BaseException | None = exc.cause
            details = None
            while cause is not None:
                if isinstance(cause, ApplicationError) and cause.details:
                    details = cause.details[0]
                    break
                cause = cause.__cause__
            message = str(exc.cause.message if hasattr(exc.cause, "message") else exc.cause)
            raise RunFailed(self.run_id, state, message, details) from None

    async def send_event(self, type: str, payload: Any = None, event_id: str | None = None) -> dict[str, Any]:
        """Deliver an event; kept if no step waits yet; the same ``event_id`` twice counts once."""
        _check_depth("event payload", payload)
        size = json_size(payload)  # UTF-8 bytes, as history stores it (not \\u escapes)
        tenants = self._dp.tenants
        if tenants is not None:
            cap = tenants.quotas(self.tenant).max_event_bytes
            if size > cap:
                detail = f"event {type!r} payload is {size} bytes; the cap is {cap}"
                raise QuotaExceeded("max_event_bytes", None, tenant=self.tenant, detail=detail)
        elif size > MAX_EVENT_BYTES:
            raise InputsInvalid("event payload", [f"{size} bytes; the limit is {MAX_EVENT_BYTES}"])
        event = EventRecord(type=type, payload=payload, event_id=event_id, received_at="")
        result = await self._update(PlanWorkflow.send_event, event)
        return asdict(result) if not isinstance(result, dict) else result

    async def pause(self) -> str:
        """No new step starts; running steps finish."""
        return str(await self._update(PlanWorkflow.pause))

    async def resume(self) -> str:
        return str(await self._update(PlanWorkflow.resume))

    async def cancel(self) -> None:
        """Graceful: running steps are cancelled and compensations run in reverse order."""
        await self._running("cancel")
        await self._handle.cancel()

    async def terminate(self, reason: str = "terminated by user") -> None:
        """Immediate: nothing more runs, compensations included."""
        await self._running("terminate")
        await self._handle.terminate(reason=reason)

    async def _running(self, operation: str) -> None:
        """RunNotFound for no such run, RunStateError for one that has already ended."""
        desc = await self._describe()
        if desc.status != WorkflowExecutionStatus.RUNNING:
            state = _STATUS.get(desc.status, "closed")
            raise RunStateError(f"run {self.run_id!r} is {state}; nothing to {operation}")

    async def restart(self) -> RunHandle:
        """A fresh run of the same plan and inputs under the same run id (running one terminated).

        Effects happen again: idempotency keys include the restart generation."""
        first = await self._first_input()
        first.carry = None
        first.generation = first.generation + 1
        reuse, conflict = WorkflowIDReusePolicy.ALLOW_DUPLICATE, WorkflowIDConflictPolicy.TERMINATE_EXISTING
        self._started = await self._dp._start(first, first.plan.get("name", ""), reuse, conflict)
        self._dp._record_start(self.tenant, self.run_id, first.generation)
        return self

    async def _first_input(self) -> RunInput:
        try:
            async for event in self._handle.fetch_history_events():
                if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                    payloads = event.workflow_execution_started_event_attributes.input.payloads
                    [value] = self._dp.client.data_converter.payload_converter.from_payloads(payloads, [RunInput])
                    assert isinstance(value, RunInput)
                    return value
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise RunNotFound(self.tenant, self.run_id) from None
            raise
        raise RunStateError(f"run {self.run_id!r} has no start event")

    async def _update(self, update: Any, *args: Any) -> Any:
        desc = await self._describe()
        if desc.status != WorkflowExecutionStatus.RUNNING:
            raise RunStateError(f"run {self.run_id!r} is {_STATUS.get(desc.status, 'closed')}")
        try:
            return await self._handle.execute_update(update, *args)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            message = getattr(cause, "message", str(cause))
            kind = getattr(cause, "type", None)
            if kind in ("EventPayloadInvalid", "UnknownEventType"):
                raise InputsInvalid("event", [message]) from None
            if kind == "EventTooLarge":  # the run's pinned quota (the client's check saw a newer one)
                raise QuotaExceeded("max_event_bytes", None, tenant=self.tenant, detail=message) from None
            raise RunStateError(message) from None
        except (RPCError, WorkflowUpdateRPCTimeoutOrCancelledError) as exc:
            # The run closed while the update was in flight ("workflow update was aborted by
            # closing workflow"): the same conflict as arriving after the end, not a lost run.
            raise RunStateError(f"run {self.run_id!r} ended before the request was accepted: {exc}") from None


def _check_depth(what: str, value: Any) -> None:
    too_deep = deepest(value)
    if too_deep is not None:
        raise InputsInvalid(what, [f"{too_deep}: nested more than {MAX_JSON_DEPTH} levels deep"])


_default: Duraplan | None = None


async def _default_dp() -> Duraplan:
    global _default
    if _default is None:
        _default = await Duraplan.connect()
    return _default


async def submit_plan(
    plan: Mapping[str, Any] | Plan | str | Path,
    *,
    tenant: str,
    session: str,
    inputs: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    duraplan: Duraplan | None = None,
) -> RunHandle:
    """Validate ``plan`` and run it durably for ``tenant`` and agent ``session``.

    Connects with ``Settings.from_env()`` unless a ``Duraplan`` is given."""
    dp = duraplan or await _default_dp()
    return await dp.submit_plan(plan, tenant=tenant, session=session, inputs=inputs, run_id=run_id)


async def list_runs(
    *,
    tenant: str,
    session: str | None = None,
    status: str | None = None,
    limit: int = 100,
    duraplan: Duraplan | None = None,
) -> list[dict[str, Any]]:
    dp = duraplan or await _default_dp()
    return await dp.list_runs(tenant=tenant, session=session, status=status, limit=limit)
