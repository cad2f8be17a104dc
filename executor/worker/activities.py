"""Step activities: where side effects happen, and the one place errors become ApplicationError.

Three activities serve every plan: ``duraplan.tool``, ``duraplan.code`` and ``duraplan.llm``.
Each attempt runs once (``maximum_attempts=1``): the workflow owns retries so it can show them.
Failures carry a ``type`` that plans name in ``retry.non_retryable`` and a ``non_retryable`` flag.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from executor.engine.contract import (
    HEARTBEAT_TIMEOUT,
    RUN_CODE,
    RUN_LLM,
    RUN_SCRIPT,
    RUN_TOOL,
    TASK_CUT,
    TENANT_BUSY,
)
from executor.engine.limits import MAX_JSON_DEPTH, MAX_STEP_OUTPUT_BYTES, bounded_text, deepest
from executor.engine.models import CodeCall, LlmCall, ScriptSegment, StepQuota, ToolCall
from executor.lang.model_names import model_problem
from executor.lang.secret_refs import SECRET_KEY
from executor.service.telemetry import step_span, tool_span
from executor.service.tenants import TenantError, TenantRegistry
from executor.worker.carry import CarryActivities
from executor.worker.fairness import TenantGate
from executor.worker.metering import Meter, llm_cost, step_key
from executor.worker.sandbox import Sandbox, SandboxError, SandboxLimits
from executor.worker.script import run_segment, script_call
from tools.redaction import Redactor

if TYPE_CHECKING:
    from executor.service.sources import SourceCalls
from tools.egress import HttpPolicy
from tools.errors import ToolError
from tools.registry import Tool, ToolContext, ToolRegistry
from tools.store import Store

__all__ = [
    "HEARTBEAT_TIMEOUT",
    "MAX_OUTPUT_BYTES",
    "StepActivities",
    "heartbeating",
    "run_code",
    "run_llm",
    "run_script",
    "run_tool",
]

run_tool, run_code, run_llm, run_script = RUN_TOOL, RUN_CODE, RUN_LLM, RUN_SCRIPT
MAX_OUTPUT_BYTES = MAX_STEP_OUTPUT_BYTES

T = TypeVar("T")


def _fail(message: str, error_type: str, *, retryable: bool, retry_after: float | None = None) -> ApplicationError:
    # Bounded: a step's error of any size must fail the step, not the workflow task (2 MiB limit).
    return ApplicationError(
        bounded_text(message), {"retry_after": retry_after}, type=error_type, non_retryable=not retryable
    )


_NO_SECRETS = Redactor()


def _checked_output(value: Any, what: str, quota: StepQuota | None = None, secrets: Redactor | None = None) -> Any:
    """JSON-ready output under the size limit (the tenant's, else 1 MiB) and nesting limit, with
    ``secrets`` redacted; anything else fails the step, not the worker. Too deep, every recursive
    walk after (redaction, the encoder, Temporal's converter, a client's parser) overflowed the stack:
    a RecursionError, retried, so a POST whose answer nested 950 deep was sent three times."""
    too_deep = deepest(value, MAX_JSON_DEPTH)
    if too_deep is not None:
        where = (secrets or _NO_SECRETS).text(too_deep[:200])
        raise _fail(
            f"{what} output nests more than {MAX_JSON_DEPTH} levels deep (at {where})", "OutputTooDeep", retryable=False
        )
    value = _jsonable(value)
    if secrets is not None:
        value = secrets.value(value)
    limit = quota.max_output_bytes if quota is not None and quota.max_output_bytes else MAX_OUTPUT_BYTES
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode())
    except ValueError as exc:  # NaN or an infinity: JSON has no spelling for them
        raise _fail(f"{what} output is not JSON: {exc} (NaN/Infinity)", "OutputNotJSON", retryable=False) from None
    except TypeError as exc:
        raise _fail(f"{what} output is not JSON: {exc}", "OutputNotJSON", retryable=False) from None
    if size > limit:
        raise _fail(
            f"{what} output is {size} bytes; the limit is {limit} (quota max_step_output_bytes)",
            "OutputTooLarge",
            retryable=False,
        )
    return value


@contextlib.asynccontextmanager
async def _admitted(gate: TenantGate, tenant: str, quota: StepQuota | None) -> AsyncIterator[None]:
    """Hold a slot of the tenant's in-flight cap, waiting in line for one if need be; refused (the
    line is full, or the wait ran out) it fails fast with ``TenantBusy``: retryable, and the
    workflow dispatches the step again later without counting an attempt."""
    cap = quota.max_inflight if quota is not None else None
    # Wait at most half the step's time limit in line: the rest is for the step itself.
    limit = activity.info().start_to_close_timeout
    max_wait = limit.total_seconds() / 2 if limit else None
    tick = None if activity.info().is_local else activity.heartbeat
    if not await gate.enter(tenant, cap, max_wait, tick):
        message = f"tenant {tenant!r} already has {cap} step(s) running on this worker (quota max_inflight_steps)"
        # BENIGN: an expected refusal, logged at debug level, not as a failure with a traceback
        raise ApplicationError(message, type=TENANT_BUSY, category=ApplicationErrorCategory.BENIGN)
    try:
        yield
    finally:
        gate.leave(tenant)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        items = [_jsonable(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _jsonable(v) for k, v in value.items()}
    return value


async def heartbeating(work: Awaitable[T]) -> T:
    """Heartbeat while regular activities run, so a killed worker is noticed within seconds."""
    if activity.info().is_local:
        return await work
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_TIMEOUT / 3)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        task.cancel()  # the activity was cancelled (or failed): so is its work


@activity.defn(name=TASK_CUT)
async def task_cut() -> None:
    """Nothing: a workflow schedules it so that its completion starts the workflow's next task."""


