"""The Python API agent frameworks call: submit a plan, steer and watch its run.

Every run belongs to a tenant and an agent session. Its Temporal workflow id is
``<tenant>/<run_id>``, so run ids are unique per tenant and another tenant's run id is simply not
found. Plans are validated (and inputs checked) before anything reaches Temporal.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from temporalio.client import (
    Client,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import TypedSearchAttributes
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from executor.engine.models import EventRecord, SendEventResult
from executor.engine.run_status import RunState, RunStatus, RunSummary, parent_of
from executor.errors import RunFailed, RunNotFound, RunStateError, from_failure
from executor.service.config import Settings, connect
from executor.service.converter import utf8_client
from executor.service.names import NAME_PATTERN as NAME_PATTERN
from executor.service.names import check_name, check_run_id
from executor.service.run_queries import (
    CLOSED_FILTER,
    CLOSED_STATES,
    MAX_EVENT_BYTES,
    VERIFY_BATCH,
    check_event,
    current_runs_query,
    describe_only_status,
    list_query,
    run_summary,
)

# Reading a run (`duraplan status`, `runs`, `events send`) needs none of the start path, the
# workflow definition, tenancy, metering or the tool registry: those load when first used.
if TYPE_CHECKING:
    from executor.engine.models import RunInput
    from executor.service.bulk import BulkResult
    from executor.service.sources import ToolSources
    from executor.service.start import TenantContext
    from executor.service.tenants import TenantRegistry
    from executor.service.usage import UsageReport
    from executor.service.usage_reconcile import Reconciler
    from schemas.plan import Plan
    from tools import ToolRegistry
    from tools.usage import UsageStore

__all__ = ["MAX_EVENT_BYTES", "Duraplan", "RunHandle", "list_runs", "submit_plan"]

log = logging.getLogger(__name__)

# Temporal's execution status -> the state of a closed run (one table: run_queries.CLOSED_STATES).
_STATUS: dict[WorkflowExecutionStatus, RunState] = {
    WorkflowExecutionStatus[name]: state for name, state in CLOSED_STATES.items()
}


_STORE_LOOK_S = 1.0  # how long a missing workers' ledger is not looked for again by starts


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
        """``tenants``: enforce the tenant registry (known tenant, tool grants, quotas, run-creation rate);
        ``usage``: the usage ledger (default: the workers' store database when metering is on, opened on first use)."""
        self.client = utf8_client(client)  # payloads as UTF-8 JSON: what the size limits count
        self.settings = settings or Settings.from_env()
        self._registry = registry
        self.tenants = tenants
        self._owns_tenants = False  # opened by connect(): close() closes it
        self._usage = usage
        self._local_store = os.fspath(self.settings.home / "store.db")  # looked for until it exists
        self._store_looked_at = float("-inf")  # when it was last found missing (a stat was 5% of a start)
        self._reconciler: Reconciler | None = None
        self._recording: set[asyncio.Task[None]] = set()

    @property
    def registry(self) -> ToolRegistry:
        """The tools plans are validated against (default: the built-in tools plus
        ``Settings.tool_modules``), built on first use: reading a run needs none."""
        if self._registry is None:
            from tools import default_registry

            self._registry = default_registry(extra_modules=self.settings.tool_modules)
        return self._registry

    @registry.setter
    def registry(self, registry: ToolRegistry) -> None:
        self._registry = registry

    @property
    def usage_store(self) -> UsageStore | None:
        """The workers' ledger: the shared database, or ``<home>/store.db`` once a worker created it
        (a client never creates a ledger of its own that no worker writes to)."""
        if (
            self._usage is None
            and self.settings.metering
            and (self.settings.database_url or os.path.exists(self._local_store))
        ):
            from tools.usage import UsageStore

            self._usage = UsageStore(self.settings.store_location())
        return self._usage

    async def usage(
        self, *, tenant: str, day: str | None = None, first: str | None = None, last: str | None = None
    ) -> UsageReport:
        """The tenant's usage for ``day``, or ``first``..``last`` (UTC, inclusive); today by default."""
        from executor.service.usage import usage_report

        store = self.usage_store
        if store is None:
            why = "metering is off (DURAPLAN_METERING=0)" if not self.settings.metering else "no worker has written one"
            raise RunStateError(f"no usage ledger at {self.settings.store_location()}: {why}")
        tenant = check_name("tenant", tenant)
        await self._reconcile_usage(store, tenant)
        return await usage_report(store, tenant, day=day, first=first, last=last)

    async def _reconcile_usage(self, store: UsageStore, tenant: str) -> None:
        """Fold the tenant's runs that closed since the workers' last pass into the ledger first
        (executor.service.usage_reconcile), so a report right after a run ends counts it. A failure
        is logged: the report answers from the ledger as it is."""
        from executor.service.usage_reconcile import REPORT_OVERLAP, Reconciler

        if self._reconciler is None or self._reconciler.store is not store:
            self._reconciler = Reconciler(
                self.client, store, self.settings.task_queue, search_attributes=self.settings.search_attributes
            )
        try:
            await self._reconciler.reconcile(tenant, overlap=REPORT_OVERLAP)
            await self._reconciler.recheck_open(tenant)
        except Exception:
            log.exception("usage of tenant %s not reconciled before the report", tenant)

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

    async def context(self, tenant: str) -> TenantContext:
        """The tenant's entry (existence, grants, quotas), read once, off the event loop."""
        from executor.service.start import load_context

        return await load_context(self.tenants, tenant)

    async def submit_plan(
        self,
        plan: Mapping[str, Any] | Plan | str | Path,
        *,
        tenant: str,
        session: str,
        inputs: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        context: TenantContext | None = None,
        tool_pins: Mapping[str, str] | None = None,
    ) -> RunHandle:
        """Validate and start a run (``executor.service.start.start_run``); idempotent on ``run_id``
        (same plan and inputs: same run). ``context``: the tenant's, when the caller has read it.

        ``tool_pins``: source tool -> schema hash of the catalog the plan was made with (default:
        the tenant's current catalog); a call to a tool that changed since fails the step."""
        from executor.service.start import start_run
        from executor.service.telemetry import submit_span

        if context is None or context.tenant != tenant:
            context = await self.context(tenant)
        run_id = check_name("run_id", run_id) if run_id else f"run-{uuid.uuid4().hex[:16]}"
        # The root of the run's trace: the interceptor's StartWorkflow span and everything after nest under it.
        with submit_span(tenant, session, run_id):
            started = await start_run(
                self.client,
                self.settings,
                self.registry_for(tenant),
                context,
                plan,
                session=session,
                inputs=inputs,
                run_id=run_id,
                pins=lambda parsed: self._pins(tenant, parsed, tool_pins),
            )
        if started.created:
            self._record_start(tenant, started.run_id, 0)
        handle = RunHandle(self, tenant, started.run_id)
        handle._started = started.handle
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
        from executor.service.bulk import RunFilter, run_bulk

        if not self.settings.search_attributes:
            raise RunStateError("bulk operations need search attributes (Settings.search_attributes)")
        return await run_bulk(
            self.client, tenant, action, RunFilter(session=session, plan_hash=plan_hash, state=state), dry_run=dry_run
        )

    def _record_start(self, tenant: str, run_id: str, generation: int) -> None:
        """Meter the start off the submit path (the worker backfills it at the run's end if this
        process exits first), so a submit never waits for the ledger."""
        if self._usage is None and time.monotonic() - self._store_looked_at < _STORE_LOOK_S:
            return  # no ledger a moment ago (a stat per start was 5% of its client CPU)
        store = self.usage_store
        if store is None:
            self._store_looked_at = time.monotonic()
            return
        from executor.service.usage import record_run_start

        task = asyncio.create_task(record_run_start(store, tenant, run_id, generation))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    def tools_for(self, tenant: str) -> ToolRegistry:
        """The tools ``tenant`` may use: what a planner should be shown (all of them without tenancy)."""
        from executor.service.start import TenantContext

        return TenantContext.load(self.tenants, tenant).tools(self.registry_for(tenant))

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
        """A run of ``tenant``: a submitted run id, or a subplan's child run id (``RunStatus.steps[].child_run_id``)."""
        return RunHandle(self, check_name("tenant", tenant), check_run_id(run_id))

    async def list_runs(
        self,
        *,
        tenant: str,
        session: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[RunSummary]:
        """Runs of one tenant (subplan children included), newest first: one row per run id, its
        current generation; ``status`` filters on that generation."""
        if not self.settings.search_attributes:
            raise RunStateError("listing runs needs search attributes (Settings.search_attributes)")
        query = list_query(tenant, session, status)
        out: list[RunSummary] = []
        seen: set[str] = set()
        batch: list[WorkflowExecution] = []

        async def flush() -> None:
            rows = batch[:]
            batch.clear()
            if status in CLOSED_FILTER:  # an older generation may match where the current one does not
                current = await self._current_runs(tenant, [wf.id for wf in rows])
                rows = [wf for wf in rows if current.get(wf.id) == wf.run_id]
            for wf in rows:
                if len(out) < limit:
                    out.append(await _summary(wf))

        async for wf in self.client.list_workflows(query, page_size=min(max(limit, 10), 1000)):
            if wf.id in seen:
                continue  # an older generation of a run already listed (newest come first)
            seen.add(wf.id)
            batch.append(wf)
            if len(batch) >= VERIFY_BATCH:
                await flush()
                if len(out) >= limit:
                    break
        await flush()
        return out

    async def _current_runs(self, tenant: str, workflow_ids: list[str]) -> dict[str, str]:
        """Workflow id -> the Temporal run id of its newest execution (the current generation)."""
        if not workflow_ids:
            return {}
        newest: dict[str, str] = {}
        async for wf in self.client.list_workflows(current_runs_query(workflow_ids)):
            newest.setdefault(wf.id, wf.run_id)
        return newest


async def _summary(wf: WorkflowExecution) -> RunSummary:
    memo = await wf.memo()
    return run_summary(
        wf.id,
        wf.status.name if wf.status else None,
        _attributes(wf.typed_search_attributes),
        memo.get("generation"),
        wf.start_time.isoformat(),
        wf.close_time.isoformat() if wf.close_time else None,
    )


def _attributes(typed: TypedSearchAttributes) -> dict[str, Any]:
    return {pair.key.name: pair.value for pair in typed}


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

    async def status(self, *, items: bool = False) -> RunStatus:
        """Run state and every step's state, attempts, timings, errors and output previews, nested
        steps included; ``items``: each foreach item's steps too."""
        desc = await self._describe()
        try:
            raw: dict[str, Any] = await self._handle.query("status", items)
            status = RunStatus.model_validate(raw)
        except (RPCError, Exception):  # no worker to answer: describe alone still tells the state
            status = describe_only_status(self.run_id, self.tenant, _attributes(desc.typed_search_attributes))
        if desc.status in _STATUS:
            status = status.settled(_STATUS[desc.status])  # Temporal's word on a closed run is final
        return status.model_copy(
            update={
                "started_at_server": desc.start_time.isoformat(),
                "closed_at": desc.close_time.isoformat() if desc.close_time else None,
            }
        )

    async def plan(self) -> dict[str, Any]:
        """The plan the run executes now and every step record by path (nested steps included).

        ``plan`` is None when no worker answers the query (the run's state still comes from ``status``)."""
        await self._describe()  # RunNotFound for an unknown run, another tenant's included
        view: dict[str, Any] = {"plan": None, "plan_hash": None, "revision": None, "records": {}}
        try:
            view.update(await self._handle.query("plan_view"))
            # Apart: a huge foreach's records can outgrow a query answer; the plan alone still draws.
            view["records"] = await self._handle.query("step_records")
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
        if self._dp.tenants is None:
            check_event(type, payload, self.tenant, None, event_id)
        else:  # reads the registry: off the event loop
            await asyncio.to_thread(check_event, type, payload, self.tenant, self._dp.tenants, event_id)
        event = EventRecord(type=type, payload=payload, event_id=event_id, received_at="")
        result = await self._update("send_event", event, result_type=SendEventResult)
        return asdict(result) if not isinstance(result, dict) else result

    async def pause(self) -> str:
        """No new step starts; running steps finish."""
        return str(await self._update("pause"))

    async def resume(self) -> str:
        return str(await self._update("resume"))

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
        """A fresh run of the same plan and inputs under the same run id (running one terminated),
        through the start path: the tenant's current grants, quotas, rate and concurrency apply.

        Effects happen again: idempotency keys include the restart generation."""
        if parent_of(self.run_id) is not None:
            raise RunStateError(f"run {self.run_id!r} is a subplan's child run: restart its parent")
        from executor.service.start import start_run

        first = await self._first_input()
        # Only a running generation is replaced (and frees its slot): restarting an ended run
        # starts one more, under the cap like any start.
        replacing = (await self._describe()).status == WorkflowExecutionStatus.RUNNING
        context = await self._dp.context(self.tenant)
        plan = first.plan
        started = await start_run(
            self._dp.client,
            self._dp.settings,
            self._dp.registry_for(self.tenant),
            context,
            plan,
            session=first.session,
            inputs=first.inputs,
            run_id=self.run_id,
            generation=first.generation + 1,
            pins=lambda _: dict(first.tool_pins),  # the catalog the plan was made with
            replacing=replacing,
        )
        self._started = started.handle
        self._dp._record_start(self.tenant, self.run_id, first.generation + 1)
        return self

    async def _first_input(self) -> RunInput:
        from executor.service.start import first_input

        return await first_input(self._dp.client, self.tenant, self.run_id)

    async def _update(self, update: str, *args: Any, result_type: type | None = None) -> Any:
        """Run ``PlanWorkflow``'s update named ``update`` (by name: the workflow module is the
        worker's, and a client that only reads or steers runs need not import it); ``result_type``:
        what its result decodes to, as the method's annotation would say.

        No describe first: the update itself is the check (a closed or unknown run answers
        NOT_FOUND), so an event costs one round trip, as a signal does. Only a refusal is
        explained, by a describe: RunNotFound for no such run, RunStateError for a closed one
        (an unreachable server fails the describe with its own RPCError, as before)."""
        for attempt in range(2):
            try:
                return await self._execute_update(update, *args, result_type=result_type)
            except RPCError as exc:
                desc = await self._describe()
                if desc.status != WorkflowExecutionStatus.RUNNING:
                    raise RunStateError(f"run {self.run_id!r} is {_STATUS.get(desc.status, 'closed')}") from None
                if exc.status == RPCStatusCode.NOT_FOUND and not attempt:
                    continue  # the run continued as new in between: its next run takes the update
                raise RunStateError(f"run {self.run_id!r} did not accept the request: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _execute_update(self, update: str, *args: Any, result_type: type | None = None) -> Any:
        try:
            return await self._handle.execute_update(update, args=args, result_type=result_type)
        except WorkflowUpdateFailedError as exc:
            # Its failure types (QuotaExceeded) register with from_failure when the module loads.
            from executor.service.tenants import QuotaExceeded

            error = from_failure(exc.cause)  # the workflow refuses with typed failures: a lookup
            if isinstance(error, QuotaExceeded) and error.tenant is None:
                error = QuotaExceeded(error.limit, error.retry_after_s, tenant=self.tenant, detail=error.detail)
            if error is not None:
                raise error from None
            raise RunStateError(getattr(exc.cause, "message", str(exc.cause))) from None
        except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
            # The run closed while the update was in flight ("workflow update was aborted by
            # closing workflow"): the same conflict as arriving after the end, not a lost run.
            raise RunStateError(f"run {self.run_id!r} ended before the request was accepted: {exc}") from None


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
) -> list[RunSummary]:
    dp = duraplan or await _default_dp()
    return await dp.list_runs(tenant=tenant, session=session, status=status, limit=limit)
