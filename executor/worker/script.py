"""One segment of a script step: resume the sandbox from its snapshot, run to the next host call.

The workflow carries the script's state between host calls as a compressed sandbox snapshot
(``snapshot.dump()`` at the call). A segment loads it into a fresh sandbox worker, feeds in the last
call's outcome, runs until the script calls a host function again (or ends), and dumps the state
at that call. A ``tool`` or ``llm`` call found there is performed in the same activity, through
the same path as a tool or llm step (grants, secrets, egress, idempotency key, output limits), so a
script's tool call costs one activity, like a tool step. Everything else (sleep, events, parallel,
now, random, compensate, fail) the workflow performs.

A segment is deterministic given its snapshot and resume value (the script sees no clock or
entropy but what ``now()`` and ``random()`` return, and those are recorded), so a segment that is
retried, on this worker or another after a crash, reaches the same call again; the call's
idempotency key (the step's key plus ``#<index>``) makes a repeated effect count once.
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic_monty
from temporalio.exceptions import ApplicationError

from executor.engine.contract import SCRIPT_SNAPSHOT_BYTES
from executor.engine.models import LlmCall, ScriptSegment, ToolCall
from executor.lang.script import HOST_FUNCTIONS, INLINE_FUNCTIONS
from executor.lang.secret_refs import disarm, ref_pointers
from executor.worker.sandbox import Sandbox, SandboxError, SandboxLimits, _output_too_large, sandbox_error
from executor.worker.warm import WarmEntry, close

__all__ = [
    "INLINE_EFFECTS",
    "KEEP_WARM",
    "MAX_CALL_BYTES",
    "Perform",
    "decode_snapshot",
    "encode_snapshot",
    "run_segment",
    "script_call",
]

MAX_CALL_BYTES = 256 * 1024  # a host call's arguments, as JSON
INLINE_EFFECTS = frozenset({"tool", "llm"})  # performed inside the segment's activity
# Calls answered at once: the next segment follows in milliseconds, on this worker if it is local.
KEEP_WARM = frozenset({"tool", "llm", "now", "random", "compensate"})
# Inline ``call(...)`` answers count as suspensions too; a segment ends at its first host call.
_MAX_SUSPENSIONS = 100_000
_SEED = "duraplan-script"

# (function, args, kwargs, index) -> the call's value; raises ApplicationError on failure
Perform = Callable[[str, list[Any], dict[str, Any], int], Awaitable[Any]]


def encode_snapshot(dump: bytes) -> str:
    return base64.b64encode(zlib.compress(dump, 1)).decode()


def decode_snapshot(text: str) -> bytes:
    return zlib.decompress(base64.b64decode(text))


async def run_segment(sandbox: Sandbox, seg: ScriptSegment, perform: Perform) -> dict[str, Any]:
    """``{"done": True, "output": ...}``, ``{"failed": [type, message]}`` or ``{"snapshot": ...,
    "call": {"fn", "args", "kwargs"}, "outcome": None | {"value": ...} | {"error": {...}}}``."""
    key = f"{seg.tenant}/{seg.run_id}/{seg.step_path}"
    entry = sandbox.warm.take(key, seg.snapshot)
    try:
        if entry is None:
            await sandbox.warm.close_all()  # give a held worker back before checking one out
            entry = await _cold(sandbox, seg)
        else:  # this worker still holds the script, suspended exactly at the carried snapshot
            entry.snap = await entry.snap.resume(_resume_value(seg.resume))
        snap = await _to_host_call(entry.snap)
        if isinstance(snap, pydantic_monty.MontyComplete):
            await close(entry)
            if _output_too_large(snap.output, sandbox.max_output_bytes):
                limit = sandbox.max_output_bytes
                return {"failed": ["OutputTooLarge", f"script step result exceeds {limit} bytes"]}
            return {"done": True, "output": snap.output}
        entry.snap = snap
        entry.snapshot = encode_snapshot(snap.dump())
    except BaseException as exc:
        if entry is not None:
            await close(entry, exc)
        if isinstance(exc, SandboxError):
            return {"failed": [exc.error_type, str(exc)]}
        if isinstance(exc, pydantic_monty.MontyError | RuntimeError | TimeoutError):
            err = sandbox_error(exc)
            if err.retryable:
                raise err from None
            return {"failed": [err.error_type, str(err)]}
        raise
    cap = seg.max_snapshot_bytes or SCRIPT_SNAPSHOT_BYTES
    if len(entry.snapshot) > cap:
        await close(entry)
        return {
            "failed": [
                "SnapshotTooLarge",
                f"the script's state is {len(entry.snapshot)} bytes at its call of {snap.function_name}(); "
                f"the limit is {cap}: keep less data in variables",
            ]
        }
    fn, args, kwargs = str(snap.function_name), _plain(list(snap.args)), _plain(dict(snap.kwargs))
    size = len(json.dumps([args, kwargs]))
    if size > MAX_CALL_BYTES:  # it travels in history (and a parallel fans it out)
        await close(entry)
        message = f"the arguments of {fn}() are {size} bytes; the limit is {MAX_CALL_BYTES}: pass less data"
        return {"failed": ["HostCallTooLarge", message]}
    if fn in KEEP_WARM:
        await sandbox.warm.put(key, entry)
    else:  # a sleep, a wait or a parallel may take long: the worker goes back to the pool
        await close(entry)
    outcome = None
    if fn in INLINE_EFFECTS and (seg.calls_left is None or seg.calls_left > 0):
        # (over the run's step budget the call is not made: the workflow fails the step)
        try:
            outcome = {"value": await perform(fn, args, kwargs, seg.index)}
        except ApplicationError as exc:  # the call failed, not the segment: the workflow decides
            details = exc.details[0] if exc.details and isinstance(exc.details[0], dict) else {}
            outcome = {
                "error": {
                    "type": exc.type or "Error",
                    "message": exc.message,
                    "retryable": not exc.non_retryable,
                    "retry_after": details.get("retry_after"),
                }
            }
    return {"snapshot": entry.snapshot, "call": {"fn": fn, "args": args, "kwargs": kwargs}, "outcome": outcome}


async def _cold(sandbox: Sandbox, seg: ScriptSegment) -> WarmEntry:
    """A fresh session, started or loaded from the carried snapshot and resumed."""
    limits = SandboxLimits(
        memory_mb=seg.memory_mb or SandboxLimits.memory_mb, cpu_seconds=seg.cpu_seconds or SandboxLimits.cpu_seconds
    )
    printed = pydantic_monty.CollectString(max_bytes=sandbox.max_print_bytes)
    # A fixed seed: the script's own random module is reproducible on a retried segment; random()
    # is the host's (recorded) answer.
    policy: pydantic_monty.OSPolicy = {"random_start": {"seed": f"{_SEED}/{seg.run_id}/{seg.step_path}"}}
    context = sandbox.session(limits, max_suspensions=_MAX_SUSPENSIONS, os_policy=policy)
    session = await context.__aenter__()
    entry = WarmEntry(context, None, "")
    try:
        if seg.snapshot is None:
            entry.snap = await session.feed_start(seg.code, inputs=seg.inputs, print_callback=printed)
            return entry
        loaded = await session.load_snapshot(decode_snapshot(seg.snapshot), print_callback=printed)
        if not isinstance(loaded, pydantic_monty.AsyncFunctionSnapshot):
            raise SandboxError("SnapshotInvalid", "the snapshot is not at a host call", retryable=False)
        entry.snap = await loaded.resume(_resume_value(seg.resume))
        return entry
    except BaseException as exc:
        await close(entry, exc)
        raise


def script_call(seg: ScriptSegment, fn: str, args: list[Any], kwargs: dict[str, Any], index: int) -> ToolCall | LlmCall:
    """The activity call a script's ``tool(...)`` or ``llm(...)`` stands for; call ``index``
    gets its own step path and idempotency key under the script step's."""
    path = f"{seg.step_path}#{index}"
    if fn == "tool":
        if len(args) != 1 or not isinstance(args[0], str):
            raise _bad("tool() takes the tool name as its one positional argument, then keyword arguments")
        key = f"{seg.idempotency_key}#{index}"
        # every reference in it was built by the script's code: data reaches the script disarmed
        return ToolCall(
            seg.tenant, seg.run_id, path, seg.attempt, key, args[0], kwargs, seg.quota, secrets=ref_pointers(kwargs)
        )
    params = dict(zip(("prompt",), args, strict=False)) | kwargs
    if len(args) > 1 or not isinstance(params.get("prompt"), str):
        raise _bad("llm() takes the prompt as a string")
    unknown = set(params) - {"prompt", "system", "model", "output_schema", "temperature", "max_tokens"}
    if unknown:
        raise _bad(f"llm() got unexpected keyword argument(s) {sorted(unknown)}")
    return LlmCall(seg.tenant, seg.run_id, path, quota=seg.quota, **params)