class StepActivities:
    def __init__(
        self,
        registry: ToolRegistry,
        store: Store,
        sandbox: Sandbox,
        *,
        default_model: str | None = None,
        completion: Callable[..., Awaitable[Any]] | None = None,
        tenants: TenantRegistry | None = None,
        sources: SourceCalls | None = None,
        meter: Meter | None = None,
    ) -> None:
        """``sources``: the tenants' MCP/OpenAPI tool sources (with tenancy); ``meter``: the usage ledger."""
        self.meter = meter or Meter(None)
        self.registry = registry
        self.sources = sources
        self.store = store
        self.sandbox = sandbox
        self.default_model = default_model
        self._completion = completion
        self.tenants = tenants
        self.gate = TenantGate()

    def all(self) -> list[Callable[..., Any]]:
        # The carry activities keep a long run's continue-as-new state in this store (executor.worker.carry).
        return [
            self.tool,
            self.code,
            self.llm,
            self.script,
            self.meter.meter_run,
            task_cut,
            *CarryActivities(self.store).all(),
        ]

    @activity.defn(name=run_tool)
    async def tool(self, call: ToolCall) -> Any:
        # The tool call's idempotency key is "<tenant>/<step identity>".
        key = call.idempotency_key.removeprefix(f"{call.tenant}/")
        async with (
            _admitted(self.gate, call.tenant, call.quota),
            self.meter.attempt(call.tenant, key, call.attempt, "tool"),
        ):
            with step_span("tool", call.tenant, call.run_id, call.step_path, call.attempt):
                return await self._tool(call)

    async def _tool(self, call: ToolCall) -> Any:
        secrets = Redactor()
        try:
            # The tenant's registry (SQLite) is read in one thread hop, not on the event loop.
            if self.tenants is not None:
                tool, args, secrets, policy = await asyncio.to_thread(self._tenant_parts, call)
            else:
                tool, args, secrets, policy = self._tenant_parts(call)
            tool.check_args(args)
            ctx = ToolContext(
                tenant=call.tenant,
                run_id=call.run_id,
                step_path=call.step_path,
                attempt=call.attempt,
                idempotency_key=call.idempotency_key,
                store=self.store,
                http_policy=policy,
            )
            with tool_span(call.tool):
                result = await heartbeating(tool.handler(args, ctx))
        except ToolError as exc:
            message = secrets.message(exc.message)
            raise _fail(message, exc.error_type, retryable=exc.retryable, retry_after=exc.retry_after) from None
        except TenantError as exc:
            raise _fail(secrets.message(str(exc)), type(exc).__name__, retryable=False) from None
        except (asyncio.CancelledError, ApplicationError):
            raise
        except Exception as exc:
            # A tool's own bug: its message may quote an argument (a secret); the cause is dropped
            # so neither the message nor a traceback carries it to history or the worker log.
            # A RecursionError is the same on every attempt (a value nested past the stack): a
            # retry would only repeat the call's effect.
            message = secrets.message(f"{type(exc).__name__}: {exc}")
            raise _fail(message, type(exc).__name__, retryable=not isinstance(exc, RecursionError)) from None
        # Secret values never leave the activity: not in outputs, so not in history or status.
        return _checked_output(result, f"tool {call.tool!r}", call.quota, secrets)

    def _tenant_parts(self, call: ToolCall) -> tuple[Tool, dict[str, Any], Redactor, HttpPolicy | None]:
        """The grant (checked again here, whoever submitted the plan), the tool, the arguments with
        secrets resolved, what to redact, and the egress policy: everything a tool call reads from
        the tenant registry."""
        secrets = Redactor()
        if self.tenants is not None:
            self.tenants.require_tool(call.tenant, call.tool)
            # Every secret of the tenant, not only those this step uses: a value an earlier step
            # wrote or a service echoes must not reach history either.
            secrets = Redactor(self.tenants.secret_values(call.tenant))
        tool = self._lookup(call)  # an unknown tool fails before any secret is read
        args, used = self._resolve_secrets(call.tenant, call.args, call.secrets)
        if used and not tool.accepts_secrets:
            raise ToolError(
                f"tool {call.tool!r} does not accept secrets: it stores or reshapes its arguments, "
                "where redaction cannot follow them",
                error_type="SecretNotAllowed",
            )
        return tool, args, secrets, self._egress(call.tenant)

    def _lookup(self, call: ToolCall) -> Tool:
        """The worker's own tool, else the tenant's source tool (checked against the run's pin)."""
        if call.tool in self.registry or self.sources is None:
            return self.registry.get(call.tool)
        return self.sources.tool(call.tenant, call.tool, call.pin) or self.registry.get(call.tool)

    def _resolve_secrets(
        self, tenant: str, args: dict[str, Any], honoured: list[str] | None
    ) -> tuple[dict[str, Any], list[str]]:
        """Replace the ``{"$secret": "NAME"}`` references at the pointers ``honoured`` (the plan's
        own; None: a call scheduled before they were listed, every one) with the tenant's secret,
        here and nowhere else. A reference anywhere else arrived as data: refused, not resolved."""
        found: list[str] = []
        allowed = None if honoured is None else set(honoured)

        def resolve(value: Any, pointer: str) -> Any:
            if isinstance(value, dict):
                if set(value) == {SECRET_KEY}:
                    if allowed is not None and pointer not in allowed:
                        raise ToolError(
                            f"argument {pointer or '/'} names secret {str(value[SECRET_KEY])[:100]!r} but came from "
                            "data (an output, event or input), not from the plan: only the plan's own "
                            '{"$secret": NAME} arguments are resolved',
                            error_type="SecretFromData",
                        )
                    if self.tenants is None:
                        raise ToolError("secrets need the tenant registry (DURAPLAN_TENANCY=1)", error_type="NoSecrets")
                    secret = self.tenants.resolve_secret(tenant, str(value[SECRET_KEY]))
                    found.append(secret)
                    return secret
                return {k: resolve(v, f"{pointer}/{_part(k)}") for k, v in value.items()}
            if isinstance(value, list):
                return [resolve(v, f"{pointer}/{i}") for i, v in enumerate(value)]
            return value

        return resolve(args, ""), found

    def _egress(self, tenant: str) -> HttpPolicy | None:
        """With tenancy, HTTP goes only where the tenant's allowlist says (empty: nowhere)."""
        if self.tenants is None:
            return None
        policy: HttpPolicy = self.tenants.http_policy(tenant)
        return policy

    @activity.defn(name=run_code)
    async def code(self, call: CodeCall) -> Any:
        limits = SandboxLimits(
            memory_mb=call.memory_mb or SandboxLimits.memory_mb,
            cpu_seconds=call.cpu_seconds or SandboxLimits.cpu_seconds,
        )
        key = step_key(call.run_id, call.generation, call.step_path)
        try:
            async with (
                _admitted(self.gate, call.tenant, call.quota),
                self.meter.attempt(call.tenant, key, call.attempt, "code") as stats,
            ):

                def on_cpu(seconds: float) -> None:
                    stats.cpu_seconds = seconds

                with step_span("code", call.tenant, call.run_id, call.step_path, call.attempt):
                    result = await heartbeating(self.sandbox.run(call.code, call.inputs, limits, on_cpu=on_cpu))
        except SandboxError as exc:
            raise _fail(f"code step failed: {exc}", exc.error_type, retryable=exc.retryable) from None
        return _checked_output(result, "code step", call.quota)

    @activity.defn(name=run_llm)
    async def llm(self, call: LlmCall) -> dict[str, Any]:
        model = call.model or self.default_model
        if not model:
            raise _fail(
                "llm step has no model: set the step's model or DURAPLAN_MODEL on the worker",
                "LlmNotConfigured",
                retryable=False,
            )
        key = step_key(call.run_id, call.generation, call.step_path)
        async with (
            _admitted(self.gate, call.tenant, call.quota),
            self.meter.attempt(call.tenant, key, call.attempt, "llm") as stats,
        ):

            def on_usage(prompt_tokens: int, completion_tokens: int) -> None:
                # reported before the answer is checked: a rejected answer's tokens were spent too
                stats.prompt_tokens, stats.completion_tokens = prompt_tokens, completion_tokens
                stats.cost_usd = llm_cost(model, prompt_tokens, completion_tokens)

            with step_span("llm", call.tenant, call.run_id, call.step_path, call.attempt):
                return await self._llm(call, model, on_usage)

    async def _llm(
        self, call: LlmCall, model: str, on_usage: Callable[[int, int], None] | None = None
    ) -> dict[str, Any]:
        from executor.worker.llm import complete

        # A script computes its model at run time; plans' literal ones were checked at submit.
        if call.model is not None and (problem := model_problem(call.model)) is not None:
            raise _fail(problem, "ModelRefused", retryable=False)
        result = await heartbeating(complete(call, model, self._completion, on_usage=on_usage))
        return dict(_checked_output(result, "llm step", call.quota))

    @activity.defn(name=run_script)
    async def script(self, seg: ScriptSegment) -> dict[str, Any]:
        """One script segment; its tool or llm call goes through ``_tool`` / ``llm`` like a step's."""

        async def perform(fn: str, args: list[Any], kwargs: dict[str, Any], index: int) -> Any:
            call = script_call(seg, fn, args, kwargs, index)
            if isinstance(call, ToolCall):
                return await self._tool(call)
            model = call.model or self.default_model
            if not model:
                message = "llm() has no model: pass model= or set DURAPLAN_MODEL"
                raise _fail(message, "LlmNotConfigured", retryable=False)
            return (await self._llm(call, model))["content"]

        try:
            async with _admitted(self.gate, seg.tenant, seg.quota):
                result = await heartbeating(run_segment(self.sandbox, seg, perform))
        except SandboxError as exc:
            raise _fail(f"script segment failed: {exc}", exc.error_type, retryable=exc.retryable) from None
        if "output" in result:
            result["output"] = _checked_output(result["output"], "script step", seg.quota)
        return result


def _part(key: Any) -> str:
    """A JSON pointer part (as ``executor.lang.secret_refs`` writes them)."""
    return str(key).replace("~", "~0").replace("/", "~1")
