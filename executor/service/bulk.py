"""Bulk operations: cancel, terminate, pause or resume every open run of one tenant matching a filter.

The filter becomes a visibility query that always starts with the tenant's search attribute
(``DuraplanTenant = '<tenant>'``), so no filter can reach another tenant's runs. A dry run counts
the matches (``count_workflows``). Cancel and terminate go to Temporal's batch operations (one
server-side job, rate-limited by the server); pause and resume are workflow updates, which batch
operations cannot send, so they iterate the tenant's matching runs (as do cancel and terminate
when the server refuses a batch job, e.g. at its per-namespace limit of concurrent jobs). Runs of
subplans are left to their parents, which cancel or terminate them.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field
from temporalio.api.batch.v1 import BatchOperationCancellation, BatchOperationTermination
from temporalio.api.enums.v1 import BatchOperationState
from temporalio.api.workflowservice.v1 import DescribeBatchOperationRequest, StartBatchOperationRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from executor.engine.workflow import WORKFLOW_NAME, PlanWorkflow
from executor.errors import InputsInvalid

__all__ = [
    "BULK_ACTIONS",
    "MAX_ITERATED_RUNS",
    "BulkAction",
    "BulkResult",
    "RunFilter",
    "apply_to_query",
    "bulk_query",
    "run_bulk",
]

BulkAction = Literal["cancel", "terminate", "pause", "resume"]
BULK_ACTIONS: tuple[str, ...] = ("cancel", "terminate", "pause", "resume")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_STATES = {"running": None, "paused": "DuraplanStatus = 'paused'"}
_CONCURRENCY = 16  # updates / cancels in flight when iterating
# Runs one request may pause or resume (they are iterated here, one update each: 50,000 runs held
# one HTTP request for minutes and every id in memory). More are refused up front, naming this.
MAX_ITERATED_RUNS = 1000
_BATCH_REFUSED = (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.FAILED_PRECONDITION)


@dataclass(frozen=True)
class RunFilter:
    """Which open runs: all of the tenant's, or those of a session, a plan hash, a state (ANDed)."""

    session: str | None = None
    plan_hash: str | None = None
    state: str | None = None  # running (every open run) | paused


class BulkResult(BaseModel):
    action: str
    dry_run: bool
    matched: int = Field(description="open runs matching the filter when the operation started")
    affected: int = Field(description="runs the operation was applied to (0 for a dry run)")
    failed: int = Field(description="matching runs it could not be applied to (e.g. ended meanwhile)")
    strategy: Literal["count", "batch", "iterate"]
    state: Literal["completed", "running"] = Field(
        description="running: the server's batch job is still going (job_id); the counts so far"
    )
    job_id: str | None = None
    errors: list[dict[str, str]] = Field(default_factory=list, description="up to 20 failures: run_id, error")


def bulk_query(tenant: str, flt: RunFilter) -> str:
    """The visibility query for a tenant's open top-level runs matching ``flt``; bad values raise."""
    problems = []
    if not _NAME.fullmatch(tenant):
        problems.append(f"tenant: {tenant!r} is not a tenant id")
    if flt.session is not None and not _NAME.fullmatch(flt.session):
        problems.append(f"session: {flt.session!r} must match {_NAME.pattern}")
    if flt.plan_hash is not None and not _HASH.fullmatch(flt.plan_hash):
        problems.append(f"plan_hash: {flt.plan_hash!r} is not sha256:<64 hex digits>")
    if flt.state is not None and flt.state not in _STATES:
        problems.append(f"state: {flt.state!r} is not one of {', '.join(_STATES)} (only open runs can be acted on)")
    if problems:
        raise InputsInvalid("bulk filter", problems)
    clauses = [
        f"DuraplanTenant = {json.dumps(tenant)}",  # first and always: the tenant boundary
        f"WorkflowType = '{WORKFLOW_NAME}'",
        "ExecutionStatus = 'Running'",
        "ParentWorkflowId IS NULL",
    ]
    if flt.session is not None:
        clauses.append(f"DuraplanSession = {json.dumps(flt.session)}")
    if flt.plan_hash is not None:
        clauses.append(f"DuraplanPlanHash = {json.dumps(flt.plan_hash)}")
    state_clause = _STATES.get(flt.state or "running")
    if state_clause:
        clauses.append(state_clause)
    return " AND ".join(clauses)


