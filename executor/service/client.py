"""The Python API agent frameworks call: submit a plan, steer and watch its run.

Every run belongs to a tenant and an agent session. Its Temporal workflow id is
``<tenant>/<run_id>``, so run ids are unique per tenant and another tenant's run id is simply not
found. Plans are validated (and inputs checked) before anything reaches Temporal.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
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

from executor.engine.models import EventRecord, RunInput, plan_hash
from executor.engine.workflow import WORKFLOW_NAME, PlanWorkflow
from executor.errors import InputsInvalid, RunConflict, RunFailed, RunNotFound, RunStateError
from executor.lang.loader import load_plan
from executor.lang.validate_cache import validate_plan_cached
from executor.service.config import SA_PLAN_HASH, SA_PLAN_NAME, SA_SESSION, SA_STATUS, SA_TENANT, Settings, connect
from executor.service.tenants import QuotaExceeded, RunCounts, TenantRegistry
from schemas.plan import Plan
from tools import ToolRegistry, default_registry

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
    ) -> None:
        """``tenants``: enforce the tenant registry (known tenant, tool grants, run-creation rate)."""
        self.client = client
        self.settings = settings or Settings.from_env()
        self.registry = registry or default_registry(extra_modules=self.settings.tool_modules)
        self.tenants = tenants
        self._run_counts = RunCounts()

    @classmethod
    async def connect(cls, settings: Settings | None = None, registry: ToolRegistry | None = None) -> Duraplan:
        settings = settings or Settings.from_env()
        return cls(await connect(settings), settings, registry, settings.tenant_registry())

    async def submit_plan(
        self,
        plan: Mapping[str, Any] | Plan | str | Path,
        *,
        tenant: str,
        session: str,
        inputs: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> RunHandle:
        """Validate and start a run; idempotent on ``run_id`` (same plan and inputs: same run)."""
        _check_name("tenant", tenant)
        _check_name("session", session)
        run_id = _check_name("run_id", run_id) if run_id else f"run-{uuid.uuid4().hex[:16]}"
        granted = None
        context = self.tenants.context(tenant) if self.tenants is not None else None  # UnknownTenant first
        if context is not None:
            granted = context.is_tool_granted
        parsed = validate_plan_cached(
            plan if isinstance(plan, Plan) else load_plan(plan), tools=self.registry, granted=granted
        )
        body = parsed.model_dump(mode="json", by_alias=True, exclude_unset=True)
        inputs = dict(inputs or {})
        problems = [
            f"{''.join(f'/{p}' for p in e.path) or '/'}: {e.message}"
            for e in jsonschema.Draft202012Validator(parsed.inputs).iter_errors(inputs)
        ]
        if problems:
            raise InputsInvalid("run inputs", problems)
        digest = plan_hash(body)
        tenants = self.tenants
        tenant_quotas = context.quotas if context is not None else None
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
        )
        # After validation (an invalid plan costs no quota); the rate token first: refusing a
        # flood must cost a local SQLite update, not a visibility query per request.
        token = False
        if tenants is not None:
            await asyncio.to_thread(tenants.require_run_tokens, tenant)  # a SQLite write: off the event loop
            token = True
        handle = RunHandle(self, tenant, run_id)
        try:
            if tenant_quotas is not None:
                await self._check_concurrency(tenant, tenant_quotas.max_concurrent_runs)
            handle._started = await self._start(
                arg, parsed.name, WorkflowIDReusePolicy.REJECT_DUPLICATE, WorkflowIDConflictPolicy.FAIL
            )
            token = False  # spent: the run started
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
                await asyncio.to_thread(tenants.return_run_tokens, tenant)
        return handle

    async def _check_concurrency(self, tenant: str, cap: int) -> None:
        """The tenant's running-run cap. Visibility is eventually consistent: a burst may overshoot
        by the runs started in the last moment; the rate quota bounds that burst."""
        if not self.settings.search_attributes:
            return
        query = (
            f"DuraplanTenant = {json.dumps(tenant)} AND ExecutionStatus = 'Running' "
            f"AND WorkflowType = '{WORKFLOW_NAME}'"
        )
        if self._run_counts.admits(tenant, cap):
            return
        running = (await self.client.count_workflows(query)).count
        if running >= cap:
            raise QuotaExceeded("max_concurrent_runs", None, tenant=tenant, detail=f"{running} running, cap {cap}")
        self._run_counts.counted(tenant, running)

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
        return ToolRegistry(
            self.registry.get(name) for name in self.registry.names() if self.tenants.is_tool_granted(tenant, name)
        )

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
        size = len(json.dumps(payload).encode())
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
