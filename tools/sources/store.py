"""Where tool sources and their fetched catalogs live: two tables in the tenant registry's file.

Rows reference ``tenants`` with ``ON DELETE CASCADE``, so deleting a tenant deletes its sources.
Specs hold header *templates* (``{$secret: NAME}``), never secret values.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

from tools.sources.catalog import Catalog, SourceSpec

__all__ = ["SourceStore", "UnknownSource"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tool_sources (
    tenant_id TEXT NOT NULL REFERENCES tenants(tenant_id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    catalog TEXT NOT NULL,
    catalog_hash TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
"""


class UnknownSource(LookupError):
    def __init__(self, tenant: str, name: str) -> None:
        self.tenant = tenant
        self.name = name
        super().__init__(f"tenant {tenant!r} has no tool source {name!r}")


class SourceStore:
    """Sources per tenant. Thread-safe; several processes may share the file (SQLite WAL)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put(self, tenant: str, spec: SourceSpec, catalog: Catalog, *, replace: bool) -> None:
        """Store a source with its catalog; ValueError if it exists and ``replace`` is false."""
        row = (tenant, spec.name, json.dumps(spec.to_dict()), json.dumps(catalog.to_dict()), catalog.hash)
        with self._tx() as db:
            exists = db.execute(
                "SELECT 1 FROM tool_sources WHERE tenant_id = ? AND name = ?", (tenant, spec.name)
            ).fetchone()
            if exists and not replace:
                raise ValueError(f"tenant {tenant!r} already has a tool source {spec.name!r}; remove it first")
            db.execute(
                "INSERT INTO tool_sources VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, name) DO UPDATE SET"
                " spec = excluded.spec, catalog = excluded.catalog, catalog_hash = excluded.catalog_hash,"
                " updated_at = excluded.updated_at",
                (*row, catalog.fetched_at),
            )

    def remove(self, tenant: str, name: str) -> None:
        with self._tx() as db:
            if db.execute("DELETE FROM tool_sources WHERE tenant_id = ? AND name = ?", (tenant, name)).rowcount == 0:
                raise UnknownSource(tenant, name)

    def get(self, tenant: str, name: str) -> tuple[SourceSpec, Catalog]:
        with self._lock:
            row = self._db.execute(
                "SELECT spec, catalog FROM tool_sources WHERE tenant_id = ? AND name = ?", (tenant, name)
            ).fetchone()
        if row is None:
            raise UnknownSource(tenant, name)
        return _decode(row)

    def list(self, tenant: str) -> builtins.list[tuple[SourceSpec, Catalog]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT spec, catalog FROM tool_sources WHERE tenant_id = ? ORDER BY name", (tenant,)
            ).fetchall()
        return [_decode(row) for row in rows]


def _decode(row: tuple[Any, ...]) -> tuple[SourceSpec, Catalog]:
    return SourceSpec.from_dict(json.loads(row[0])), Catalog.from_dict(json.loads(row[1]))
