"""Containers: foreach (items in parallel, bounded), switch (one branch) and subplan (a child run)."""

from __future__ import annotations

import asyncio
from typing import Any

import jsonschema
from temporalio import workflow
from temporalio.common import Priority, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ChildWorkflowError

from executor.engine.base import EngineBase
from executor.engine.contract import SA_PLAN_HASH, SA_PLAN_NAME, SA_SESSION, SA_STATUS, SA_TENANT, WORKFLOW_NAME
from executor.engine.frames import Drained, Frame, StepFailed
from executor.engine.models import RunInput, StepError, StepRecord, plan_hash
from executor.engine.retry import to_step_error
from executor.engine.run_status import child_run_id
from executor.engine.scheduling import cancel_all
from executor.lang.expressions import truthy
from executor.lang.json_schema import validator
from schemas.plan import ForeachStep, SubplanStep, SwitchStep

__all__ = ["ContainersMixin"]

_PATCH_CHILD_RUN_ID = "subplan-child-run-id"
# Runs started at this engine version or later check a subplan's inputs with RE2 patterns
# (executor.lang.json_schema); earlier ones keep jsonschema's ``re``, so their histories replay.
SAFE_SCHEMA_ENGINE = 4


def _child_attributes(tenant: str, session: str, digest: str, name: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT, tenant),
            SearchAttributePair(SA_SESSION, session),
            SearchAttributePair(SA_STATUS, "running"),
            SearchAttributePair(SA_PLAN_HASH, digest),
            SearchAttributePair(SA_PLAN_NAME, name[:200]),
        ]
    )


class ContainersMixin(EngineBase):
    async def _foreach(self, step: ForeachStep, path: str, frame: Frame, rec: StepRecord) -> list[Any]:
        items = self._eval(step.items, frame, "/items")
        if not isinstance(items, list):
            raise StepFailed(path, StepError("ExpressionError", f"items must be a list, got {type(items).__name__}"))
        rec.detail = {"items": len(items)}
        running: dict[int, asyncio.Task[None]] = {}
        # Items finished before continue-as-new are skipped here, not one task each: a 100,000-item
        # loop continues as new dozens of times.
        todo = [i for i in range(len(items)) if not self._done(f"{path}[{i}]")]
        try:
            while todo or running:
                while todo and len(running) < step.max_concurrency and not self._draining:
                    i = todo.pop(0)
                    running[i] = asyncio.create_task(self._foreach_item(step, path, frame, i, items[i]))
                if not running:
                    raise Drained()
                done, _ = await workflow.wait(list(running.values()), return_when=asyncio.FIRST_COMPLETED)
                for i, task in list(running.items()):
                    if task in done:
                        del running[i]
                        task.result()
        except GeneratorExit:
            raise  # the worker drops this run from its cache: nothing may be awaited any more
        except BaseException:
            await cancel_all(running.values())
            raise
        return [self.records[f"{path}[{i}]"].output for i in range(len(items))]

    async def _foreach_item(self, step: ForeachStep, path: str, frame: Frame, index: int, item: Any) -> None:
        item_path = f"{path}[{index}]"
        if self._done(item_path):
            return
        inner = frame.child(f"{item_path}.", step.steps, item=item, index=index)
        await self._run_block(step.steps, inner)
        if step.output is not None:
            value = self._eval(step.output, inner, "/output")
        else:
            value = self.records[inner.visible[step.steps[-1].id]].output
        self.records[item_path] = StepRecord(state="completed", output=value)

    async def _switch(self, step: SwitchStep, path: str, frame: Frame, rec: StepRecord) -> Any:
        branch = rec.detail.get("branch") if rec.detail else None
        if branch is None:
            branch = next(
                (i for i, case in enumerate(step.cases) if truthy(self._eval(case.when, frame, f"/cases/{i}/when"))),
                -1,
            )
            rec.detail = {"branch": branch}
        steps = step.default if branch == -1 else step.cases[branch].steps
        if not steps:
            return None
        inner = frame.child(f"{path}.", steps)
        await self._run_block(steps, inner)
        return self.records[inner.visible[steps[-1].id]].output

    async def _subplan(self, step: SubplanStep, path: str, frame: Frame, rec: StepRecord) -> Any:
        self._count_step(path)
        child_plan = step.plan.model_dump(mode="json", by_alias=True, exclude_unset=True)
        inputs = self._render(step.inputs, frame, "/inputs")
        check = validator if self.inp.engine >= SAFE_SCHEMA_ENGINE else jsonschema.Draft202012Validator
        problems = [e.message for e in check(step.plan.inputs).iter_errors(inputs)]
        if problems:
            raise StepFailed(path, StepError("InputsInvalid", "; ".join(problems)))
        if self._since(_PATCH_CHILD_RUN_ID):
            # A run id of its own that every surface opens like any run (tenant/<child run id>).
            child_id = child_run_id(self.inp.run_id, path, self.inp.generation)
            workflow_id = f"{self.inp.tenant}/{child_id}"
            rec.detail = {"child_run_id": child_id}
        else:  # runs started before: the id their history has
            child_id = f"{self.inp.run_id}.{path}"
            workflow_id = f"{self.inp.tenant}/{child_id}/{self.inp.generation}"
        digest = plan_hash(child_plan)
        while self._active >= self._max_parallel:
            await workflow.wait_condition(lambda: self._active < self._max_parallel)
        self._active += 1
        try:
            return await workflow.execute_child_workflow(
                WORKFLOW_NAME,
                RunInput(
                    plan=child_plan,
                    plan_hash=digest,
                    tenant=self.inp.tenant,
                    session=self.inp.session,
                    run_id=child_id,
                    inputs=inputs,
                    local_tools=self.inp.local_tools,
                    generation=self.inp.generation,
                    history_limit=self.inp.history_limit,
                    search_attributes=self.inp.search_attributes,
                    quotas=self.inp.quotas,
                    tool_pins=self.inp.tool_pins,
                    engine=self.inp.engine,
                    metered=self.inp.metered,
                ),
                id=workflow_id,
                # What the start path gives a top-level run (executor.service.start): the tenant's
                # fairness key, the task timeout, its own plan in memo and search attributes;
                # quotas are the parent's pinned ones.
                priority=Priority(fairness_key=self.inp.tenant),
                task_timeout=workflow.info().task_timeout,
                memo={"generation": self.inp.generation, "plan_hash": digest},
                search_attributes=_child_attributes(self.inp.tenant, self.inp.session, digest, step.plan.name)
                if self.inp.search_attributes
                else None,
            )
        except ChildWorkflowError as exc:
            error, _ = to_step_error(exc)
            raise StepFailed(path, error) from None
        finally:
            self._active -= 1
