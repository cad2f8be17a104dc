"""Script steps: Python in the sandbox whose every host-function call is a durable step of the run.

The script runs in segments, each an activity (``duraplan.script``, executor/worker/script.py):
resume the sandbox from the snapshot taken at the last host call, feed in that call's outcome, run
to the next host call. ``tool`` and ``llm`` calls are performed inside the segment's activity (one
activity per call, like a tool step); the workflow performs the rest here: ``sleep`` and
``sleep_until`` (timers), ``wait_for_event``, ``parallel`` (its calls as concurrent activities and
timers), ``now`` and ``random`` (recorded: ``workflow.now()`` / ``workflow.random()``),
``compensate`` and ``fail``.

The script's state lives in its step record's ``detail`` (so it crosses continue-as-new with the
other records): the count of completed calls, the last snapshot and the outcome to feed it next
(``_snap``, ``_resume``), a host call the workflow is still performing (``_pending``), and the
newest ``SCRIPT_LOG_KEPT`` call records (``_log``) that status shows as the step's nested calls.
Nothing here runs the sandbox: the workflow only moves opaque snapshots and JSON outcomes.
"""

from __future__ import annotations

import asyncio
import builtins
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from executor.engine.base import EngineBase
from executor.engine.contract import (
    CODE_CPU_SECONDS,
    CODE_MEMORY_MB,
    RUN_LLM,
    RUN_SCRIPT,
    RUN_TOOL,
    TENANT_BUSY,
)
from executor.engine.frames import Drained, Frame, StepFailed
from executor.engine.models import (
    CompensationCall,
    LlmCall,
    ScriptSegment,
    StepError,
    StepRecord,
    StepState,
    ToolCall,
)
from executor.engine.retry import (
    DEFAULT_RETRY,
    LOST_WORKER_ENGINE,
    MAX_WORKER_LOSSES,
    backoff_delay,
    cancelled,
    throttle_delay,
    to_step_error,
    worker_lost,
)
from executor.engine.scheduling import cancel_all
from executor.engine.status import preview, script_calls
from executor.lang.script import PARALLEL_FUNCTIONS, analyse
from executor.lang.secret_refs import disarm, literal_refs, ref_pointers
from schemas.plan import Retry, ScriptStep, parse_duration

__all__ = ["SCRIPT_LOG_KEPT", "ScriptMixin", "script_calls"]

SCRIPT_LOG_KEPT = 100  # call records kept per script (status and carry); older ones are counted only
_LOCAL_TIMEOUT_MAX = 60.0
_DEFAULT_EVENT_TIMEOUT = "24h"
MAX_WAIT_SECONDS = 365 * 86400.0  # as for sleep and wait_for_event steps

Outcome = dict[str, Any]  # {"value": ...} or {"error": {"type", "message", "retryable", "retry_after"}}


class _HostCallError(Exception):
    """A host call's arguments are wrong: raised inside the script as ``exc_type``."""

    def __init__(self, exc_type: str, message: str) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.message = message


