"""Open sources on one worker, per tenant: connections are reused, never shared across tenants.

A pooled entry is keyed by tenant, source, the source's spec, the tenant's egress policy and a
digest of the rendered credentials: a changed spec, policy or rotated secret opens a new one.
Opening an entry fetches the source's live catalog; a call checks the run's pin (the tool's
``schema_hash`` when the plan was made) against it, so a tool whose schema changed on the server
fails with ``ToolSchemaChanged`` (not retryable) instead of receiving arguments shaped for the old
one. Entries are re-opened after ``catalog_ttl_s`` so server-side changes are seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tools.egress import HttpPolicy
from tools.errors import ToolError
from tools.sources.catalog import Catalog, SourceError, SourceSpec
from tools.sources.mcp import McpConnection, listed_catalog
from tools.sources.openapi import OpenApiClient, base_url_of, fetch_document, operations

__all__ = ["SourcePool", "schema_changed"]

Connection = McpConnection | OpenApiClient


def schema_changed(tool: str, message: str) -> ToolError:
    return ToolError(f"tool {tool!r} {message}; plan again against the current catalog", error_type="ToolSchemaChanged")


@dataclass
class _Entry:
    connection: Connection
    catalog: Catalog
    opened: float


class SourcePool:
    def __init__(
        self, *, allow_stdio: bool = False, catalog_ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.allow_stdio = allow_stdio
        self.catalog_ttl_s = catalog_ttl_s
        self._clock = clock
        self._entries: dict[tuple[Any, ...], _Entry] = {}
        self._locks: dict[tuple[Any, ...], asyncio.Lock] = {}

    def open_count(self, tenant: str | None = None) -> int:
        return sum(1 for key in self._entries if tenant is None or key[0] == tenant)

    async def close(self) -> None:
        entries, self._entries = list(self._entries.values()), {}
        for entry in entries:
            await entry.connection.close()

    async def call(
        self,
        tenant: str,
        spec: SourceSpec,
        headers: dict[str, str],
        policy: HttpPolicy | None,
        tool: str,
        args: dict[str, Any],
        idempotency_key: str,
        pin: str | None,
    ) -> Any:
        if spec.kind == "mcp_stdio" and not self.allow_stdio:
            raise SourceError(
                f"source {spec.name!r} is a stdio MCP server and this worker does not allow them"
                " (DURAPLAN_MCP_STDIO=1)",
                error_type="StdioNotAllowed",
            )
        digest = hashlib.sha256(repr(sorted(headers.items())).encode()).hexdigest()
        key = (tenant, spec.name, spec.spec_hash, policy, digest)
        entry = await self._entry(key, spec, headers, policy)
        live = entry.catalog.get(tool)
        if live is None:
            raise schema_changed(tool, f"is no longer offered by source {spec.name!r}")
        if pin is not None and live.schema_hash != pin:
            raise schema_changed(
                tool,
                f"changed since the plan was made (planned {pin[:19]}, the server now has {live.schema_hash[:19]})",
            )
        try:
            return await entry.connection.call(live, args, idempotency_key, spec.timeout_s)
        except SourceError as exc:
            if exc.error_type in ("McpConnectError", "HttpConnectError"):
                await self._drop(key)  # the next attempt connects afresh
            raise

    async def _entry(
        self, key: tuple[Any, ...], spec: SourceSpec, headers: dict[str, str], policy: HttpPolicy | None
    ) -> _Entry:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if entry is not None and (not entry.connection.alive or self._clock() - entry.opened > self.catalog_ttl_s):
                await self._drop(key)
                entry = None
            if entry is None:
                entry = await self._open(spec, headers, policy)
                self._entries[key] = entry
            return entry

    async def _open(self, spec: SourceSpec, headers: dict[str, str], policy: HttpPolicy | None) -> _Entry:
        now = time.time()
        if spec.kind == "openapi":
            document = await fetch_document(spec, headers, policy)
            base = base_url_of(spec, document)
            tools, skipped = operations(document, spec.name, base)
            client = await OpenApiClient(spec, headers, policy, base).open()
            return _Entry(client, Catalog(spec.name, tools, now, skipped), self._clock())
        connection = await McpConnection(spec, headers, policy).open()
        try:
            catalog = await listed_catalog(connection, now)
        except BaseException:
            await connection.close()
            raise
        return _Entry(connection, catalog, self._clock())

    async def _drop(self, key: tuple[Any, ...]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            await entry.connection.close()