async def run_bulk(
    client: Client,
    tenant: str,
    action: str,
    flt: RunFilter,
    *,
    dry_run: bool = False,
    wait_s: float = 30.0,
    reason: str | None = None,
) -> BulkResult:
    if action not in BULK_ACTIONS:
        raise InputsInvalid("bulk action", [f"{action!r} is not one of {', '.join(BULK_ACTIONS)}"])
    query = bulk_query(tenant, flt)
    matched = (await client.count_workflows(query)).count
    if dry_run or matched == 0:
        return BulkResult(
            action=action, dry_run=dry_run, matched=matched, affected=0, failed=0, strategy="count", state="completed"
        )
    return await apply_to_query(client, tenant, action, query, matched, reason=reason, wait_s=wait_s)


async def apply_to_query(
    client: Client,
    tenant: str,
    action: str,
    query: str,
    matched: int,
    *,
    reason: str | None = None,
    wait_s: float = 30.0,
) -> BulkResult:
    """``action`` on the ``matched`` runs of ``tenant`` that ``query`` lists (a query the caller
    built to name the tenant first, as ``bulk_query`` does; iterated runs are checked against the
    tenant's workflow id prefix too)."""
    reason = reason or f"duraplan bulk {action} for tenant {tenant}"
    if action in ("cancel", "terminate"):
        try:
            return await _batch(client, tenant, action, query, matched, reason, wait_s)
        except RPCError as exc:
            # refused by the server: iterated here, within the same limit as pause and resume
            if exc.status not in _BATCH_REFUSED or matched > MAX_ITERATED_RUNS:
                raise
    elif matched > MAX_ITERATED_RUNS:
        raise InputsInvalid(
            "bulk request",
            [
                f"{matched} open runs match; one bulk {action} reaches at most {MAX_ITERATED_RUNS} runs: "
                "narrow the filter (session, plan_hash, state) and repeat"
            ],
        )
    return await _iterate(client, tenant, action, query, matched, reason)


async def _batch(
    client: Client, tenant: str, action: str, query: str, matched: int, reason: str, wait_s: float
) -> BulkResult:
    job_id = f"duraplan-{action}-{tenant}-{uuid.uuid4().hex[:12]}"
    request = StartBatchOperationRequest(
        namespace=client.namespace, visibility_query=query, job_id=job_id, reason=reason
    )
    if action == "cancel":
        request.cancellation_operation.CopyFrom(BatchOperationCancellation(identity=client.identity))
    else:
        request.termination_operation.CopyFrom(BatchOperationTermination(identity=client.identity))
    await client.workflow_service.start_batch_operation(request)
    describe = DescribeBatchOperationRequest(namespace=client.namespace, job_id=job_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        try:
            desc = await client.workflow_service.describe_batch_operation(describe)
        except RPCError as exc:  # the job may not be visible the instant it is accepted
            if exc.status != RPCStatusCode.NOT_FOUND or loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        done = desc.state in (
            BatchOperationState.BATCH_OPERATION_STATE_COMPLETED,
            BatchOperationState.BATCH_OPERATION_STATE_FAILED,
        )
        if done or loop.time() >= deadline:
            return BulkResult(
                action=action,
                dry_run=False,
                matched=max(matched, desc.total_operation_count),
                affected=desc.complete_operation_count,
                failed=desc.failure_operation_count,
                strategy="batch",
                state="completed" if done else "running",
                job_id=job_id,
            )
        await asyncio.sleep(0.2)


async def _iterate(client: Client, tenant: str, action: str, query: str, matched: int, reason: str) -> BulkResult:
    prefix = f"{tenant}/"
    ids = [wf.id async for wf in client.list_workflows(query, limit=MAX_ITERATED_RUNS)]
    gate = asyncio.Semaphore(_CONCURRENCY)
    errors: list[dict[str, str]] = []

    async def one(workflow_id: str) -> bool:
        if not workflow_id.startswith(prefix):  # defence in depth: the query already says so
            return False
        handle = client.get_workflow_handle(workflow_id)
        async with gate:
            try:
                await _apply(handle, action, reason)
                return True
            except Exception as exc:  # e.g. the run ended meanwhile: one run's failure stops no other
                errors.append({"run_id": workflow_id.removeprefix(prefix), "error": _message(exc)})
                return False

    results = await asyncio.gather(*(one(i) for i in ids))
    affected = sum(results)
    return BulkResult(
        action=action,
        dry_run=False,
        matched=max(matched, len(ids)),
        affected=affected,
        failed=len(ids) - affected,
        strategy="iterate",
        state="completed",
        errors=errors[:20],
    )


async def _apply(handle: Any, action: str, reason: str) -> None:
    if action == "cancel":
        await handle.cancel()
    elif action == "terminate":
        await handle.terminate(reason=reason)
    elif action == "pause":
        await handle.execute_update(PlanWorkflow.pause)
    else:
        await handle.execute_update(PlanWorkflow.resume)


def _message(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    return str(getattr(cause, "message", None) or exc)