class ScriptMixin(EngineBase):
    async def _script(self, step: ScriptStep, path: str, frame: Frame, rec: StepRecord) -> Any:
        if rec.detail is None:
            self._count_step(path)
            rec.detail = {"calls": 0, "_snap": None, "_resume": None, "_pending": None, "_log": []}
        d = rec.detail
        while True:
            if d["_pending"] is None:
                result = await self._segment(step, path, frame, d)
                if "done" in result:
                    for key in ("_snap", "_resume", "_pending"):
                        d.pop(key, None)
                    return result["output"]
                if "failed" in result:
                    raise StepFailed(path, self._script_error(result["failed"], d))
                index = d["calls"]
                self._count_step(f"{path}#{index}")
                call = result["call"]
                entry = _entry(index, call, workflow.now().isoformat())
                entry["a"] = result["attempts"]
                if result["outcome"] is not None:
                    self._advance(d, result["snapshot"], result["outcome"], entry)
                else:
                    entry["s"] = _step_state(call["fn"])
                    d["_pending"] = {"call": call, "snap": result["snapshot"], "entry": entry}
                    continue
            else:
                pending = d["_pending"]
                rec.state = _step_state(pending["call"]["fn"])  # the run shows "waiting" meanwhile
                parked = rec.state in ("sleeping", "waiting")
                if parked:
                    self._parked += 1
                    self._sync_listed()
                try:
                    outcome = await self._host_call(step, path, d["calls"], pending)
                finally:
                    rec.state = "running"
                    if parked:
                        self._parked -= 1
                if parked:
                    self._sync_listed()
                self._advance(d, pending["snap"], outcome, pending["entry"])
            if self._should_continue_as_new():
                self._draining = True
                raise Drained()

    def _advance(self, d: dict[str, Any], snapshot: str, outcome: Outcome, entry: dict[str, Any]) -> None:
        """Record a completed host call: the next segment resumes from ``snapshot`` with ``outcome``."""
        _finish_entry(entry, outcome, workflow.now().isoformat())
        d["_log"].append(entry)
        if len(d["_log"]) > SCRIPT_LOG_KEPT:
            del d["_log"][: len(d["_log"]) - SCRIPT_LOG_KEPT]
        d["calls"] += 1
        d["_snap"] = snapshot
        d["_resume"] = _resume_for(outcome)
        d["_pending"] = None

    def _script_error(self, failed: list[str], d: dict[str, Any]) -> StepError:
        """The step's error; an uncaught host-call error keeps its own type (HttpStatus404...)."""
        error_type, message = failed
        last = d.get("_resume") or {}
        if "error" in last and last.get("type") and last["error"][1] in message:
            return StepError(last["type"], message)
        return StepError(error_type, message)

    # ---- segments ---------------------------------------------------------------------------

    async def _segment(self, step: ScriptStep, path: str, frame: Frame, d: dict[str, Any]) -> dict[str, Any]:
        """Run the next segment, retrying a failed segment or a failed tool/llm call in it under the
        step's retry policy; a call that still fails is handed to the script as an exception."""
        policy = step.retry or DEFAULT_RETRY
        local = self._script_local(step)
        timeout = parse_duration(step.timeout) if step.timeout is not None else None
        attempt, throttled, losses = 0, 0, 0
        while True:
            attempt += 1
            seg = ScriptSegment(
                tenant=self.inp.tenant,
                run_id=self.inp.run_id,
                step_path=path,
                code=step.code,
                # data spliced into the inputs cannot name a secret; the plan's own references can
                inputs=disarm(self._render(step.inputs, frame, "/inputs"), literal_refs(step.inputs))
                if d["_snap"] is None
                else {},
                index=d["calls"],
                attempt=attempt,
                idempotency_key=self._idempotency_key(path),
                snapshot=d["_snap"],
                resume=d["_resume"],
                memory_mb=step.memory_mb or self._code_default("code_memory_mb", CODE_MEMORY_MB),
                cpu_seconds=step.cpu_seconds or self._code_default("code_cpu_seconds", CODE_CPU_SECONDS),
                quota=self._step_quota,
                calls_left=self._steps_left(),
            )
            try:
                result: dict[str, Any] = await self._slotted(RUN_SCRIPT, seg, local, timeout)
            except (ActivityError, ApplicationError, TimeoutError) as exc:
                if cancelled(exc):
                    raise asyncio.CancelledError() from None
                error, retry_after = to_step_error(exc)
                if self._lost_worker(exc, losses):  # not the script's fault: not an attempt
                    attempt -= 1
                    losses += 1
                    await workflow.sleep(throttle_delay(losses))
                    continue
                if error.type == TENANT_BUSY:  # refused before it ran: not an attempt
                    attempt -= 1
                    throttled += 1
                    await workflow.sleep(throttle_delay(throttled))
                    continue
                if _final(error.type, error.retryable, attempt, policy):
                    raise StepFailed(path, error) from None
                await workflow.sleep(backoff_delay(policy, attempt, retry_after))
                continue
            failure = (result.get("outcome") or {}).get("error")
            if failure is not None and not _final(failure["type"], failure["retryable"], attempt, policy):
                await workflow.sleep(backoff_delay(policy, attempt, failure.get("retry_after")))
                continue
            result["attempts"] = attempt
            return result

    def _lost_worker(self, exc: BaseException, losses: int) -> bool:
        """Whether ``exc`` is a lost worker to re-dispatch without spending an attempt (as a step's
        is, engine.steps), bounded: the script may be what kills its worker."""
        return self.inp.engine >= LOST_WORKER_ENGINE and losses < MAX_WORKER_LOSSES and worker_lost(exc)

    def _steps_left(self) -> int:
        cap = self.plan.limits.max_steps
        if self._quotas is not None:
            cap = min(cap, self._quotas.max_steps)
        return cap - self.executed

    async def _slotted(self, fn: str, arg: Any, local: bool, timeout: float | None) -> Any:
        """Dispatch under the run's parallelism cap, like an activity step."""
        while self._active >= self._max_parallel:
            await workflow.wait_condition(lambda: self._active < self._max_parallel)
        self._active += 1
        try:
            return await self._dispatch(fn, arg, await self._local_place(local), timeout)
        finally:
            self._active -= 1

    def _script_local(self, step: ScriptStep) -> bool:
        """auto: local activities when every tool the script names is a local tool (short and
        bounded) and it calls no llm; a computed tool name makes it remote."""
        if step.execution != "auto":
            return step.execution == "local"
        if step.timeout is not None and parse_duration(step.timeout) > _LOCAL_TIMEOUT_MAX:
            return False
        info = analyse(step.code)
        return not info.dynamic_tools and not info.uses_llm and info.tools <= self._local_tools

    # ---- host calls the workflow performs ---------------------------------------------------

    async def _host_call(self, step: ScriptStep, path: str, index: int, pending: dict[str, Any]) -> Outcome:
        call = pending["call"]
        fn, args, kwargs = call["fn"], call["args"], call["kwargs"]
        try:
            match fn:
                case "now":
                    _arity(fn, args, kwargs, 0)
                    return {"value": workflow.now().isoformat()}
                case "random":
                    _arity(fn, args, kwargs, 0)
                    return {"value": workflow.random().random()}
                case "sleep" | "sleep_until":
                    return await self._script_sleep(fn, args, kwargs, pending)
                case "wait_for_event":
                    return await self._script_wait(args, kwargs, pending)
                case "compensate":
                    return self._script_compensate(path, index, args, kwargs)
                case "fail":
                    message, error_type = _params(fn, args, kwargs, ("message",), ("error_type",))
                    raise StepFailed(path, StepError(str(error_type or "ScriptFailed"), str(message)))
                case "parallel":
                    return await self._parallel(step, path, index, args, kwargs, pending)
                case _:
                    raise _HostCallError("NameError", f"{fn!r} is not a host function")
        except _HostCallError as exc:
            return {"error": _error(exc.exc_type, exc.message, exc.exc_type)}

    async def _script_sleep(self, fn: str, args: list[Any], kwargs: dict[str, Any], pending: dict[str, Any]) -> Outcome:
        if "wake_at" not in pending:
            pending["wake_at"] = _wake_at(fn, args, kwargs, workflow.now()).isoformat()
        remaining = (datetime.fromisoformat(pending["wake_at"]) - workflow.now()).total_seconds()
        if remaining > 0:
            try:
                await workflow.wait_condition(lambda: self._draining, timeout=remaining)
            except builtins.TimeoutError:
                return {"value": None}
            raise Drained()
        return {"value": None}

    async def _script_wait(self, args: list[Any], kwargs: dict[str, Any], pending: dict[str, Any]) -> Outcome:
        event, limit = _params("wait_for_event", args, kwargs, ("event",), ("timeout",))
        if not isinstance(event, str):
            raise _HostCallError("TypeError", "wait_for_event() takes the event type as a string")
        seconds = _duration("wait_for_event", limit if limit is not None else _DEFAULT_EVENT_TIMEOUT)
        pending.setdefault("since", workflow.now().isoformat())
        found = self._take_event(event)
        if found is None:
            waited = (workflow.now() - datetime.fromisoformat(pending["since"])).total_seconds()
            try:
                await workflow.wait_condition(
                    lambda: self._draining or any(e.type == event for e in self.events),
                    timeout=max(seconds - waited, 0.001),
                )
            except builtins.TimeoutError:
                message = f"no {event!r} event within {limit or _DEFAULT_EVENT_TIMEOUT}"
                return {"error": _error("EventTimeout", message, "TimeoutError")}
            found = self._take_event(event)
            if found is None:
                raise Drained()
        pending["entry"]["event_id"] = found.event_id
        return {"value": found.payload}

    def _script_compensate(self, path: str, index: int, args: list[Any], kwargs: dict[str, Any]) -> Outcome:
        if len(args) != 1 or not isinstance(args[0], str):
            raise _HostCallError("TypeError", "compensate() takes the tool name, then its keyword arguments")
        # the script's own references (data reaches it disarmed: executor.lang.secret_refs)
        refs = ref_pointers(kwargs)
        self.compensations.append(CompensationCall(f"{path}#{index}", args[0], dict(kwargs), None, {}, refs))
        return {"value": None}

    async def _parallel(
        self, step: ScriptStep, path: str, index: int, args: list[Any], kwargs: dict[str, Any], pending: dict[str, Any]
    ) -> Outcome:
        (specs,) = _params("parallel", args, kwargs, ("calls",), ())
        if not isinstance(specs, list) or not all(_is_spec(s) for s in specs):
            allowed = ", ".join(sorted(PARALLEL_FUNCTIONS))
            raise _HostCallError("TypeError", f"parallel() takes a list of call(fn, ...) with fn one of {allowed}")
        done: dict[str, Outcome] = pending.setdefault("results", {})
        if not pending.get("counted"):
            for j in range(len(specs)):
                self._count_step(f"{path}#{index}.{j}")  # every call in a parallel is a host call
            pending["counted"] = True

        async def one(j: int) -> None:
            spec = specs[j]
            done[str(j)] = await self._parallel_one(step, f"{path}#{index}.{j}", spec, pending, j)

        tasks = [asyncio.create_task(one(j)) for j in range(len(specs)) if str(j) not in done]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            await cancel_all(tasks)
            raise
        results = [done[str(j)] for j in range(len(specs))]
        for j, outcome in enumerate(results):
            if "error" in outcome:
                err = outcome["error"]
                message = f"parallel call {j} ({specs[j]['$call']}) failed: {err['type']}: {err['message']}"
                return {"error": {**err, "message": message}}
        return {"value": [o["value"] for o in results]}

    async def _parallel_one(
        self, step: ScriptStep, sub: str, spec: dict[str, Any], pending: dict[str, Any], j: int
    ) -> Outcome:
        fn, args, kwargs = spec["$call"], list(spec.get("args") or []), dict(spec.get("kwargs") or {})
        try:
            match fn:
                case "sleep" | "sleep_until":
                    timers = pending.setdefault("timers", {})
                    state = timers.setdefault(str(j), {})
                    return await self._script_sleep(fn, args, kwargs, state)
                case "tool":
                    if len(args) != 1 or not isinstance(args[0], str):
                        raise _HostCallError("TypeError", "call('tool', name, **args) takes the tool name")
                    name = args[0]
                    return await self._effect(
                        step,
                        RUN_TOOL,
                        lambda attempt: ToolCall(
                            self.inp.tenant,
                            self.inp.run_id,
                            sub,
                            attempt,
                            self._idempotency_key(sub),
                            name,
                            kwargs,
                            self._step_quota,
                            secrets=ref_pointers(kwargs),
                        ),
                        name in self._local_tools,
                    )
                case "llm":
                    params = dict(zip(("prompt",), args, strict=False)) | kwargs
                    if not isinstance(params.get("prompt"), str):
                        raise _HostCallError("TypeError", "call('llm', prompt, ...) takes the prompt as a string")
                    outcome = await self._effect(
                        step,
                        RUN_LLM,
                        lambda attempt: LlmCall(
                            self.inp.tenant, self.inp.run_id, sub, quota=self._step_quota, **params
                        ),
                        False,
                    )
                    if "value" in outcome:
                        outcome = {"value": outcome["value"].get("content")}
                    return outcome
                case _:
                    raise _HostCallError("TypeError", f"{fn!r} cannot run in parallel()")
        except _HostCallError as exc:
            return {"error": _error(exc.exc_type, exc.message, exc.exc_type)}
        except TypeError as exc:  # bad llm keyword arguments
            return {"error": _error("TypeError", str(exc), "TypeError")}

    async def _effect(self, step: ScriptStep, fn: str, make: Any, local: bool) -> Outcome:
        """A tool or llm activity under the step's retry policy; its final failure is an outcome."""
        policy = step.retry or DEFAULT_RETRY
        attempt, throttled, losses = 0, 0, 0
        timeout = parse_duration(step.timeout) if step.timeout is not None else None
        while True:
            attempt += 1
            try:
                return {"value": await self._slotted(fn, make(attempt), local, timeout)}
            except (ActivityError, ApplicationError, TimeoutError) as exc:
                if cancelled(exc):
                    raise asyncio.CancelledError() from None
                error, retry_after = to_step_error(exc)
                lost = self._lost_worker(exc, losses)
            if lost:  # the worker died under the call: not an attempt
                attempt -= 1
                losses += 1
                await workflow.sleep(throttle_delay(losses))
                continue
            if error.type == TENANT_BUSY:
                attempt -= 1
                throttled += 1
                await workflow.sleep(throttle_delay(throttled))
                continue
            if _final(error.type, error.retryable, attempt, policy):
                return {"error": _error(error.type, error.message)}
            await workflow.sleep(backoff_delay(policy, attempt, retry_after))


