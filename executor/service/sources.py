"""Tenant tool sources, wired to the tenant registry: manage them, build a tenant's tool registry
from them, and call their tools from the step activity.

``ToolSources`` is what the CLI, the HTTP API and ``Duraplan`` use (control plane): adding or
refreshing a source fetches its catalog with the tenant's egress policy and secrets, and stores
it. ``SourceCalls`` is the worker's side: it resolves header secrets inside the activity only,
calls through a ``SourcePool`` (connections per worker and tenant) and checks the run's pins.
Stdio MCP servers run a command on the worker: only an operator allows them
(``DURAPLAN_MCP_STDIO=1``), and only the CLI (an administrator) can add one.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections import OrderedDict
from typing import Any

from executor.lang.validate import all_steps
from executor.service.tenants import TenantError, TenantRegistry
from schemas.plan import Plan, SubplanStep, ToolStep
from tools.errors import ToolError
from tools.redaction import Redactor
from tools.registry import Tool, ToolContext, ToolRegistry
from tools.sources.catalog import Catalog, CatalogTool, SourceError, SourceSpec, render_headers
from tools.sources.mcp import mcp_catalog
from tools.sources.openapi import openapi_catalog
from tools.sources.pool import SourcePool, schema_changed
from tools.sources.store import UnknownSource

__all__ = ["STDIO_ENV", "SourceCalls", "ToolSources", "describe", "plan_tools", "tool_pins"]

STDIO_ENV = "DURAPLAN_MCP_STDIO"


class ToolSources:
    """Add, list, refresh and remove a tenant's sources; the tenant's tools including theirs."""

    def __init__(self, tenants: TenantRegistry, *, reserved: frozenset[str] = frozenset(), allow_stdio: bool = False):
        """``reserved``: prefixes a source may not take (the built-in families and loaded modules')."""
        self.tenants = tenants
        self.reserved = reserved
        self.allow_stdio = allow_stdio
        self._built: dict[tuple[str, str], tuple[Tool, ...]] = {}

    async def add(self, tenant: str, spec: SourceSpec, *, replace: bool = False) -> Catalog:
        """Fetch the source's catalog and store both; ValueError for a taken name or a refused kind."""
        self.tenants.get(tenant)
        if spec.name in self.reserved:
            raise ValueError(f"source name {spec.name!r} is taken by built-in or loaded tools")
        if spec.kind == "mcp_stdio" and not self.allow_stdio:
            raise ValueError(
                f"stdio MCP sources run a command on the workers; the operator has not allowed them ({STDIO_ENV}=1)"
            )
        if not replace:
            try:
                self.tenants.sources.get(tenant, spec.name)
                raise ValueError(f"tenant {tenant!r} already has a tool source {spec.name!r}; remove it first")
            except UnknownSource:
                pass
        catalog = await self._fetch(tenant, spec)
        self.tenants.sources.put(tenant, spec, catalog, replace=replace)
        return catalog

    async def refresh(self, tenant: str, name: str) -> Catalog:
        """Fetch the catalog again (runs planned before keep their pins and fail on changed tools)."""
        spec, _ = self.get(tenant, name)
        return await self.add(tenant, spec, replace=True)

    def remove(self, tenant: str, name: str) -> None:
        self.tenants.get(tenant)
        self.tenants.sources.remove(tenant, name)

    def get(self, tenant: str, name: str) -> tuple[SourceSpec, Catalog]:
        self.tenants.get(tenant)
        return self.tenants.sources.get(tenant, name)

    def list(self, tenant: str) -> list[dict[str, Any]]:
        """Each source's spec (header templates, never values), catalog hash and tool names."""
        self.tenants.get(tenant)
        return [describe(spec, catalog) for spec, catalog in self.tenants.sources.list(tenant)]

    def entries(self, tenant: str) -> builtins.list[dict[str, Any]]:
        """Catalog entries of every source tool of the tenant (granted or not)."""
        return [
            tool.entry(spec.name, spec.kind)
            for spec, catalog in self.tenants.sources.list(tenant)
            for tool in catalog.tools
        ]

    def registry_for(self, tenant: str, base: ToolRegistry) -> ToolRegistry:
        """``base`` plus the tenant's source tools (for validation and the planner; not callable)."""
        sources = self.tenants.sources.list(tenant)
        if not sources:
            return base  # the common case, on every submit: no copy
        tools = [base.get(n) for n in base.names()]
        for spec, catalog in sources:
            if spec.name not in self.reserved:
                tools.extend(t for t in self._tools(catalog) if t.name not in base)
        return ToolRegistry(tools)

    def _tools(self, catalog: Catalog) -> tuple[Tool, ...]:
        # Building a Tool checks its schema: once per catalog version, not per submitted plan.
        key = (catalog.source, catalog.hash)
        if key not in self._built:
            if len(self._built) > 1000:
                self._built.clear()
            self._built[key] = tuple(tool for t in catalog.tools if (tool := _usable(t)) is not None)
        return self._built[key]

    async def _fetch(self, tenant: str, spec: SourceSpec) -> Catalog:
        headers, used = render_headers(spec.headers, lambda name: self.tenants.resolve_secret(tenant, name))
        policy = self.tenants.http_policy(tenant)
        try:
            if spec.kind == "openapi":
                return await openapi_catalog(spec, headers, policy, time.time())
            return await mcp_catalog(spec, headers, policy, time.time())
        except ToolError as exc:
            # every form of the secrets (an HTTP library quotes an illegal header value: b'tok\r\n...')
            text = Redactor(used).message(exc.message)
            raise SourceError(text, retryable=exc.retryable, error_type=exc.error_type) from None


def describe(spec: SourceSpec, catalog: Catalog) -> dict[str, Any]:
    return {
        **spec.to_dict(),
        "catalog_hash": catalog.hash,
        "fetched_at": catalog.fetched_at,
        "tools": [t.name for t in catalog.tools],
        "skipped": list(catalog.skipped),
    }


def tool_pins(plan_tools: set[str], entries: list[dict[str, Any]]) -> dict[str, str]:
    """The schema hashes of the source tools a plan uses, from the catalog it was planned with."""
    return {str(e["name"]): str(e["schema_hash"]) for e in entries if e.get("schema_hash") and e["name"] in plan_tools}


async def _not_here(args: dict[str, Any], ctx: ToolContext) -> Any:  # pragma: no cover - never dispatched
    raise RuntimeError("source tools are called through SourceCalls")


def _tool(entry: CatalogTool, handler: Any) -> Tool:
    return Tool(entry.name, entry.description, entry.args_schema, handler, side_effects=entry.side_effects, local=False)


def _usable(entry: CatalogTool) -> Tool | None:
    """The tool, or None when its stored schema is refused (a catalog stored before that check): the
    tenant's other tools still validate, and a plan naming this one says it is unknown."""
    try:
        return _tool(entry, _not_here)
    except ValueError:
        return None


class SourceCalls:
    """The step activity's view: the Tool for a source tool call, bound to this worker's pool."""

    def __init__(self, tenants: TenantRegistry, pool: SourcePool | None = None) -> None:
        self.tenants = tenants
        self.pool = pool or SourcePool()

    def tool(self, tenant: str, name: str, pin: str | None) -> Tool | None:
        """None if ``name`` is not a source tool of ``tenant`` (then it is unknown)."""
        prefix = name.split(".", 1)[0]
        try:
            spec, catalog = self.tenants.sources.get(tenant, prefix)
        except UnknownSource:
            if pin is not None:
                raise schema_changed(name, "belongs to a source the tenant no longer has") from None
            return None
        entry = catalog.get(name)
        if entry is None:
            if pin is not None:
                raise schema_changed(name, f"is no longer in source {prefix!r}'s catalog")
            return None
        if pin is not None and entry.schema_hash != pin:
            raise schema_changed(name, f"changed since the plan was made (source {prefix!r} was refreshed)")

        async def call(args: dict[str, Any], ctx: ToolContext) -> Any:
            # Secrets are resolved here, inside the activity, and never leave it.
            try:
                headers, used = render_headers(spec.headers, lambda s: self.tenants.resolve_secret(tenant, s))
            except TenantError as exc:
                raise ToolError(str(exc), error_type=type(exc).__name__) from None
            try:
                result = await self.pool.call(
                    tenant, spec, headers, ctx.http_policy, name, args, ctx.idempotency_key, pin or entry.schema_hash
                )
                return Redactor(used).value(result)  # a server echoing its credentials: not into history
            except ToolError as exc:
                raise ToolError(
                    Redactor(used).message(exc.message),
                    retryable=exc.retryable,
                    error_type=exc.error_type,
                    retry_after=exc.retry_after,
                ) from None

        try:
            return _tool(entry, call)
        except ValueError as exc:  # a catalog stored before its schema was refused: refresh the source
            raise ToolError(str(exc), error_type="ToolSchemaInvalid") from None


# id(plan) -> (the plan, its tools): a resubmitted plan is the same validated ``Plan`` object
# (executor.lang.validate_cache; read-only), and a walk of its steps cost ~75 us per start at 50
# steps. The plan is held so its id is not reused while the entry lives.
_PLAN_TOOLS: OrderedDict[int, tuple[Plan, frozenset[str]]] = OrderedDict()
_PLAN_TOOLS_SIZE = 512
_plan_tools_lock = threading.Lock()


def plan_tools(plan: dict[str, Any] | Plan) -> set[str]:
    """Every tool a plan may call: tool steps and compensations, in nested blocks and subplans."""
    if not isinstance(plan, Plan):
        return _plan_tools(Plan.model_validate(plan))
    with _plan_tools_lock:
        hit = _PLAN_TOOLS.get(id(plan))
        if hit is not None and hit[0] is plan:
            _PLAN_TOOLS.move_to_end(id(plan))
            return set(hit[1])
    found = _plan_tools(plan)
    with _plan_tools_lock:
        _PLAN_TOOLS[id(plan)] = (plan, frozenset(found))
        while len(_PLAN_TOOLS) > _PLAN_TOOLS_SIZE:
            _PLAN_TOOLS.popitem(last=False)
    return found


def _plan_tools(parsed: Plan) -> set[str]:
    found: set[str] = set()
    for step in all_steps(parsed.steps):
        if isinstance(step, ToolStep):
            found.add(step.tool)
        if step.compensate is not None and step.compensate.tool:
            found.add(step.compensate.tool)
        if isinstance(step, SubplanStep):
            found |= _plan_tools(step.plan)
    return found
