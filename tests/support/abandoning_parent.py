"""A parent that starts a duraplan run as an abandoned child, as planning sessions did before the
one start path (planner/workflows.py, replayed branch): the run outlives its parent and has a
ParentWorkflowId."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes

with workflow.unsafe.imports_passed_through():
    from executor.engine.contract import SA_SESSION, SA_STATUS, SA_TENANT, WORKFLOW_NAME
    from executor.engine.models import RunInput, plan_hash


@workflow.defn(name="TestAbandoningParent")
class AbandoningParent:
    @workflow.run
    async def run(self, tenant: str, run_id: str, plan: dict[str, Any], queue: str, indexed: bool) -> str:
        arg = RunInput(
            plan=plan, plan_hash=plan_hash(plan), tenant=tenant, session="s", run_id=run_id, search_attributes=indexed
        )
        attributes = TypedSearchAttributes(
            [
                SearchAttributePair(SA_TENANT, tenant),
                SearchAttributePair(SA_SESSION, "s"),
                SearchAttributePair(SA_STATUS, "running"),
            ]
        )
        await workflow.start_child_workflow(
            WORKFLOW_NAME,
            arg,
            id=f"{tenant}/{run_id}",
            task_queue=queue,
            search_attributes=attributes if indexed else None,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
        )
        return run_id