# ---- pure helpers ------------------------------------------------------------------------------


def _error(error_type: str, message: str, exc: str | None = None) -> dict[str, Any]:
    """A host call's final failure; ``exc`` is the exception the script sees (RuntimeError when absent)."""
    return {"type": error_type, "message": message, "retryable": False, "exc": exc}


def _final(error_type: str, retryable: bool, attempt: int, policy: Retry) -> bool:
    return not retryable or error_type in policy.non_retryable or attempt >= policy.max_attempts


def _entry(index: int, call: dict[str, Any], at: str) -> dict[str, Any]:
    fn = call["fn"]
    args = call.get("args") or []
    name = f"{fn}:{args[0]}" if fn in ("tool", "wait_for_event", "compensate") and args else fn
    return {"i": index, "fn": fn, "name": name, "s": "running", "a": 1, "t0": at}


def _step_state(fn: str) -> StepState:
    match fn:
        case "sleep" | "sleep_until":
            return "sleeping"
        case "wait_for_event":
            return "waiting"
        case _:
            return "running"


def _finish_entry(entry: dict[str, Any], outcome: Outcome, at: str) -> None:
    entry["t1"] = at
    if "error" in outcome:
        entry["s"] = "failed"
        entry["e"] = [outcome["error"]["type"], outcome["error"]["message"]]
    else:
        entry["s"] = "completed"
        text = preview(outcome.get("value"))
        if text is not None:
            entry["o"] = text


