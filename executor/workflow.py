"""The one generic workflow: interprets any validated plan, durably.

Deterministic by construction: no I/O, no clock but ``workflow.now()``, no environment. Plans were
validated before start; here they are parsed (cheap) and walked. Every step result is recorded by
path (``fetch``, ``each[3].summarize``), so a continued-as-new run skips what already ran.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, assert_never

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TimeoutError,
)

with workflow.unsafe.imports_passed_through():
    import jsonschema

    from executor import activities as act
    from executor.config import SA_PLAN_HASH, SA_STATUS
    from executor.expressions import ExpressionError, evaluate, render, truthy
    from executor.fairness import TENANT_BUSY, throttle_delay
    from executor.models import (
        TERMINAL_STATES,
        Carry,
        CodeCall,
        CompensationCall,
        EventRecord,
        LlmCall,
        ReplanRequest,
        Revision,
        RunInput,
        SendEventResult,
        StepError,
        StepQuota,
        StepRecord,
        StepState,
        ToolCall,
        plan_hash,
        record_from_json,
        record_to_json,
    )
    from executor.sandbox import SandboxLimits
    from executor.validate import all_steps, step_references
    from schemas.plan import (
        CodeStep,
        FailStep,
        ForeachStep,
        LlmStep,
        Plan,
        Retry,
        SetStep,
        SleepStep,
        Step,
        SubplanStep,
        SwitchStep,
        ToolStep,
        WaitForEventStep,
        parse_duration,
    )

__all__ = ["WORKFLOW_NAME", "PlanWorkflow"]

WORKFLOW_NAME = "DuraplanRun"
DEFAULT_RETRY = Retry.model_validate({})
REMOTE_TIMEOUT = 600.0  # the reference product's default step timeout
LOCAL_TIMEOUT = 30.0
LOCAL_TIMEOUT_MAX = 60.0  # longer steps are never run as local activities
EVENT_ID_MEMORY = 10_000
# Local activities run inside one workflow task, which stays open while any is in flight. A
# steady stream of them (a big foreach) would keep it open past its timeout, so after this many
# in one task the next steps go to regular activities, letting the task complete.
LOCAL_PER_TASK = 100
_PATCH_NO_FINAL_UPSERT = "no-final-status-upsert"


class _StepFailed(Exception):
    """A step failed and its on_error says fail: the run fails (after compensation)."""

    def __init__(self, path: str, error: StepError) -> None:
        super().__init__(f"step {path!r} failed: {error.type}: {error.message}")
        self.path = path
        self.error = error


class _Drained(BaseException):
    """Unwinds a block for continue-as-new; BaseException so no step handler swallows it."""


@dataclass
class _Frame:
    prefix: str
    visible: dict[str, str]  # step id -> record path
    extras: dict[str, Any] = field(default_factory=dict)

    def child(self, prefix: str, steps: list[Step], **extras: Any) -> _Frame:
        visible = dict(self.visible)
        visible.update({s.id: prefix + s.id for s in steps})
        return _Frame(prefix, visible, {**self.extras, **extras})


class _StepsView(dict[str, Any]):
    """``steps`` in expression scope, built lazily: JMESPath looks fields up with ``.get``."""

    def __init__(self, wf: PlanWorkflow, frame: _Frame) -> None:
        super().__init__()
        self._wf = wf
        self._frame = frame

    def get(self, key: str, default: Any = None) -> Any:
        path = self._frame.visible.get(key)
        rec = self._wf.records.get(path) if path else None
        if rec is None:
            return default
        err = {"type": rec.error.type, "message": rec.error.message} if rec.error else None
        return {"output": rec.output, "status": rec.state, "error": err}

    def __getitem__(self, key: str) -> Any:
        return self.get(key)


@workflow.defn(name=WORKFLOW_NAME)
class PlanWorkflow:
    @workflow.init
    def __init__(self, inp: RunInput) -> None:
        self.inp = inp
        self.plan = Plan.model_validate(inp.plan)
        self.plan_json = inp.plan
        self.current_hash = inp.plan_hash
        self.revisions: list[Revision] = list(inp.revisions) or [
            Revision(revision=1, plan_hash=inp.plan_hash, reason=None, at=workflow.now().isoformat())
        ]
        self.replan_errors: list[dict[str, str]] = []
        carry = inp.carry or Carry()
        self.records: dict[str, StepRecord] = {k: record_from_json(v) for k, v in carry.records.items()}
        self.events: list[EventRecord] = carry.events
        self.seen_event_ids: list[str] = carry.seen_event_ids
        self._seen = set(carry.seen_event_ids)
        self.compensations: list[CompensationCall] = carry.compensations
        self.executed = carry.executed_steps
        self.paused = carry.paused
        self.started_at = carry.started_at or workflow.now().isoformat()
        self.continued = carry.continued
        self.state = "paused" if self.paused else "running"
        self.error: StepError | None = None
        self.failed_step: str | None = None
        self.compensation_errors: list[dict[str, str]] = []
        self._active = 0
        self._draining = False
        self._quotas = inp.quotas
        self._max_parallel = self._parallel_limit()
        self._local_tools = set(inp.local_tools)
        self._step_quota = (
            None if inp.quotas is None else StepQuota(inp.quotas.max_inflight_steps, inp.quotas.max_step_output_bytes)
        )
        self._run_meta = {
            "id": inp.run_id,
            "tenant": inp.tenant,
            "session": inp.session,
            "plan_hash": inp.plan_hash,
            "generation": inp.generation,
        }
        self._event_schemas = _event_schemas(self.plan.steps)
        self._deps_cache: dict[int, set[str]] = {}
        self._task_mark = -1  # history length when the current workflow task started
        self._local_in_task = 0

    # ---- entry point -------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: RunInput) -> Any:
        try:
            output = await self._run_plan()
        except _Drained:
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(self._carry_input())
        except _StepFailed as failure:
            self.error, self.failed_step = failure.error, failure.path
            await self._compensate("failed")
            raise ApplicationError(
                str(failure),
                {"step": failure.path, "type": failure.error.type, "message": failure.error.message},
                type=failure.error.type,
                non_retryable=True,
            ) from None
        except asyncio.CancelledError:
            self.error = StepError("Cancelled", "run was cancelled")
            await self._compensate("cancelled")
            raise
        self._set_state("completed")
        await workflow.wait_condition(workflow.all_handlers_finished)
        return output

    async def _run_plan(self) -> Any:
        """Run the current revision; on terminal failure, replan (if the plan opts in) and go on."""
        while True:
            frame = _Frame("", {s.id: s.id for s in self.plan.steps})
            try:
                await self._with_deadline(self._run_block(self.plan.steps, frame))
                return self._render(self.plan.output, frame, "/output")
            except _StepFailed as failure:
                replan = self.plan.replan
                if replan is None or len(self.revisions) > replan.max_revisions or failure.path == "(run)":
                    raise
                revised = await self._replan(failure)
                if revised is None:
                    raise
                self._adopt(revised, failure)

    async def _replan(self, failure: _StepFailed) -> dict[str, Any] | None:
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
        )
        self._set_state("replanning")
        try:
            revised: dict[str, Any] = await workflow.execute_activity(
                act.run_replan,
                request,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(maximum_attempts=3, non_retryable_error_types=["RepairExhausted"]),
            )
        except ActivityError as exc:
            error, _ = _failure(exc)
            self.replan_errors.append({"type": error.type, "message": error.message})
            self._set_state("running")
            return None
        self._set_state("running")
        return revised

    def _adopt(self, revised: dict[str, Any], failure: _StepFailed) -> None:
        """Switch to a revision: completed steps keep their records (never re-run), the rest retry."""
        self.plan = Plan.model_validate(revised)
        self.plan_json = revised
        self.current_hash = plan_hash(revised)
        self._run_meta["plan_hash"] = self.current_hash
        self.revisions.append(
            Revision(
                revision=len(self.revisions) + 1,
                plan_hash=self.current_hash,
                reason=f"step {failure.path!r} failed: {failure.error.type}: {failure.error.message}",
                at=workflow.now().isoformat(),
            )
        )
        self.records = {k: r for k, r in self.records.items() if r.state == "completed"}
        self._deps_cache.clear()
        self._event_schemas = _event_schemas(self.plan.steps)
        self._max_parallel = self._parallel_limit()
        if self.inp.search_attributes:
            workflow.upsert_search_attributes([SA_PLAN_HASH.value_set(self.current_hash)])

    async def _with_deadline(self, work: Any) -> None:
        if self.plan.limits.deadline is None:
            await work
            return
        deadline = datetime.fromisoformat(self.started_at) + timedelta(
            seconds=parse_duration(self.plan.limits.deadline)
        )
        remaining = max((deadline - workflow.now()).total_seconds(), 0.001)
        try:
            await asyncio.wait_for(work, timeout=remaining)
        except builtins.TimeoutError:
            raise _StepFailed(
                "(run)", StepError("DeadlineExceeded", f"run exceeded its deadline of {self.plan.limits.deadline}")
            ) from None

    # ---- handlers ----------------------------------------------------------------------------

    @workflow.query
    def status(self) -> dict[str, Any]:
        top = [self._step_view(s, s.id) for s in self.plan.steps]
        return {
            "run_id": self.inp.run_id,
            "tenant": self.inp.tenant,
            "session": self.inp.session,
            "plan_name": self.plan.name,
            "plan_version": self.plan.version,
            "plan_hash": self.current_hash,
            "revision": len(self.revisions),
            "revisions": [dataclasses.asdict(r) for r in self.revisions],
            "replan_errors": self.replan_errors,
            "state": self._public_state(),
            "paused": self.paused,
            "started_at": self.started_at,
            "executed_steps": self.executed,
            "continued_as_new": self.continued,
            "generation": self.inp.generation,
            "buffered_events": len(self.events),
            "error": _error_dict(self.error),
            "failed_step": self.failed_step,
            "compensation_errors": self.compensation_errors,
            "steps": top,
        }

    def _public_state(self) -> str:
        """running, or waiting when nothing executes and something sleeps or waits for an event."""
        if (
            self.state == "running"
            and self._active == 0
            and any(r.state in ("sleeping", "waiting") for r in self.records.values())
        ):
            return "waiting"
        return self.state

    @workflow.query
    def step_records(self) -> dict[str, Any]:
        """Every record by path, nested steps included."""
        return {path: _record_dict(rec) for path, rec in self.records.items()}

    @workflow.update
    def send_event(self, event: EventRecord) -> SendEventResult:
        if event.event_id is not None and event.event_id in self._seen:
            return SendEventResult(accepted=True, duplicate=True, buffered=len(self.events))
        if event.event_id is not None:
            self._seen.add(event.event_id)
            self.seen_event_ids.append(event.event_id)
            if len(self.seen_event_ids) > EVENT_ID_MEMORY:
                self._seen.discard(self.seen_event_ids.pop(0))
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
        if self._quotas is not None:
            size = len(json.dumps(event.payload).encode())
            if size > self._quotas.max_event_bytes:
                raise ApplicationError(
                    f"payload of event {event.type!r} is {size} bytes; the tenant's quota max_event_bytes "
                    f"is {self._quotas.max_event_bytes}",
                    type="EventTooLarge",
                )
        for schema in schemas:
            errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(event.payload), key=str)
            if errors:
                first = errors[0]
                where = "".join(f"/{p}" for p in first.path) or "/"
                raise ApplicationError(
                    f"payload of event {event.type!r} invalid at {where}: {first.message}",
                    type="EventPayloadInvalid",
                )

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

    # ---- scheduling --------------------------------------------------------------------------

    async def _run_block(self, steps: list[Step], frame: _Frame) -> None:
        """Run a block of sibling steps as a DAG: every ready step starts at once."""
        ids = {s.id for s in steps}
        waiting = {s.id: s for s in steps}
        running: dict[str, asyncio.Task[None]] = {}
        try:
            while waiting or running:
                if not self._draining:
                    for sid, step in list(waiting.items()):
                        if all(self._done(frame.visible[d]) for d in self._deps(step, ids)):
                            del waiting[sid]
                            running[sid] = asyncio.create_task(self._run_step(step, frame))
                if not running:
                    if not self._draining:  # unreachable for validated plans (no cycles)
                        raise _StepFailed(
                            frame.prefix or "(plan)", StepError("Deadlock", f"steps {sorted(waiting)} can never start")
                        )
                    raise _Drained()
                done, _ = await workflow.wait(list(running.values()), return_when=asyncio.FIRST_COMPLETED)
                for sid, task in list(running.items()):
                    if task in done:
                        del running[sid]
                        task.result()
        except BaseException:
            await _cancel_all(running.values())
            raise

    def _deps(self, step: Step, siblings: set[str]) -> set[str]:
        key = id(step)
        if key not in self._deps_cache:
            self._deps_cache[key] = (_step_refs(step) & siblings) - {step.id}
        return self._deps_cache[key]

    def _done(self, path: str) -> bool:
        rec = self.records.get(path)
        return rec is not None and rec.state in TERMINAL_STATES

    async def _run_step(self, step: Step, frame: _Frame) -> None:
        path = frame.prefix + step.id
        rec = self.records.get(path)
        if rec is not None and rec.state in TERMINAL_STATES:
            return  # ran before continue-as-new
        rec = self.records.setdefault(path, StepRecord())
        try:
            if step.when is not None and not truthy(self._eval(step.when, frame, "/when")):
                rec.state, rec.ended_at = "skipped", workflow.now().isoformat()
                return
            if self.paused:
                await workflow.wait_condition(lambda: not self.paused or self._draining)
            if self._draining:
                raise _Drained()
            if not isinstance(step, ToolStep | CodeStep | LlmStep):  # those start when they get a slot
                rec.started_at = rec.started_at or workflow.now().isoformat()
                rec.state = "running"
            rec.output = await self._execute(step, path, frame, rec)
        except _StepFailed as failure:
            if step.on_error == "continue":
                self._finish(rec, "failed", failure.error)
                return
            self._finish(rec, "failed", failure.error)
            raise
        except ExpressionError as exc:
            error = StepError("ExpressionError", str(exc))
            self._finish(rec, "failed", error)
            if step.on_error == "continue":
                return
            raise _StepFailed(path, error) from None
        self._finish(rec, "completed", None)
        if step.compensate is not None:
            c = step.compensate
            self.compensations.append(
                CompensationCall(
                    path=path,
                    tool=c.tool,
                    args=self._render(c.args, frame, "/compensate/args"),
                    code=c.code,
                    inputs=self._render(c.inputs, frame, "/compensate/inputs"),
                )
            )
        if self._should_continue_as_new():
            self._draining = True

    def _finish(self, rec: StepRecord, state: StepState, error: StepError | None) -> None:
        rec.state, rec.error, rec.ended_at = state, error, workflow.now().isoformat()

    async def _execute(self, step: Step, path: str, frame: _Frame, rec: StepRecord) -> Any:
        match step:
            case ToolStep():
                return await self._activity_step(step, path, frame, rec)
            case CodeStep():
                return await self._activity_step(step, path, frame, rec)
            case LlmStep():
                return await self._activity_step(step, path, frame, rec)
            case SetStep():
                self._count_step(path)
                return self._render(step.value, frame, "/value")
            case FailStep():
                self._count_step(path)
                message = self._render(step.message, frame, "/message")
                raise _StepFailed(path, StepError(step.error_type, str(message)))
            case SleepStep():
                return await self._sleep(step, path, frame, rec)
            case WaitForEventStep():
                return await self._wait_for_event(step, path, rec)
            case ForeachStep():
                return await self._foreach(step, path, frame, rec)
            case SwitchStep():
                return await self._switch(step, path, frame, rec)
            case SubplanStep():
                return await self._subplan(step, path, frame, rec)
            case _:
                assert_never(step)

    def _parallel_limit(self) -> int:
        """The plan's max_parallel; with quotas, never above the tenant's in-flight cap, so one
        run's fan-out queues in its own workflow instead of at the worker's gate."""
        if self._quotas is None:
            return self.plan.limits.max_parallel
        return min(self.plan.limits.max_parallel, self._quotas.max_inflight_steps)

    def _count_step(self, path: str) -> None:
        self.executed += 1
        if self.executed > self.plan.limits.max_steps:
            raise _StepFailed(
                path,
                StepError("StepBudgetExceeded", f"run exceeded limits.max_steps={self.plan.limits.max_steps}"),
            )
        if self._quotas is not None and self.executed > self._quotas.max_steps:
            raise _StepFailed(
                path,
                StepError(
                    "StepBudgetExceeded",
                    f"run exceeded the tenant's quota max_steps_per_run={self._quotas.max_steps}",
                ),
            )

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return info.is_continue_as_new_suggested() or info.get_current_history_length() >= self.inp.history_limit

    # ---- activity steps ----------------------------------------------------------------------

    async def _activity_step(
        self, step: ToolStep | CodeStep | LlmStep, path: str, frame: _Frame, rec: StepRecord
    ) -> Any:
        local = self._is_local(step)
        timeout = parse_duration(step.timeout) if step.timeout is not None else None
        policy = step.retry or DEFAULT_RETRY
        # `while`: every waiter whose condition holds wakes in the same pass; recheck after waking.
        while self._active >= self._max_parallel:
            await workflow.wait_condition(lambda: self._active < self._max_parallel)
        self._active += 1
        rec.started_at = rec.started_at or workflow.now().isoformat()
        rec.state = "running"
        try:
            self._count_step(path)
            attempt = rec.attempts
            throttled = 0
            while True:
                attempt += 1
                rec.attempts = attempt
                rec.state = "running"
                try:
                    result = await self._call(step, path, frame, attempt, local and self._local_slot(), timeout)
                    if isinstance(step, LlmStep):
                        rec.detail = {"model": result.get("model"), "usage": result.get("usage")}
                        return result.get("content")
                    return result
                except (ActivityError, ApplicationError, TimeoutError) as exc:
                    # (a replayed local activity timeout arrives as a bare TimeoutError)
                    if _cancelled(exc):
                        raise asyncio.CancelledError() from None  # the run is being cancelled: no retry
                    error, retry_after = _failure(exc)
                if error.type == TENANT_BUSY:
                    # Refused before it ran (the tenant is at its in-flight cap on that worker):
                    # not an attempt; wait and dispatch again.
                    attempt -= 1
                    rec.attempts = attempt
                    rec.state = "throttled"
                    throttled += 1
                    await workflow.sleep(throttle_delay(throttled))
                    continue
                rec.error = error
                if not error.retryable or error.type in policy.non_retryable or attempt >= policy.max_attempts:
                    raise _StepFailed(path, error)
                rec.state = "retrying"
                delay = min(
                    parse_duration(policy.initial_interval) * policy.backoff ** (attempt - 1),
                    parse_duration(policy.max_interval),
                )
                await workflow.sleep(max(delay, retry_after or 0.0))
        finally:
            self._active -= 1

    def _local_slot(self) -> bool:
        length = workflow.info().get_current_history_length()
        if length != self._task_mark:
            self._task_mark, self._local_in_task = length, 0
        if self._local_in_task >= LOCAL_PER_TASK:
            return False
        self._local_in_task += 1
        return True

    def _is_local(self, step: ToolStep | CodeStep | LlmStep) -> bool:
        if step.execution != "auto":
            return step.execution == "local"
        if step.timeout is not None and parse_duration(step.timeout) > LOCAL_TIMEOUT_MAX:
            return False
        match step:
            case CodeStep():
                return True
            case ToolStep():
                return step.tool in self._local_tools
            case LlmStep():
                return False

    async def _call(
        self,
        step: ToolStep | CodeStep | LlmStep,
        path: str,
        frame: _Frame,
        attempt: int,
        local: bool,
        timeout: float | None,
    ) -> Any:
        run_id, tenant = self.inp.run_id, self.inp.tenant
        arg: ToolCall | CodeCall | LlmCall
        match step:
            case ToolStep():
                name = act.run_tool
                arg = ToolCall(
                    tenant,
                    run_id,
                    path,
                    attempt,
                    self._idempotency_key(path),
                    step.tool,
                    self._render(step.args, frame, "/args"),
                    self._step_quota,
                    self.inp.tool_pins.get(step.tool),
                )
            case CodeStep():
                name = act.run_code
                arg = CodeCall(
                    tenant,
                    run_id,
                    path,
                    step.code,
                    self._render(step.inputs, frame, "/inputs"),
                    # a step's own limits were checked against the quotas at submit; unset ones
                    # default to the sandbox's, lowered to the tenant's quota
                    step.memory_mb or self._code_default("code_memory_mb", SandboxLimits.memory_mb),
                    step.cpu_seconds or self._code_default("code_cpu_seconds", SandboxLimits.cpu_seconds),
                    self._step_quota,
                )
                if timeout is None and step.cpu_seconds is not None:
                    timeout = step.cpu_seconds + 5.0
            case LlmStep():
                name = act.run_llm
                arg = LlmCall(
                    tenant,
                    run_id,
                    path,
                    prompt=str(self._render(step.prompt, frame, "/prompt")),
                    system=None if step.system is None else str(self._render(step.system, frame, "/system")),
                    model=step.model,
                    output_schema=step.output_schema,
                    temperature=step.temperature,
                    max_tokens=step.max_tokens,
                    timeout_s=timeout,
                    quota=self._step_quota,
                )
        return await self._dispatch(name, arg, local, timeout)

    async def _dispatch(self, fn: Any, arg: Any, local: bool, timeout: float | None) -> Any:
        once = RetryPolicy(maximum_attempts=1)  # the workflow owns retries: it shows them in status
        if local:
            return await workflow.execute_local_activity(
                fn, arg, start_to_close_timeout=timedelta(seconds=timeout or LOCAL_TIMEOUT), retry_policy=once
            )
        return await workflow.execute_activity(
            fn,
            arg,
            start_to_close_timeout=timedelta(seconds=timeout or REMOTE_TIMEOUT),
            # A killed worker is noticed in seconds, not after the whole step timeout.
            heartbeat_timeout=timedelta(seconds=act.HEARTBEAT_TIMEOUT),
            retry_policy=once,
        )

    def _code_default(self, quota: str, default: float) -> Any:
        if self._quotas is None:
            return None
        return min(default, getattr(self._quotas, quota))

    def _idempotency_key(self, path: str) -> str:
        return f"{self.inp.tenant}/{self.inp.run_id}/{self.inp.generation}/{path}"

    # ---- timers and events -------------------------------------------------------------------

    async def _sleep(self, step: SleepStep, path: str, frame: _Frame, rec: StepRecord) -> None:
        self._count_step(path)
        if rec.detail is None:
            if step.until is not None:
                wake = _parse_time(str(self._render(step.until, frame, "/until")), path)
            else:
                assert step.duration is not None  # the validator requires one of the two
                wake = workflow.now() + timedelta(seconds=parse_duration(step.duration))
            rec.detail = {"wake_at": wake.isoformat()}
        wake = datetime.fromisoformat(rec.detail["wake_at"])
        rec.state = "sleeping"
        remaining = (wake - workflow.now()).total_seconds()
        if remaining > 0:
            try:
                await workflow.wait_condition(lambda: self._draining, timeout=remaining)
            except builtins.TimeoutError:
                return None
            raise _Drained()
        return None

    async def _wait_for_event(self, step: WaitForEventStep, path: str, rec: StepRecord) -> Any:
        self._count_step(path)
        rec.state = "waiting"
        if rec.detail is None:
            rec.detail = {"event": step.event}
        found = self._take_event(step.event)
        if found is None:
            limit = parse_duration(step.timeout) if step.timeout is not None else None
            remaining = None
            if limit is not None and rec.started_at is not None:
                started = datetime.fromisoformat(rec.started_at)
                remaining = max(limit - (workflow.now() - started).total_seconds(), 0.001)
            try:
                await workflow.wait_condition(
                    lambda: self._draining or any(e.type == step.event for e in self.events), timeout=remaining
                )
            except builtins.TimeoutError:
                if step.on_timeout == "continue":
                    rec.detail["timed_out"] = True
                    return None
                raise _StepFailed(
                    path, StepError("EventTimeout", f"no {step.event!r} event within {step.timeout}")
                ) from None
            found = self._take_event(step.event)
            if found is None:
                raise _Drained()
        rec.detail["event_id"] = found.event_id
        rec.detail["received_at"] = found.received_at
        return found.payload

    def _take_event(self, event_type: str) -> EventRecord | None:
        for i, e in enumerate(self.events):
            if e.type == event_type:
                return self.events.pop(i)
        return None

    # ---- containers --------------------------------------------------------------------------

    async def _foreach(self, step: ForeachStep, path: str, frame: _Frame, rec: StepRecord) -> list[Any]:
        items = self._eval(step.items, frame, "/items")
        if not isinstance(items, list):
            raise _StepFailed(path, StepError("ExpressionError", f"items must be a list, got {type(items).__name__}"))
        rec.detail = {"items": len(items)}
        running: dict[int, asyncio.Task[None]] = {}
        todo = list(range(len(items)))
        try:
            while todo or running:
                while todo and len(running) < step.max_concurrency and not self._draining:
                    i = todo.pop(0)
                    running[i] = asyncio.create_task(self._foreach_item(step, path, frame, i, items[i]))
                if not running:
                    raise _Drained()
                done, _ = await workflow.wait(list(running.values()), return_when=asyncio.FIRST_COMPLETED)
                for i, task in list(running.items()):
                    if task in done:
                        del running[i]
                        task.result()
        except BaseException:
            await _cancel_all(running.values())
            raise
        return [self.records[f"{path}[{i}]"].output for i in range(len(items))]

    async def _foreach_item(self, step: ForeachStep, path: str, frame: _Frame, index: int, item: Any) -> None:
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

    async def _switch(self, step: SwitchStep, path: str, frame: _Frame, rec: StepRecord) -> Any:
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

    async def _subplan(self, step: SubplanStep, path: str, frame: _Frame, rec: StepRecord) -> Any:
        self._count_step(path)
        child_plan = step.plan.model_dump(mode="json", by_alias=True, exclude_unset=True)
        inputs = self._render(step.inputs, frame, "/inputs")
        problems = [e.message for e in jsonschema.Draft202012Validator(step.plan.inputs).iter_errors(inputs)]
        if problems:
            raise _StepFailed(path, StepError("InputsInvalid", "; ".join(problems)))
        child_id = f"{self.inp.run_id}.{path}"
        while self._active >= self._max_parallel:
            await workflow.wait_condition(lambda: self._active < self._max_parallel)
        self._active += 1
        try:
            return await workflow.execute_child_workflow(
                PlanWorkflow.run,
                RunInput(
                    plan=child_plan,
                    plan_hash=plan_hash(child_plan),
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
                ),
                id=f"{self.inp.tenant}/{child_id}/{self.inp.generation}",
                search_attributes=workflow.info().typed_search_attributes if self.inp.search_attributes else None,
            )
        except ChildWorkflowError as exc:
            error, _ = _failure(exc)
            raise _StepFailed(path, error) from None
        finally:
            self._active -= 1

    # ---- compensation ------------------------------------------------------------------------

    async def _compensate(self, final_state: str) -> None:
        if self.compensations:
            self._set_state("compensating")
        while self.compensations:
            call = self.compensations.pop()  # reverse completion order
            rec = self.records.get(call.path)
            try:
                await self._compensate_one(call)
                if rec is not None:
                    rec.state = "compensated"
            except _StepFailed as failure:
                self.compensation_errors.append(
                    {"step": call.path, "type": failure.error.type, "message": failure.error.message}
                )
        self._set_state(final_state)

    async def _compensate_one(self, call: CompensationCall) -> None:
        for attempt in range(1, DEFAULT_RETRY.max_attempts + 1):
            try:
                if call.tool is not None:
                    arg: ToolCall | CodeCall = ToolCall(
                        self.inp.tenant,
                        self.inp.run_id,
                        f"{call.path}#compensate",
                        attempt,
                        self._idempotency_key(f"{call.path}#compensate"),
                        call.tool,
                        call.args,
                        pin=self.inp.tool_pins.get(call.tool),
                    )
                    await self._dispatch(act.run_tool, arg, call.tool in self._local_tools, None)
                else:
                    assert call.code is not None
                    arg = CodeCall(self.inp.tenant, self.inp.run_id, f"{call.path}#compensate", call.code, call.inputs)
                    await self._dispatch(act.run_code, arg, True, None)
                return
            except (ActivityError, ApplicationError, TimeoutError) as exc:
                error, _ = _failure(exc)
                if not error.retryable or attempt == DEFAULT_RETRY.max_attempts:
                    raise _StepFailed(call.path, error) from None
                await workflow.sleep(parse_duration(DEFAULT_RETRY.initial_interval) * 2 ** (attempt - 1))

    # ---- helpers -----------------------------------------------------------------------------

    def _scope(self, frame: _Frame) -> dict[str, Any]:
        return {"input": self.inp.inputs, "steps": _StepsView(self, frame), "run": self._run_meta, **frame.extras}

    def _eval(self, expression: str, frame: _Frame, where: str) -> Any:
        try:
            return evaluate(expression, self._scope(frame))
        except ExpressionError as exc:  # name the field: a step has several expressions
            raise ExpressionError(exc.expression, f"{exc.message} (in {where})") from None

    def _render(self, value: Any, frame: _Frame, where: str) -> Any:
        try:
            return render(value, self._scope(frame))
        except ExpressionError as exc:
            raise ExpressionError(exc.expression, f"{exc.message} (in {where})") from None

    def _set_state(self, state: str) -> None:
        self.state = state
        # Closed runs are listed by Temporal's own execution status: no upsert (and no history
        # event) for final states. Runs recorded before this change did upsert: keep replaying them.
        final = state in ("completed", "failed", "cancelled")
        if self.inp.search_attributes and not (final and workflow.patched(_PATCH_NO_FINAL_UPSERT)):
            workflow.upsert_search_attributes([SA_STATUS.value_set(state)])

    def _carry_input(self) -> RunInput:
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
            carry=Carry(
                records={k: record_to_json(v) for k, v in _compact(self.records).items()},
                events=self.events,
                seen_event_ids=self.seen_event_ids,
                compensations=self.compensations,
                executed_steps=self.executed,
                paused=self.paused,
                started_at=self.started_at,
                continued=self.continued + 1,
            ),
        )

    def _step_view(self, step: Step, path: str) -> dict[str, Any]:
        rec = self.records.get(path) or StepRecord()
        view = {"id": step.id, "kind": step.kind, **_record_dict(rec)}
        if isinstance(step, ForeachStep) and rec.detail and "items" in rec.detail:
            done = sum(1 for i in range(rec.detail["items"]) if self._done(f"{path}[{i}]"))
            view["progress"] = {
                "done": done if rec.state != "completed" else rec.detail["items"],
                "total": rec.detail["items"],
            }
        return view


# ---- module helpers ----------------------------------------------------------------------------


def _compact(records: dict[str, StepRecord]) -> dict[str, StepRecord]:
    """Records the next run needs: a finished foreach or foreach item stands for what is inside."""
    finished_loops = {k for k, r in records.items() if r.state == "completed" and r.detail and "items" in r.detail}
    finished_items = {k for k, r in records.items() if k.endswith("]") and r.state == "completed"}
    out: dict[str, StepRecord] = {}
    for key, rec in records.items():
        if rec.state == "pending" or _inside(key, finished_loops, finished_items):
            continue
        out[key] = rec
    return out


def _inside(key: str, loops: set[str], items: set[str]) -> bool:
    for i, ch in enumerate(key):
        if ch == "[" and key[:i] in loops:
            return True
        if ch == "." and i > 0 and key[i - 1] == "]" and key[:i] in items:
            return True
    return False


async def _cancel_all(tasks: Any) -> None:
    pending = [t for t in tasks if not t.done()]
    for t in pending:
        t.cancel()
    for t in pending:
        with contextlib.suppress(BaseException):  # the first failure is already propagating
            await t


def _cancelled(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, CancelledError):
            return True
        cause = cause.cause if isinstance(cause, ActivityError | ChildWorkflowError) else None
    return False


def _failure(exc: BaseException) -> tuple[StepError, float | None]:
    """Translate a Temporal failure chain into the step's error and an optional retry-after."""
    cause: BaseException | None = exc
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        retry_after = None
        if cause.details and isinstance(cause.details[0], dict):
            retry_after = cause.details[0].get("retry_after")
        return StepError(cause.type or "Error", cause.message, not cause.non_retryable), retry_after
    if isinstance(cause, TimeoutError):
        return StepError("StepTimeout", f"step timed out ({cause.type.name if cause.type else 'timeout'})", True), None
    return StepError(type(cause).__name__, str(cause), True), None


def _step_refs(step: Step) -> set[str]:
    """Step ids this step waits for: its references and depends_on, nested steps' included."""
    return step_references(step)


def _event_schemas(steps: list[Step]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for step in all_steps(steps):
        if isinstance(step, WaitForEventStep):
            schemas = out.setdefault(step.event, [])
            if step.payload_schema is not None:
                schemas.append(step.payload_schema)
    return out


def _parse_time(value: str, path: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _StepFailed(path, StepError("ExpressionError", f"until {value!r} is not an ISO-8601 timestamp")) from None
    if parsed.tzinfo is None:
        raise _StepFailed(path, StepError("ExpressionError", f"until {value!r} has no timezone"))
    return parsed


def _error_dict(error: StepError | None) -> dict[str, Any] | None:
    return None if error is None else {"type": error.type, "message": error.message}


def _record_dict(rec: StepRecord) -> dict[str, Any]:
    return {
        "state": rec.state,
        "attempts": rec.attempts,
        "started_at": rec.started_at,
        "ended_at": rec.ended_at,
        "error": _error_dict(rec.error),
        "output_preview": _preview(rec.output),
        "detail": rec.detail,
    }


def _preview(value: Any, limit: int = 200) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"
