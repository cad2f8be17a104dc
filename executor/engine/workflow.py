"""The one generic workflow: interprets any validated plan, durably.

Deterministic by construction: no I/O, no clock but ``workflow.now()``, no environment. Plans were
validated before start; here they are parsed (cheap) and walked. Every step result is recorded by
path (``fetch``, ``each[3].summarize``), so a continued-as-new run skips what already ran.

The interpreter is split along its sections; this class holds the entry point, the handlers
(status query, event/pause/resume updates) and replanning, and mixes in:

    scheduling.py     blocks as DAGs, a step's life cycle, step budgets, continue-as-new
    script.py         script steps: sandboxed Python whose host calls are durable steps
    steps.py          the exhaustive match over step kinds; activity steps, timers, events
    containers.py     foreach, switch, subplan
    compensation.py   undo actions on failure or cancel
    retry.py          backoff and failure translation (pure)
    carry.py          the continue-as-new carry: packed, and offloaded to the worker's store when large
    status.py         status records and compaction (pure)
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import sys
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from executor.engine.carry import CarryMixin
    from executor.engine.clock import now_iso
    from executor.engine.compensation import CompensationMixin
    from executor.engine.containers import ContainersMixin
    from executor.engine.contract import RUN_REPLAN, SA_PLAN_HASH, SA_STATUS, WORKFLOW_NAME
    from executor.engine.events import check_buffer, check_consumer
    from executor.engine.frames import Drained, Frame, StepFailed, StepsView
    from executor.engine.limits import json_size
    from executor.engine.metering import RunMeter
    from executor.engine.models import (
        Carry,
        EventRecord,
        ReplanRequest,
        Revision,
        RunInput,
        SendEventResult,
        StepError,
        StepQuota,
        plan_hash,
    )
    from executor.engine.plans import root_frame, shared_derived, shared_names, shared_plan
    from executor.engine.retry import to_step_error
    from executor.engine.run_status import parent_of
    from executor.engine.scheduling import SchedulingMixin
    from executor.engine.script import ScriptMixin
    from executor.engine.status import assemble, error_dict, record_dict
    from executor.engine.steps import StepsMixin
    from executor.lang.expressions import ExpressionError, evaluate, render
    from executor.lang.json_schema import validator
    from executor.lang.script import analyse
    from executor.lang.validate import all_steps
    from schemas.plan import Plan, ScriptStep, Step, WaitForEventStep, parse_duration

__all__ = ["WORKFLOW_NAME", "PlanWorkflow"]

EVENT_ID_MEMORY = 10_000
_PATCH_NO_FINAL_UPSERT = "no-final-status-upsert"
# DuraplanStatus follows the run's open state, `waiting` included (runs recorded before: it did not).
_PATCH_LIST_WAITING = "status-attribute-waiting"


@workflow.defn(name=WORKFLOW_NAME)
class PlanWorkflow(SchedulingMixin, StepsMixin, ContainersMixin, CompensationMixin, ScriptMixin, CarryMixin):
    # Immutable starting values live on the class: an instance gets its own only once a run changes
    # one. A run then holds fewer than 30 attributes of its own, so CPython keeps its __dict__ as
    # values over keys shared by every run (a split table) instead of a table of its own: about
    # 1.5 KB less per waiting run, which thousands of waiting runs add up.
    error: StepError | None = None
    failed_step: str | None = None
    _active = 0
    _draining = False
    _task_mark = -1  # history length when the current workflow task started
    _local_in_task = 0
    _task_cut = False  # a TASK_CUT activity was scheduled to end the current task
    _parked = 0  # steps sleeping or waiting for an event right now
    # replaced, not appended to, when one is added: shared empty until then
    replan_errors: tuple[dict[str, str], ...] = ()
    compensation_errors: tuple[dict[str, str], ...] = ()

    @workflow.init
    def __init__(self, inp: RunInput) -> None:
        self.inp = inp
        # equal in most runs of a worker: one string each, not one per run (waiting runs add up)
        inp.plan_hash, inp.tenant, inp.session = (
            sys.intern(inp.plan_hash),
            sys.intern(inp.tenant),
            sys.intern(inp.session),
        )
        # one parsed plan and one body per plan in this worker, not one per run (waiting runs add up)
        inp.plan, self.plan = shared_plan(inp.plan_hash, inp.plan)
        self.plan_json = inp.plan
        self.current_hash = inp.plan_hash
        self.revisions: list[Revision] = list(inp.revisions) or [
            Revision(revision=1, plan_hash=inp.plan_hash, reason=None, at=now_iso())
        ]
        self._restore(inp.carry or Carry())  # an offloaded carry's records load when run() starts
        self._quotas = inp.quotas
        self._max_parallel = self._parallel_limit()
        inp.local_tools, self._local_tools = shared_names(inp.local_tools)  # one per worker, not per run
        self._step_quota = (
            None if inp.quotas is None else StepQuota(inp.quotas.max_inflight_steps, inp.quotas.max_step_output_bytes)
        )
        # derived from the plan alone: one per plan in this worker, like the parsed plan
        derived = shared_derived(inp.plan_hash, self.plan, lambda plan: _event_schemas(plan.steps))
        self._event_schemas = derived.event_schemas
        self._deps_cache = derived.deps
        self._listed = self.state  # the DuraplanStatus last upserted
        self._meter = RunMeter(
            inp.tenant,
            inp.run_id,
            inp.generation,
            self.continued,
            self.started_at,
            metered=inp.metered,
            engine=inp.engine,
        )

    @workflow.run
    async def run(self, inp: RunInput) -> Any:
        try:
            await self._load_carry()
            output = await self._run_plan()
        except Drained:
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._meter.segment_ended(None)
            workflow.continue_as_new(await self._carry_input())
        except StepFailed as failure:
            self.error, self.failed_step = failure.error, failure.path
            await self._compensate("failed")
            await self._drop_carry()
            await self._meter.segment_ended("failed")
            raise ApplicationError(
                str(failure),
                {"step": failure.path, "type": failure.error.type, "message": failure.error.message},
                type=failure.error.type,
                non_retryable=True,
            ) from None
        except asyncio.CancelledError:
            self.error = StepError("Cancelled", "run was cancelled")
            await self._compensate("cancelled")
            await self._meter.segment_ended("cancelled")
            raise
        await self._drop_carry()
        self._set_state("completed")
        await self._meter.segment_ended("completed")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return output

    async def _run_plan(self) -> Any:
        """Run the current revision; on terminal failure, replan (if the plan opts in) and go on."""
        while True:
            frame = root_frame(self.current_hash, self.plan)  # shared by the runs of a plan
            try:
                if self.plan.limits.deadline is None:  # one suspended frame less while the run waits
                    await self._run_block(self.plan.steps, frame)
                else:
                    await self._with_deadline(self._run_block(self.plan.steps, frame))
                return self._guard_output("(run)", self._render(self.plan.output, frame, "/output"))
            except StepFailed as failure:
                replan = self.plan.replan
                if replan is None or len(self.revisions) > replan.max_revisions or failure.path == "(run)":
                    raise
                revised = await self._replan(failure)
                if revised is None:
                    raise
                self._adopt(revised, failure)

    async def _replan(self, failure: StepFailed) -> dict[str, Any] | None:
        """Ask the planner for a revised plan; None when it cannot give one (the run then fails)."""
        replan = self.plan.replan
        assert replan is not None
        completed = {k: r.output for k, r in self.records.items() if r.state == "completed" and "." not in k}
        request = ReplanRequest(
            tenant=self.inp.tenant,
            run_id=self.inp.run_id,
            goal=replan.goal or self.plan.description or self.plan.name,
            plan=self.plan_json,
            failed_step=failure.path,
            error=failure.error,
            completed=completed,
            revision=len(self.revisions) + 1,
            model=replan.model,
            quotas=self.inp.quotas,
        )
        self._set_state("replanning")
        try:
            revised: dict[str, Any] = await workflow.execute_activity(
                RUN_REPLAN,
                request,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=["RepairExhausted"]),
            )
        except ActivityError as exc:
            error, _ = to_step_error(exc)
            self.replan_errors = (*self.replan_errors, {"type": error.type, "message": error.message})
            self._set_state("running")
            return None
        self._set_state("running")
        return revised

    def _adopt(self, revised: dict[str, Any], failure: StepFailed) -> None:
        """Switch to a revision: completed steps keep their records (never re-run), the rest retry."""
        self.plan = Plan.model_validate(revised)
        self.plan_json = revised
        self.current_hash = plan_hash(revised)
        self.revisions.append(
            Revision(
                revision=len(self.revisions) + 1,
                plan_hash=self.current_hash,
                reason=f"step {failure.path!r} failed: {failure.error.type}: {failure.error.message}",
                at=workflow.now().isoformat(),
            )
        )
        self.records = {k: r for k, r in self.records.items() if r.state == "completed"}
        self._deps_cache = {}  # the revision's own (the shared ones are the first plan's)
        self._event_schemas = _event_schemas(self.plan.steps)
        self._max_parallel = self._parallel_limit()
        if self.inp.search_attributes:
            workflow.upsert_search_attributes([SA_PLAN_HASH.value_set(self.current_hash)])

    async def _with_deadline(self, work: Any) -> None:
        assert self.plan.limits.deadline is not None
        deadline = datetime.fromisoformat(self.started_at) + timedelta(
            seconds=parse_duration(self.plan.limits.deadline)
        )
        remaining = max((deadline - workflow.now()).total_seconds(), 0.001)
        try:
            await asyncio.wait_for(work, timeout=remaining)
        except builtins.TimeoutError:
            raise StepFailed(
                "(run)", StepError("DeadlineExceeded", f"run exceeded its deadline of {self.plan.limits.deadline}")
            ) from None

    @workflow.query
    def status(self, items: bool = False) -> dict[str, Any]:
        """The run's ``RunStatus`` (executor.engine.run_status) as JSON; ``items``: each foreach item's steps."""
        run = {
            "run_id": self.inp.run_id,
            "tenant": self.inp.tenant,
            "session": self.inp.session,
            "plan_hash": self.current_hash,
            "revision": len(self.revisions),
            "revisions": [dataclasses.asdict(r) for r in self.revisions],
            "replan_errors": list(self.replan_errors),
            "paused": self.paused,
            "started_at": self.started_at,
            "executed_steps": self.executed,
            "continued_as_new": self.continued,
            "generation": self.inp.generation,
            "parent_run_id": parent_of(self.inp.run_id),
            "buffered_events": len(self.events),
            "error": error_dict(self.error),
            "failed_step": self.failed_step,
            "compensation_errors": list(self.compensation_errors),
        }
        state = self._public_state()
        return assemble(run=run, plan=self.plan, records=self.records, state=state, items=items).model_dump(mode="json")

    def _public_state(self) -> str:
        """running, or waiting when nothing executes and something sleeps or waits for an event."""
        if self.state == "running" and self._active == 0 and self._parked > 0:
            return "waiting"
        return self.state

    def _sync_listed(self) -> None:
        """Keep DuraplanStatus equal to the public state while the run is open (running <-> waiting)."""
        if not self._parked and self.state == self._listed:
            return  # nothing sleeps or waits: the public state is the listed one (every activity step, twice)
        unwinding = sys.exc_info()[1]
        if unwinding is not None and not isinstance(unwinding, Exception):
            return  # cancelled, drained for continue-as-new, or evicted: the state changes otherwise
        state = self._public_state()
        if state == self._listed or state not in ("running", "waiting") or not self.inp.search_attributes:
            return
        if self._since(_PATCH_LIST_WAITING):
            self._listed = state
            workflow.upsert_search_attributes([SA_STATUS.value_set(state)])

    @workflow.query
    def plan_view(self) -> dict[str, Any]:
        """The plan the run executes now (its latest revision), for drawing it: queries add no history."""
        return {"plan": self.plan_json, "plan_hash": self.current_hash, "revision": len(self.revisions)}

    @workflow.query
    def step_records(self) -> dict[str, Any]:
        """Every record by path, nested steps included."""
        return {path: record_dict(rec) for path, rec in self.records.items()}

    @workflow.update
    def send_event(self, event: EventRecord) -> SendEventResult:
        if event.event_id is not None and event.event_id in self._seen:
            return SendEventResult(accepted=True, duplicate=True, buffered=len(self.events))
        if event.event_id is not None:
            seen = self._seen
            if not isinstance(seen, set):  # the shared empty one (CarryMixin._restore)
                seen = self._seen = set(seen)
            seen.add(event.event_id)
            self.seen_event_ids.append(event.event_id)
            if len(self.seen_event_ids) > EVENT_ID_MEMORY:
                seen.discard(self.seen_event_ids.pop(0))
        event.received_at = workflow.now().isoformat()
        self.events.append(event)
        return SendEventResult(accepted=True, duplicate=False, buffered=len(self.events))

    @send_event.validator
    def _validate_event(self, event: EventRecord) -> None:
        if self.state in ("completed", "failed", "cancelled", "compensating"):
            raise ApplicationError(f"run is {self.state}; event {event.type!r} not accepted", type="RunStateError")
        schemas = self._event_schemas.get(event.type)
        if schemas is None:
            known = ", ".join(sorted(self._event_schemas)) or "none"
            raise ApplicationError(
                f"no wait_for_event step waits for event type {event.type!r} (waited types: {known})",
                type="UnknownEventType",
            )
        size = json_size(event.payload)  # UTF-8 bytes, as history stores it; measured once
        if self._quotas is not None and size > self._quotas.max_event_bytes:
            raise ApplicationError(
                f"payload of event {event.type!r} is {size} bytes; the tenant's quota max_event_bytes "
                f"is {self._quotas.max_event_bytes}",
                type="EventTooLarge",
            )
        for schema in schemas:
            errors = sorted(validator(schema).iter_errors(event.payload), key=str)
            if errors:
                first = errors[0]
                where = "".join(f"/{p}" for p in first.path) or "/"
                raise ApplicationError(
                    f"payload of event {event.type!r} invalid at {where}: {first.message}",
                    type="EventPayloadInvalid",
                )
        if event.event_id is not None and event.event_id in self._seen:
            return  # a resend: answered as a duplicate, whatever the buffer holds now
        check_buffer(self.events, event, size)
        check_consumer(self.plan.steps, self.records, self.events, event)

    @workflow.update
    def pause(self) -> str:
        self.paused = True
        if self.state == "running":
            self._set_state("paused")
        return self.state

    @workflow.update
    def resume(self) -> str:
        self.paused = False
        if self.state == "paused":
            self._set_state("running")
        return self.state

    def _scope(self, frame: Frame) -> dict[str, Any]:
        return {
            "input": self.inp.inputs,
            "steps": StepsView(self.records.get, frame),
            "run": self._run_meta(),
            **frame.extras,
        }

    def _run_meta(self) -> dict[str, Any]:
        """``run`` in expression scope (built when an expression is evaluated, not held per run)."""
        inp = self.inp
        return {
            "id": inp.run_id,
            "tenant": inp.tenant,
            "session": inp.session,
            "plan_hash": self.current_hash,
            "generation": inp.generation,
        }

    def _eval(self, expression: str, frame: Frame, where: str) -> Any:
        try:
            return evaluate(expression, self._scope(frame))
        except ExpressionError as exc:  # name the field: a step has several expressions
            raise ExpressionError(exc.expression, f"{exc.message} (in {where})") from None

    def _render(self, value: Any, frame: Frame, where: str) -> Any:
        try:
            return render(value, self._scope(frame))
        except ExpressionError as exc:
            raise ExpressionError(exc.expression, f"{exc.message} (in {where})") from None

    def _set_state(self, state: str) -> None:
        self.state = state
        self._listed = state
        # Closed runs are listed by Temporal's own execution status: no upsert (and no history
        # event) for final states. Runs recorded before this change did upsert: keep replaying them.
        final = state in ("completed", "failed", "cancelled")
        if self.inp.search_attributes and not (final and self._since(_PATCH_NO_FINAL_UPSERT)):
            workflow.upsert_search_attributes([SA_STATUS.value_set(state)])

    async def _carry_input(self) -> RunInput:
        return RunInput(
            plan=self.plan_json,
            plan_hash=self.current_hash,
            tenant=self.inp.tenant,
            session=self.inp.session,
            run_id=self.inp.run_id,
            inputs=self.inp.inputs,
            local_tools=self.inp.local_tools,
            generation=self.inp.generation,
            history_limit=self.inp.history_limit,
            search_attributes=self.inp.search_attributes,
            revisions=self.revisions,
            quotas=self.inp.quotas,
            tool_pins=self.inp.tool_pins,
            carry=await self._next_carry(),
            carry_limit=self.inp.carry_limit,
            engine=self.inp.engine,
            metered=self.inp.metered,
        )


def _event_schemas(steps: list[Step]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for step in all_steps(steps):
        if isinstance(step, WaitForEventStep):
            schemas = out.setdefault(step.event, [])
            if step.payload_schema is not None:
                schemas.append(step.payload_schema)
        elif isinstance(step, ScriptStep):  # a script's wait_for_event("x") names a literal type
            for event in sorted(analyse(step.code).events):
                out.setdefault(event, [])
    return out