def _resume_for(outcome: Outcome) -> dict[str, Any]:
    """What the next segment feeds the script: the value, or the error raised as an exception
    (RuntimeError for a failed tool or llm call, so ``except Exception`` catches it)."""
    if "error" not in outcome:
        return {"value": outcome.get("value")}
    err = outcome["error"]
    exc = err.get("exc") or "RuntimeError"
    message = err["message"] if exc != "RuntimeError" else f"{err['type']}: {err['message']}"
    return {"error": [exc, message], "type": err["type"]}


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and value.get("$call") in PARALLEL_FUNCTIONS


def _params(
    fn: str, args: list[Any], kwargs: dict[str, Any], positional: tuple[str, ...], optional: tuple[str, ...]
) -> tuple[Any, ...]:
    names = positional + optional
    if len(args) > len(names):
        raise _HostCallError("TypeError", f"{fn}() takes at most {len(names)} positional argument(s)")
    values = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key not in names or key in values:
            raise _HostCallError("TypeError", f"{fn}() got an unexpected or repeated argument {key!r}")
        values[key] = value
    missing = [p for p in positional if p not in values]
    if missing:
        raise _HostCallError("TypeError", f"{fn}() missing argument(s) {missing}")
    return tuple(values.get(n) for n in names)


def _arity(fn: str, args: list[Any], kwargs: dict[str, Any], n: int) -> None:
    if len(args) != n or kwargs:
        raise _HostCallError("TypeError", f"{fn}() takes no arguments")


