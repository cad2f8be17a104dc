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
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from executor.engine.contract import HEARTBEAT_TIMEOUT, RUN_CODE, RUN_LLM, RUN_TOOL, TENANT_BUSY
from executor.engine.models import CodeCall, LlmCall, StepQuota, ToolCall
from executor.service.tenants import TenantError, TenantRegistry
from executor.worker.carry import CarryActivities
from executor.worker.fairness import TenantGate
from executor.worker.sandbox import Sandbox, SandboxError, SandboxLimits
from tools.egress import HttpPolicy
from tools.errors import ToolError
from tools.registry import ToolContext, ToolRegistry
from tools.store import Store

__all__ = [
    "HEARTBEAT_TIMEOUT",
    "MAX_OUTPUT_BYTES",
    "StepActivities",
    "heartbeating",
    "run_code",
    "run_llm",
    "run_tool",
]

run_tool, run_code, run_llm = RUN_TOOL, RUN_CODE, RUN_LLM
MAX_OUTPUT_BYTES = 1024 * 1024  # the reference product's per-step result limit
SECRET_KEY = "$secret"  # {"$secret": "NAME"} in tool arguments: resolved only inside the activity

T = TypeVar("T")


def _fail(message: str, error_type: str, *, retryable: bool, retry_after: float | None = None) -> ApplicationError:
    return ApplicationError(message, {"retry_after": retry_after}, type=error_type, non_retryable=not retryable)


def _checked_output(value: Any, what: str, quota: StepQuota | None = None) -> Any:
    """JSON-ready output under the size limit (the tenant's, else 1 MiB); anything else fails the
    step, not the worker."""
    value = _jsonable(value)
    limit = quota.max_output_bytes if quota is not None and quota.max_output_bytes else MAX_OUTPUT_BYTES
    try:
        size = len(json.dumps(value, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
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


def _redact(value: Any, secrets: list[str]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, "***")
        return value
    if isinstance(value, list | tuple):
        return [_redact(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: _redact(v, secrets) for k, v in value.items()}
    return value


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
    ) -> None:
        self.registry = registry
        self.store = store
        self.sandbox = sandbox
        self.default_model = default_model
        self._completion = completion
        self.tenants = tenants
        self.gate = TenantGate()

    def all(self) -> list[Callable[..., Any]]:
        # The carry activities keep a long run's continue-as-new state in this store (executor.worker.carry).
        return [self.tool, self.code, self.llm, *CarryActivities(self.store).all()]

    @activity.defn(name=run_tool)
    async def tool(self, call: ToolCall) -> Any:
        async with _admitted(self.gate, call.tenant, call.quota):
            return await self._tool(call)

    async def _tool(self, call: ToolCall) -> Any:
        secrets: list[str] = []
        try:
            if self.tenants is not None:  # the grant is checked again here, whoever submitted the plan
                self.tenants.require_tool(call.tenant, call.tool)
            tool = self.registry.get(call.tool)
            args, secrets = self._resolve_secrets(call.tenant, call.args)
            tool.check_args(args)
            ctx = ToolContext(
                tenant=call.tenant,
                run_id=call.run_id,
                step_path=call.step_path,
                attempt=call.attempt,
                idempotency_key=call.idempotency_key,
                store=self.store,
                http_policy=self._egress(call.tenant),
            )
            result = await heartbeating(tool.handler(args, ctx))
        except ToolError as exc:
            message = _redact(exc.message, secrets)
            raise _fail(message, exc.error_type, retryable=exc.retryable, retry_after=exc.retry_after) from None
        except TenantError as exc:
            raise _fail(str(exc), type(exc).__name__, retryable=False) from None
        # Secret values never leave the activity: not in outputs, so not in history or status.
        return _checked_output(_redact(result, secrets), f"tool {call.tool!r}", call.quota)

    def _resolve_secrets(self, tenant: str, args: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Replace ``{"$secret": "NAME"}`` values with the tenant's secret, here and nowhere else."""
        found: list[str] = []

        def resolve(value: Any) -> Any:
            if isinstance(value, dict):
                if set(value) == {SECRET_KEY}:
                    if self.tenants is None:
                        raise ToolError("secrets need the tenant registry (DURAPLAN_TENANCY=1)", error_type="NoSecrets")
                    secret = self.tenants.resolve_secret(tenant, str(value[SECRET_KEY]))
                    found.append(secret)
                    return secret
                return {k: resolve(v) for k, v in value.items()}
            if isinstance(value, list):
                return [resolve(v) for v in value]
            return value

        return resolve(args), found

    def _egress(self, tenant: str) -> HttpPolicy | None:
        """With tenancy, HTTP goes only where the tenant's allowlist says (empty: nowhere)."""
        if self.tenants is None:
            return None
        return HttpPolicy(allowed_hosts=frozenset(self.tenants.egress(tenant)))

    @activity.defn(name=run_code)
    async def code(self, call: CodeCall) -> Any:
        limits = SandboxLimits(
            memory_mb=call.memory_mb or SandboxLimits.memory_mb,
            cpu_seconds=call.cpu_seconds or SandboxLimits.cpu_seconds,
        )
        try:
            async with _admitted(self.gate, call.tenant, call.quota):
                result = await heartbeating(self.sandbox.run(call.code, call.inputs, limits))
        except SandboxError as exc:
            raise _fail(f"code step failed: {exc}", exc.error_type, retryable=exc.retryable) from None
        return _checked_output(result, "code step", call.quota)

    @activity.defn(name=run_llm)
    async def llm(self, call: LlmCall) -> dict[str, Any]:
        from executor.worker.llm import complete

        model = call.model or self.default_model
        if not model:
            raise _fail(
                "llm step has no model: set the step's model or DURAPLAN_MODEL on the worker",
                "LlmNotConfigured",
                retryable=False,
            )
        async with _admitted(self.gate, call.tenant, call.quota):
            result = await heartbeating(complete(call, model, self._completion))
        return dict(_checked_output(result, "llm step", call.quota))