def _bad(message: str) -> ApplicationError:
    return ApplicationError(message, {"retry_after": None}, type="BadHostCall", non_retryable=True)


async def _to_host_call(snap: Any) -> Any:
    """Answer ``call(...)`` specs inline; stop at a host function, an unknown name or the end."""
    while True:
        if isinstance(snap, pydantic_monty.MontyComplete):
            return snap
        if isinstance(snap, pydantic_monty.AsyncFunctionSnapshot):
            name = snap.function_name
            if snap.is_os_function:
                if "sleep" in str(name):  # a worker-held sleep would be neither durable nor bounded
                    message = "time.sleep() is not available in a script: sleep('30s') is a durable timer"
                    snap = await snap.resume({"exc_type": "RuntimeError", "message": message})
                else:  # files, environment...: the sandbox's own refusal
                    snap = await snap.resume_not_handled()
                continue
            if name in INLINE_FUNCTIONS and snap.args:
                fn, *args = snap.args
                snap = await snap.resume({"return_value": {"$call": fn, "args": args, "kwargs": dict(snap.kwargs)}})
                continue
            if name in HOST_FUNCTIONS:
                return snap
            message = f"name {name!r} is not defined" if isinstance(name, str) else f"{name} is not available"
            snap = await snap.resume({"exc_type": "NameError", "message": message})
            continue
        if isinstance(snap, pydantic_monty.AsyncNameLookupSnapshot):
            # An undefined name read, not called (host functions are called directly), or an
            # import: the sandbox's own answer (NameError, ModuleNotFoundError).
            snap = await snap.resume_auto()
            continue
        if isinstance(snap, pydantic_monty.AsyncFutureSnapshot):
            message = "await of host calls is not supported: use parallel([call(...), ...])"
            snap = await snap.resume(
                {cid: {"exc_type": "RuntimeError", "message": message} for cid in snap.pending_call_ids}
            )
            continue
        return snap


def _plain(value: Any) -> Any:
    """JSON-ready arguments: tuples and sets become lists, odd keys and values text (a host call's
    arguments are recorded in history)."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [_plain(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _resume_value(resume: dict[str, Any] | None) -> Any:
    if resume is None:
        return {"return_value": None}
    if "error" in resume:
        exc_type, message = resume["error"]
        return {"exc_type": exc_type, "message": message}
    # A host call's answer is data (a tool's or llm's output, an event): it cannot name a secret
    # the script then passes to a tool (executor.lang.secret_refs).
    return {"return_value": disarm(resume.get("value"))}
