"""Step kinds: activity steps (tool, code, llm), set, fail, sleep and wait_for_event.

Containers (foreach, switch, subplan) are in containers.py; the exhaustive ``match`` over every
kind is ``_execute`` here.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import math
import sys
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any, assert_never

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from executor.engine.base import EngineBase
from executor.engine.clock import now_iso
from executor.engine.contract import (
    CODE_CPU_SECONDS,
    CODE_MEMORY_MB,
    HEARTBEAT_TIMEOUT,
    RUN_CODE,
    RUN_LLM,
    RUN_TOOL,
    TASK_CUT,
    TENANT_BUSY,
)
from executor.engine.frames import Drained, Frame, StepFailed
from executor.engine.limits import MAX_ACTIVITY_INPUT_BYTES, MAX_STEP_OUTPUT_BYTES, bounded_text, oversize
from executor.engine.models import CodeCall, EventRecord, LlmCall, StepError, StepRecord, ToolCall
from executor.engine.plans import plan_refs
from executor.engine.retry import (
    DEFAULT_RETRY,
    MAX_WORKER_LOSSES,
    backoff_delay,
    cancelled,
    throttle_delay,
    to_step_error,
    worker_lost,
)
from schemas.plan import (
    CodeStep,
    FailStep,
    ForeachStep,
    LlmStep,
    Retry,
    ScriptStep,
    SetStep,
    SleepStep,
    Step,
    SubplanStep,
    SwitchStep,
    ToolStep,
    WaitForEventStep,
    parse_duration,
)

__all__ = [
    "LOCAL_PER_TASK",
    "LOCAL_TIMEOUT",
    "LOCAL_TIMEOUT_MAX",
    "PATCH_CLAMP_RETRY_AFTER",
    "PATCH_PAYLOAD_GUARD",
    "PATCH_WORKER_LOSS",
    "REMOTE_TIMEOUT",
    "StepsMixin",
]

PATCH_CLAMP_RETRY_AFTER = "clamp-retry-after"
PATCH_WORKER_LOSS = "worker-loss-not-an-attempt"
PATCH_PAYLOAD_GUARD = "payload-guard"
REMOTE_TIMEOUT = 600.0  # the reference product's default step timeout
LOCAL_TIMEOUT = 30.0
LOCAL_TIMEOUT_MAX = 60.0  # longer steps are never run as local activities
# Local activities run inside one workflow task, which stays open while any is in flight. A
# steady stream of them (a big foreach) would hold it open for seconds (Temporal's core only
# heartbeats it every 80% of its timeout), and signals, updates, queries and cancellation all
# wait for the task to end. So after this many in one task the task is cut: runs before engine
# version 2 send every further step of the task to a regular activity; later ones schedule one
# empty activity (``TASK_CUT``) and wait for the next task, which its completion starts as soon as
# the local activities in flight have finished (a timer would do it with fewer events, but timers
# fire on the server's timer tick: ~1 s on the dev server; a step of the plan as the cut would
# keep every other step waiting for as long as that step runs).
LOCAL_PER_TASK = 100
TASK_CUT_ENGINE = 2
LISTING_DEFERRED_ENGINE = 5  # see StepsMixin._park


# The workflow owns retries (it shows them in status): each attempt is one activity attempt. One
# policy for every dispatch (the SDK only reads it).
_ONCE = RetryPolicy(maximum_attempts=1)
_LOCAL_LIMIT, _REMOTE_LIMIT = timedelta(seconds=LOCAL_TIMEOUT), timedelta(seconds=REMOTE_TIMEOUT)


def _task_ended(started_at: int) -> bool:
    return workflow.info().get_current_history_length() != started_at


async def _value(value: Any) -> Any:
    return value


class StepsMixin(EngineBase):
    def _execute(self, step: Step, path: str, frame: Frame, rec: StepRecord) -> Awaitable[Any]:
        """What runs the step, to be awaited at once. A plain function handing over the kind's
        coroutine, not a coroutine awaiting it: a step that waits (for an event, a timer, an
        activity) holds one suspended frame less, which thousands of waiting runs add up."""
        match step:
            case ToolStep():
                return self._activity_step(step, path, frame, rec)
            case CodeStep():
                return self._activity_step(step, path, frame, rec)
            case LlmStep():
                return self._activity_step(step, path, frame, rec)
            case ScriptStep():
                return self._script(step, path, frame, rec)
            case SetStep():
                self._count_step(path)
                return _value(self._guard_output(path, self._render(step.value, frame, "/value")))
            case FailStep():
                self._count_step(path)
                message = self._render(step.message, frame, "/message")
                raise StepFailed(path, StepError(step.error_type, bounded_text(str(message))))
            case SleepStep():
                return self._sleep(step, path, frame, rec)
            case WaitForEventStep():
                return self._wait_for_event(step, path, rec)
            case ForeachStep():
                return self._foreach(step, path, frame, rec)
            case SwitchStep():
                return self._switch(step, path, frame, rec)
            case SubplanStep():
                return self._subplan(step, path, frame, rec)
            case _:
                assert_never(step)

    async def _activity_step(
        self, step: ToolStep | CodeStep | LlmStep, path: str, frame: Frame, rec: StepRecord
    ) -> Any:
        local = self._is_local(step)
        timeout = parse_duration(step.timeout) if step.timeout is not None else None
        policy = step.retry or DEFAULT_RETRY
        # `while`: every waiter whose condition holds wakes in the same pass; recheck after waking.
        while self._active >= self._max_parallel:
            await workflow.wait_condition(lambda: self._active < self._max_parallel)
        self._active += 1
        self._sync_listed()
        rec.started_at = rec.started_at or now_iso()
        rec.state = "running"
        try:
            self._count_step(path)
            attempt = rec.attempts
            throttled = losses = 0
            while True:
                attempt += 1
                rec.attempts = attempt
                rec.state = "running"
                try:
                    result = await self._call(step, path, frame, attempt, await self._local_place(local), timeout)
                    if isinstance(step, LlmStep):
                        rec.detail = {"model": result.get("model"), "usage": result.get("usage")}
                        return result.get("content")
                    return result
                except (ActivityError, ApplicationError, TimeoutError) as exc:
                    # (a replayed local activity timeout arrives as a bare TimeoutError)
                    if cancelled(exc):
                        raise asyncio.CancelledError() from None  # the run is being cancelled: no retry
                    error, retry_after = to_step_error(exc)
                    lost = worker_lost(exc)
                if lost and losses < MAX_WORKER_LOSSES and self._since(PATCH_WORKER_LOSS):
                    # The worker died (or lost the server) under the step: not the step's
                    # fault, so not an attempt; bounded, as the step may be what kills it.
                    losses += 1
                    attempt -= 1
                    rec.attempts = attempt
                    rec.error = error
                    rec.state = "retrying"
                    await workflow.sleep(throttle_delay(losses))
                    continue
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
                    raise StepFailed(path, error)
                rec.state = "retrying"
                await workflow.sleep(self._retry_wait(policy, attempt, retry_after))
        finally:
            self._active -= 1
            self._sync_listed()

    def _retry_wait(self, policy: Retry, attempt: int, retry_after: float | None) -> float:
        """The backoff, with a server's Retry-After clamped to max_interval. Runs recorded before
        the clamp keep their (possibly day-long) timer on replay; an infinite one never got one."""
        within = retry_after is None or (
            isinstance(retry_after, int | float) and retry_after <= parse_duration(policy.max_interval)
        )
        clamp = within or self._since(PATCH_CLAMP_RETRY_AFTER)
        if not clamp and not math.isfinite(float(retry_after or 0.0)):
            clamp = True
        return backoff_delay(policy, attempt, retry_after, clamp=clamp)

    def _local_slot(self) -> bool:
        length = workflow.info().get_current_history_length()
        if length != self._task_mark:
            self._task_mark, self._local_in_task = length, 0
        if self._local_in_task >= LOCAL_PER_TASK:
            return False
        self._local_in_task += 1
        return True

    async def _local_place(self, local: bool) -> bool:
        """Whether this attempt runs as a local activity, waiting for a new task if need be."""
        if not local:
            return False
        if self.inp.engine < TASK_CUT_ENGINE:
            return self._local_slot()
        while True:
            length = workflow.info().get_current_history_length()
            if length != self._task_mark:
                self._task_mark, self._local_in_task, self._task_cut = length, 0, False
            if self._local_in_task < LOCAL_PER_TASK:
                self._local_in_task += 1
                return True
            if not self._task_cut:
                # Whatever becomes of it (completed, failed, timed out), its outcome is an event
                # and so starts a new task: nothing waits for a task nobody starts.
                self._task_cut = True
                # RUF006: the workflow instance itself holds every task it runs until it is done
                asyncio.create_task(self._cut_task())  # noqa: RUF006
            await workflow.wait_condition(functools.partial(_task_ended, length))

    async def _cut_task(self) -> None:
        with contextlib.suppress(ActivityError, asyncio.CancelledError):
            await workflow.execute_activity(
                TASK_CUT, start_to_close_timeout=timedelta(seconds=10), retry_policy=RetryPolicy(maximum_attempts=1)
            )

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
        frame: Frame,
        attempt: int,
        local: bool,
        timeout: float | None,
    ) -> Any:
        run_id, tenant = self.inp.run_id, self.inp.tenant
        arg: ToolCall | CodeCall | LlmCall
        match step:
            case ToolStep():
                name = RUN_TOOL
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
                    plan_refs(step.args),
                )
            case CodeStep():
                name = RUN_CODE
                arg = CodeCall(
                    tenant,
                    run_id,
                    path,
                    step.code,
                    self._render(step.inputs, frame, "/inputs"),
                    # a step's own limits were checked against the quotas at submit; unset ones
                    # default to the sandbox's, lowered to the tenant's quota
                    step.memory_mb or self._code_default("code_memory_mb", CODE_MEMORY_MB),
                    step.cpu_seconds or self._code_default("code_cpu_seconds", CODE_CPU_SECONDS),
                    self._step_quota,
                    generation=self.inp.generation,
                    attempt=attempt,
                )
                if timeout is None and step.cpu_seconds is not None:
                    timeout = step.cpu_seconds + 5.0
            case LlmStep():
                name = RUN_LLM
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
                    generation=self.inp.generation,
                    attempt=attempt,
                )
        return await self._dispatch(name, arg, local, timeout)

    def _guard_output(self, path: str, value: Any) -> Any:
        """A value the workflow itself produced (set, the run's output), held to the step limit."""
        size = oversize(value, MAX_STEP_OUTPUT_BYTES)
        if size is not None and self._since(PATCH_PAYLOAD_GUARD):
            raise StepFailed(
                path, StepError("OutputTooLarge", f"output is {size} bytes; the limit is {MAX_STEP_OUTPUT_BYTES}")
            )
        return value

    async def _dispatch(self, fn: str, arg: Any, local: bool, timeout: float | None) -> Any:
        once = _ONCE
        size = oversize(vars(arg), MAX_ACTIVITY_INPUT_BYTES)
        if size is not None and self._since(PATCH_PAYLOAD_GUARD):
            # Scheduled, it would fail the workflow task (over 2 MiB) again and again: fail the step.
            raise ApplicationError(
                f"step input is {size} bytes; the limit is {MAX_ACTIVITY_INPUT_BYTES}",
                type="InputTooLarge",
                non_retryable=True,
            )
        if local:
            return await workflow.execute_local_activity(
                fn,
                arg,
                start_to_close_timeout=_LOCAL_LIMIT if timeout is None else timedelta(seconds=timeout or LOCAL_TIMEOUT),
                retry_policy=once,
            )
        return await workflow.execute_activity(
            fn,
            arg,
            start_to_close_timeout=_REMOTE_LIMIT if timeout is None else timedelta(seconds=timeout or REMOTE_TIMEOUT),
            # A killed worker is noticed in seconds, not after the whole step timeout.
            heartbeat_timeout=timedelta(seconds=HEARTBEAT_TIMEOUT),
            retry_policy=once,
        )

    def _code_default(self, quota: str, default: float) -> Any:
        if self._quotas is None:
            return None
        return min(default, getattr(self._quotas, quota))

    def _idempotency_key(self, path: str) -> str:
        return f"{self.inp.tenant}/{self.inp.run_id}/{self.inp.generation}/{path}"

    async def _sleep(self, step: SleepStep, path: str, frame: Frame, rec: StepRecord) -> None:
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
            self._park(1)
            try:
                await workflow.wait_condition(lambda: self._draining, timeout=remaining)
            except builtins.TimeoutError:
                return None
            finally:
                self._park(-1)
            raise Drained()
        return None

    def _park(self, delta: int) -> None:
        """A step starts (1) or stops (-1) sleeping or waiting: the run may turn waiting or running.

        From engine version 5 a step that stops waiting leaves the listing to the end of what the
        run does right away (the loop's next turn, same workflow task): a run that a released
        event lets complete is listed closed by Temporal with no ``running`` upsert first (one
        history event and visibility write less per release), and one that goes on to an
        activity step upserts ``running`` there as before."""
        self._parked += delta
        unwinding = sys.exc_info()[1]
        if delta < 0 and self.inp.engine >= LISTING_DEFERRED_ENGINE and not isinstance(unwinding, BaseException):
            asyncio.get_running_loop().call_soon(self._sync_listed)
            return
        self._sync_listed()

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
            self._park(1)
            try:
                await workflow.wait_condition(
                    lambda: self._draining or any(e.type == step.event for e in self.events), timeout=remaining
                )
            except builtins.TimeoutError:
                if step.on_timeout == "continue":
                    rec.detail["timed_out"] = True
                    return None
                raise StepFailed(
                    path, StepError("EventTimeout", f"no {step.event!r} event within {step.timeout}")
                ) from None
            finally:
                self._park(-1)
            found = self._take_event(step.event)
            if found is None:
                raise Drained()
        rec.detail["event_id"] = found.event_id
        rec.detail["received_at"] = found.received_at
        return found.payload

    def _take_event(self, event_type: str) -> EventRecord | None:
        for i, e in enumerate(self.events):
            if e.type == event_type:
                return self.events.pop(i)
        return None


def _parse_time(value: str, path: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise StepFailed(path, StepError("ExpressionError", f"until {value!r} is not an ISO-8601 timestamp")) from None
    if parsed.tzinfo is None:
        raise StepFailed(path, StepError("ExpressionError", f"until {value!r} has no timezone"))
    return parsed