def _duration(fn: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _HostCallError("TypeError", f"{fn}() takes a duration like 30s, 10m, 2h or seconds as a number")
    try:
        seconds = parse_duration(value)
    except (ValueError, OverflowError) as exc:
        raise _HostCallError("ValueError", f"{fn}(): {exc}") from None
    if seconds > MAX_WAIT_SECONDS:  # also keeps the timer arithmetic far from overflowing
        raise _HostCallError("ValueError", f"{fn}(): {value!r} is longer than {MAX_WAIT_SECONDS / 86400:g} days")
    return seconds


def _wake_at(fn: str, args: list[Any], kwargs: dict[str, Any], now: datetime) -> datetime:
    if fn == "sleep":
        (duration,) = _params(fn, args, kwargs, ("duration",), ())
        return now + timedelta(seconds=_duration(fn, duration))
    (stamp,) = _params(fn, args, kwargs, ("timestamp",), ())
    if not isinstance(stamp, str):
        raise _HostCallError("TypeError", "sleep_until() takes an ISO-8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        raise _HostCallError("ValueError", f"sleep_until(): {stamp!r} is not an ISO-8601 timestamp") from None
    if parsed.tzinfo is None:
        raise _HostCallError("ValueError", f"sleep_until(): {stamp!r} has no timezone")
    if (parsed - now).total_seconds() > MAX_WAIT_SECONDS:
        raise _HostCallError("ValueError", f"sleep_until(): {stamp!r} is more than 365 days away")
    return parsed
