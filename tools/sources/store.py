"""Where tool sources and their fetched catalogs live: a table next to the tenant registry's,
in its database (the SQLite file or the shared PostgreSQL), through ``tools.database``.

Rows reference ``tenants`` with ``ON DELETE CASCADE``, so deleting a tenant deletes its sources.
Specs hold header *templates* (``{$secret: NAME}``), never secret values.
"""

from __future__ import annotations

import builtins
import json
import time
from typing import Any

from tools.database import Database
from tools.sources.catalog import Catalog, SourceSpec

__all__ = ["LIST_TTL_S", "SourceStore", "UnknownSource"]

LIST_TTL_S = 1.0  # how long a tenant's list of sources, read once, serves this process

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tool_sources (
    tenant_id {TEXT} NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    name {TEXT} NOT NULL,
    spec {TEXT} NOT NULL,
    catalog {TEXT} NOT NULL,
    catalog_hash {TEXT} NOT NULL,
    updated_at {REAL} NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
"""


class UnknownSource(LookupError):
    def __init__(self, tenant: str, name: str) -> None:
        self.tenant = tenant
        self.name = name
        super().__init__(f"tenant {tenant!r} has no tool source {name!r}")


class SourceStore:
    """Sources per tenant, in ``db`` (the tenant registry's database; it owns the connection)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.create_schema(_SCHEMA)
        # tenant -> (when read, its sources). Every submit asks (validation and tool pins): two
        # reads per start before. Changes made through this store drop the entry at once; a
        # change made by another process is seen within LIST_TTL_S, as the tenant context is.
        self._listed: dict[str, tuple[float, builtins.list[tuple[SourceSpec, Catalog]]]] = {}

    def put(self, tenant: str, spec: SourceSpec, catalog: Catalog, *, replace: bool) -> None:
        """Store a source with its catalog; ValueError if it exists and ``replace`` is false."""
        row = (tenant, spec.name, json.dumps(spec.to_dict()), json.dumps(catalog.to_dict()), catalog.hash)
        with self._db.transaction() as tx:
            tx.lock("tool_sources", tenant, spec.name)
            exists = tx.execute(
                "SELECT 1 FROM tool_sources WHERE tenant_id = ? AND name = ?", (tenant, spec.name)
            ).fetchone()
            if exists and not replace:
                raise ValueError(f"tenant {tenant!r} already has a tool source {spec.name!r}; remove it first")
            tx.execute("DELETE FROM tool_sources WHERE tenant_id = ? AND name = ?", (tenant, spec.name))
            tx.execute("INSERT INTO tool_sources VALUES (?, ?, ?, ?, ?, ?)", (*row, catalog.fetched_at))
        self._listed.pop(tenant, None)

    def remove(self, tenant: str, name: str) -> None:
        with self._db.transaction() as tx:
            if tx.execute("DELETE FROM tool_sources WHERE tenant_id = ? AND name = ?", (tenant, name)).rowcount == 0:
                raise UnknownSource(tenant, name)
        self._listed.pop(tenant, None)

    def get(self, tenant: str, name: str) -> tuple[SourceSpec, Catalog]:
        with self._db.reading() as tx:
            row = tx.execute(
                "SELECT spec, catalog FROM tool_sources WHERE tenant_id = ? AND name = ?", (tenant, name)
            ).fetchone()
        if row is None:
            raise UnknownSource(tenant, name)
        return _decode(row)

    def list(self, tenant: str) -> builtins.list[tuple[SourceSpec, Catalog]]:
        now = time.monotonic()
        hit = self._listed.get(tenant)
        if hit is not None and now - hit[0] < LIST_TTL_S:
            return list(hit[1])
        with self._db.reading() as tx:
            rows = tx.execute(
                "SELECT spec, catalog FROM tool_sources WHERE tenant_id = ? ORDER BY name", (tenant,)
            ).fetchall()
        sources = [_decode(row) for row in rows]
        if len(self._listed) > 10_000:
            self._listed.clear()
        self._listed[tenant] = (now, sources)
        return list(sources)


def _decode(row: Any) -> tuple[SourceSpec, Catalog]:
    return SourceSpec.from_dict(json.loads(row[0])), Catalog.from_dict(json.loads(row[1]))
