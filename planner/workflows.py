"""``PlanningSession``: one agent session's conversation about a plan, durable on Temporal.

Workflow id ``<tenant>/planning/<session>``. Each ``message`` update plans (first message) or
revises (later ones: the latest plan plus the request) through the ``duraplan.plan`` activity,
and records revision v1, v2, ... with a unified diff against the one before. ``submit`` starts the
latest revision as a run through the one start path (the ``duraplan.start_run`` activity on the
run workers: the tenant's grants, quotas, rate and concurrency cap apply as for a direct submit);
sessions that submitted before that started child workflows, and still replay so. No I/O here:
the model is called by the activity, which Temporal retries (429, 5xx); diffs and hashes are pure functions.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from executor.engine.contract import (
        SA_PLAN_HASH,
        SA_PLAN_NAME,
        SA_SESSION,
        SA_STATUS,
        SA_TENANT,
        START_RUN,
        WORKFLOW_NAME,
    )
    from executor.engine.models import RunInput, StartRunRequest, StartRunResult, plan_hash
    from executor.lang.json_schema import validator
    from planner.diff import plan_diff
    from planner.models import HEARTBEAT_SECONDS, PLAN_ACTIVITY, PlanOutput, PlanRequest, SessionInput, SubmitRequest

__all__ = ["SESSION_WORKFLOW", "PlanningSession", "session_workflow_id"]

SESSION_WORKFLOW = "DuraplanPlanningSession"
_PATCH_IDLE_END = "session-idle-end"
_PATCH_START_PATH = "submit-through-start-path"
NON_RETRYABLE = ["ModelNotConfigured", "ProviderRejected", "RepairExhausted", "BudgetExhausted", "PlannerError"]


def session_workflow_id(tenant: str, session: str) -> str:
    return f"{tenant}/planning/{session}"


@workflow.defn(name=SESSION_WORKFLOW)
class PlanningSession:
    @workflow.init
    def __init__(self, inp: SessionInput) -> None:
        self.inp = inp
        self.revisions_: list[dict[str, Any]] = list(inp.revisions)
        self._lock = asyncio.Lock()  # one message or submission at a time, in arrival order
        self._closed = False
        self._activity = 0  # messages and submits handled: a change re-arms the idle timer

    @workflow.run
    async def run(self, inp: SessionInput) -> dict[str, Any]:
        ended = "closed"
        if workflow.patched(_PATCH_IDLE_END):
            ended = await self._until_closed_or_idle()
        else:  # sessions started before idle sessions ended: wait as they did
            await workflow.wait_condition(self._closing)
        await workflow.wait_condition(workflow.all_handlers_finished)
        if not self._closed:
            workflow.continue_as_new(replace(self.inp, revisions=self.revisions_))
        runs = [r for rev in self.revisions_ for r in rev["runs"]]
        return {"revisions": len(self.revisions_), "runs": runs, "ended": ended}

    def _closing(self) -> bool:
        info = workflow.info()
        limit = self.inp.history_limit
        long = info.is_continue_as_new_suggested() or (limit is not None and info.get_current_history_length() >= limit)
        return self._closed or (long and not self._lock.locked())

    async def _until_closed_or_idle(self) -> str:
        """Wait for close (or continue-as-new); end the session when nothing happens for its idle
        time (shorter while it has no revision: every message failed so far)."""
        while True:
            seen = self._activity
            idle = self.inp.idle_timeout_s if self.revisions_ else self.inp.empty_timeout_s
            try:
                await workflow.wait_condition(
                    lambda seen=seen: self._closing() or self._activity != seen or self._lock.locked(),  # type: ignore[misc]
                    timeout=idle,
                )
            except TimeoutError:
                self._closed = True
                return "idle"
            if self._lock.locked():
                await workflow.wait_condition(lambda: not self._lock.locked())
            if self._closing():
                return "closed"

    # ---- plan and revise ---------------------------------------------------------------------

    @workflow.update
    async def message(self, text: str) -> dict[str, Any]:
        """Plan (first message) or revise the latest plan; the new revision with its diff."""
        async with self._lock:
            self._activity += 1
            previous = self.revisions_[-1]["plan"] if self.revisions_ else None
            request = PlanRequest(
                goal=text,
                tenant=self.inp.tenant,
                session=self.inp.session,
                model=self.inp.model,
                previous_plan=previous,
                catalog=self.inp.catalog,
                max_attempts=self.inp.max_attempts,
                budget_usd=self.inp.budget_usd,
            )
            try:
                out = await workflow.execute_activity(
                    PLAN_ACTIVITY,
                    request,
                    result_type=PlanOutput,
                    start_to_close_timeout=timedelta(seconds=self.inp.planning_timeout_s),
                    heartbeat_timeout=timedelta(seconds=HEARTBEAT_SECONDS),
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(seconds=self.inp.retry_initial_s),
                        maximum_interval=timedelta(seconds=self.inp.retry_max_interval_s),
                        maximum_attempts=self.inp.retry_max_attempts,
                        non_retryable_error_types=NON_RETRYABLE,
                    ),
                )
            except ActivityError as exc:
                raise _update_failure(exc) from None
            number = len(self.revisions_) + 1
            record: dict[str, Any] = {
                "revision": number,
                "message": text,
                "plan": out.plan,
                "plan_hash": plan_hash(out.plan),
                "diff": plan_diff(previous, out.plan, f"v{number - 1}" if previous else "(none)", f"v{number}"),
                "model": out.model,
                "attempts": out.attempts,
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
                "cost_usd": out.cost_usd,
                "at": workflow.now().isoformat(),
                "runs": [],
            }
            self.revisions_.append(record)
            return {k: v for k, v in record.items() if k != "runs"}

    @message.validator
    def _check_message(self, text: str) -> None:
        if self._closed:
            raise ApplicationError("the planning session is closed", type="SessionClosed", non_retryable=True)
        if not text.strip():
            raise ApplicationError("the message is empty", type="EmptyMessage", non_retryable=True)

    @workflow.query
    def revisions(self) -> list[dict[str, Any]]:
        return self.revisions_

    # ---- run ---------------------------------------------------------------------------------

    @workflow.update
    async def submit(self, request: SubmitRequest) -> str:
        """Start the latest revision as a run (a child ``DuraplanRun``); its run id."""
        async with self._lock:
            self._activity += 1
            latest = self.revisions_[-1]
            run_id = request.run_id or f"run-{workflow.uuid4().hex[:16]}"
            if run_id in latest["runs"]:
                return run_id  # the same submission again
            plan: dict[str, Any] = latest["plan"]
            if workflow.patched(_PATCH_START_PATH):
                # Through the one start path (an activity): tenant, grants, quotas, rate token,
                # concurrency cap, fairness and timeouts exactly as for a direct submit.
                try:
                    started: StartRunResult = await workflow.execute_activity(
                        START_RUN,
                        StartRunRequest(
                            tenant=self.inp.tenant,
                            session=self.inp.session,
                            plan=plan,
                            inputs=dict(request.inputs),
                            run_id=run_id,
                            task_queue=self.inp.run_task_queue,
                            # Source tools as they were when this session planned.
                            tool_pins={
                                str(e["name"]): str(e["schema_hash"])
                                for e in self.inp.catalog or []
                                if e.get("schema_hash")
                            },
                        ),
                        result_type=StartRunResult,
                        # on the workers that serve runs (every executor worker registers it)
                        task_queue=self.inp.run_task_queue,
                        start_to_close_timeout=timedelta(seconds=60),
                        # refusals are non-retryable failures; a lost worker or RPC is retried
                        retry_policy=RetryPolicy(maximum_attempts=3),
                    )
                except ActivityError as exc:
                    raise _update_failure(exc) from None
                latest["runs"].append(started.run_id)
                return started.run_id
            # Sessions that submitted before the start path: replay what they did.
            digest: str = latest["plan_hash"]
            name = str(plan.get("name", ""))
            arg = RunInput(
                plan=plan,
                plan_hash=digest,
                tenant=self.inp.tenant,
                session=self.inp.session,
                run_id=run_id,
                inputs=dict(request.inputs),
                local_tools=list(self.inp.local_tools),
                search_attributes=self.inp.search_attributes,
                # Source tools as they were when this session planned: a call to one that changed since fails.
                tool_pins={
                    str(e["name"]): str(e["schema_hash"]) for e in self.inp.catalog or [] if e.get("schema_hash")
                },
            )
            inputs_hash = plan_hash(arg.inputs)
            try:
                await workflow.start_child_workflow(
                    WORKFLOW_NAME,
                    arg,
                    id=f"{self.inp.tenant}/{run_id}",
                    task_queue=self.inp.run_task_queue,
                    memo={"plan_hash": digest, "inputs_hash": inputs_hash, "plan_name": name},
                    search_attributes=_run_search_attributes(arg, name) if self.inp.search_attributes else None,
                    parent_close_policy=workflow.ParentClosePolicy.ABANDON,
                )
            except WorkflowAlreadyStartedError:
                raise ApplicationError(
                    f"run {run_id!r} already exists for tenant {self.inp.tenant!r}", type="RunConflict"
                ) from None
            latest["runs"].append(run_id)
            return run_id

    @submit.validator
    def _check_submit(self, request: SubmitRequest) -> None:
        if not self.revisions_:
            raise ApplicationError("nothing to submit: send a message first", type="NothingToSubmit")
        schema = self.revisions_[-1]["plan"].get("inputs") or {"type": "object"}
        problems = [
            f"{''.join(f'/{p}' for p in e.path) or '/'}: {e.message}"
            for e in validator(schema).iter_errors(request.inputs)
        ]
        if problems:
            raise ApplicationError(
                "run inputs invalid: " + "; ".join(problems),
                {"what": "run inputs", "problems": problems},
                type="InputsInvalid",
            )

    # ---- end ---------------------------------------------------------------------------------

    @workflow.update
    async def close(self) -> int:
        """End the session (its runs go on); the number of revisions."""
        async with self._lock:
            self._closed = True
            return len(self.revisions_)


def _run_search_attributes(arg: RunInput, plan_name: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(SA_TENANT, arg.tenant),
            SearchAttributePair(SA_SESSION, arg.session),
            SearchAttributePair(SA_STATUS, "running"),
            SearchAttributePair(SA_PLAN_HASH, arg.plan_hash),
            SearchAttributePair(SA_PLAN_NAME, plan_name[:200]),
        ]
    )


def _update_failure(exc: ActivityError) -> ApplicationError:
    """The activity's failure as the update's: same type, message and details."""
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, *cause.details, type=cause.type, non_retryable=True)
    return ApplicationError(f"planning failed: {cause or exc}", type="PlannerError", non_retryable=True)
