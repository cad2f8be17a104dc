"""What deleting a tenant ends beyond the registry: its open runs, and its data in the tool store.

``TenantRegistry.delete`` removes the tenant's keys, quotas, grants, egress, secrets and sources at
once (its API keys stop working) and retires the name. Its runs live in Temporal and its data in
the tool store, which the registry does not reach; before this, a deleted tenant's runs went on
running (their steps' egress and effects included) and its kv values stayed for ever. Here, for a
retired tenant:

1. Its open workflows are terminated, runs and planning (chat) sessions alike: a Temporal batch
   job over the tenant's search attribute (exact, one tenant, as ``duraplan bulk``), or, without
   search attributes, a listing by workflow id prefix checked exactly here (Temporal's SQLite
   visibility matches ``STARTS_WITH`` without regard to case, so ``Acme/`` would also match
   ``acme/``), one terminate each. Subplan runs end with their parents (parent close policy:
   terminate); a run whose parent is no longer running (an abandoned child: a planning
   session's submit before the one start path) is ended on its own. A submit that read the
   tenant just before its deletion may start a run up to ``CONTEXT_TTL_S`` later, and visibility
   lists a run a moment after it starts: the tenant's runs are counted again until none has shown
   for ``settle_s``.
2. Then its rows in the tool store are deleted: kv, the effects ledger, the outbox and
   continue-as-new carries (in that order: a run still going could repeat an effect whose ledger
   row is gone, so runs end first). Usage records stay: they are the operator's billing history.

Run histories stay in Temporal until the namespace's retention removes them; the name stays
retired, so no new tenant can take it.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from executor.engine.names import ATTR_TENANT
from executor.service.bulk import apply_to_query
from executor.service.config import Settings
from executor.service.tenants import CONTEXT_TTL_S, TenantError, TenantRegistry

__all__ = ["PurgeReport", "purge_tenant"]

SETTLE_S = CONTEXT_TTL_S + 2.0  # a late start, and the visibility delay after it
MAX_PURGE_S = 300.0  # runs still appearing after this: something outside the registry starts them
_TERMINATE_CONCURRENCY = 16


@dataclass
class PurgeReport:
    tenant: str
    terminated: int = 0  # open workflows (runs, planning sessions)
    rows_deleted: dict[str, int] = field(default_factory=dict)  # table -> rows


async def purge_tenant(
    client: Client, settings: Settings, registry: TenantRegistry, tenant: str, *, settle_s: float = SETTLE_S
) -> PurgeReport:
    """End a deleted tenant's open runs, then delete its tool-store data (module doc). Repeatable:
    a second call finds nothing left. TenantError for a tenant that is not deleted."""
    if not registry.is_retired(tenant):
        raise TenantError(f"tenant {tenant!r} is not deleted: delete it first (duraplan tenants delete)")
    report = PurgeReport(tenant)
    report.terminated = await _end_runs(client, settings, tenant, settle_s)
    report.rows_deleted = await _delete_data(settings, tenant)
    return report


async def _end_runs(client: Client, settings: Settings, tenant: str, settle_s: float) -> int:
    loop = asyncio.get_running_loop()
    ended = 0
    quiet_since = started = loop.time()
    while True:
        if loop.time() - started > MAX_PURGE_S:  # a client without the registry keeps starting them
            raise TenantError(
                f"runs of deleted tenant {tenant!r} kept starting for {MAX_PURGE_S:.0f} s ({ended} ended): "
                "stop what starts them (a client without the tenant registry), then purge again"
            )
        found = await (_terminate_indexed if settings.search_attributes else _terminate_listed)(client, tenant)
        found += await _terminate_orphans(client, tenant, indexed=settings.search_attributes)
        ended += found
        now = loop.time()
        if found:
            quiet_since = now
        elif now - quiet_since >= settle_s:
            return ended
        await asyncio.sleep(min(0.25, settle_s))


async def _terminate_indexed(client: Client, tenant: str) -> int:
    # Every type: runs and planning sessions carry the tenant's attribute.
    query = f"{ATTR_TENANT} = {json.dumps(tenant)} AND ExecutionStatus = 'Running' AND ParentWorkflowId IS NULL"
    matched = (await client.count_workflows(query)).count
    if matched == 0:
        return 0
    result = await apply_to_query(client, tenant, "terminate", query, matched, reason=f"tenant {tenant} deleted")
    return result.affected


async def _terminate_listed(client: Client, tenant: str) -> int:
    prefix = f"{tenant}/"
    query = f"WorkflowId STARTS_WITH {json.dumps(prefix)} AND ExecutionStatus = 'Running' AND ParentWorkflowId IS NULL"
    return await _terminate_each(client, tenant, query, orphans_only=False)


async def _terminate_orphans(client: Client, tenant: str, *, indexed: bool) -> int:
    """Open runs of the tenant that have a parent which is not running. A subplan ends with its
    parent (parent close policy: terminate) and is left to it; but a run a planning session
    started before the one start path is an abandoned child (planner/workflows.py): it outlives
    its parent, and the top-level query (``ParentWorkflowId IS NULL``) does not list it. A child
    whose parent still runs is left for the next pass, after its parent: ending it first would
    fail the parent's step and start its compensations."""
    prefix = f"{tenant}/"
    owner = f"{ATTR_TENANT} = {json.dumps(tenant)}" if indexed else f"WorkflowId STARTS_WITH {json.dumps(prefix)}"
    query = f"{owner} AND ExecutionStatus = 'Running' AND ParentWorkflowId IS NOT NULL"
    return await _terminate_each(client, tenant, query, orphans_only=True)


async def _terminate_each(client: Client, tenant: str, query: str, *, orphans_only: bool) -> int:
    """Terminate, one at a time (16 in flight), the tenant's workflows ``query`` lists that still
    run (``orphans_only``: and whose parent does not): how many were terminated."""
    prefix = f"{tenant}/"
    ids = [wf.id async for wf in client.list_workflows(query) if wf.id.startswith(prefix)]  # exact: see module doc
    sem = asyncio.Semaphore(_TERMINATE_CONCURRENCY)

    async def terminate(workflow_id: str) -> int:
        async with sem:
            handle = client.get_workflow_handle(workflow_id)
            try:
                described = await handle.describe()
                if described.status != WorkflowExecutionStatus.RUNNING:
                    return 0  # ended meanwhile (visibility lags)
                if orphans_only and described.parent_id is not None and await _running(client, described.parent_id):
                    return 0  # ends with its parent, or on a later pass once its parent has ended
                await handle.terminate(reason=f"tenant {tenant} deleted")
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:  # ended meanwhile (its parent's close policy)
                    return 0
                raise
            return 1

    return sum(await asyncio.gather(*(terminate(i) for i in ids)))


async def _running(client: Client, workflow_id: str) -> bool:
    try:
        return (await client.get_workflow_handle(workflow_id).describe()).status == WorkflowExecutionStatus.RUNNING
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # gone (retention): not running
            return False
        raise


async def _delete_data(settings: Settings, tenant: str) -> dict[str, int]:
    from tools.carry_store import CarryStore
    from tools.store import Store

    location = settings.store_location()
    if isinstance(location, Path) and not os.path.exists(location):
        return {}  # no worker ever wrote a store here: nothing to delete (and none is created)
    store = await asyncio.to_thread(Store, location)
    try:
        deleted = await store.purge_tenant(tenant)
        deleted["run_carry"] = await CarryStore(store.database).purge_tenant(tenant)
        return deleted
    finally:
        store.close()
