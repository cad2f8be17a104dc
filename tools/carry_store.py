"""Continue-as-new carries too large for workflow history, kept in the tool store's database.

The engine (``executor.engine.carry``) hands a long run's state to its next execution; when that
state outgrows what history should hold, the worker keeps it here, split into parts, under
(tenant, run id, key). Nothing here is reachable from tools: it is not the kv table.
"""

from __future__ import annotations

import asyncio
import time

from tools.database import Database

__all__ = ["CarryStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run_carry (
    tenant     {TEXT} NOT NULL,
    run_id     {TEXT} NOT NULL,
    key        {TEXT} NOT NULL,
    part       INTEGER NOT NULL,
    body       {TEXT} NOT NULL,
    created_at {REAL} NOT NULL,
    PRIMARY KEY (tenant, run_id, key, part)
){WITHOUT_ROWID}
"""


class CarryStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        db.create_schema(_SCHEMA)

    async def save(self, tenant: str, run_id: str, key: str, parts: list[str], keep: str | None) -> None:
        """Store ``parts`` under ``key`` (replacing any earlier save of it) and drop the run's other
        carries except ``keep`` (the one the current execution was loaded from)."""

        def write() -> None:
            with self._db.transaction() as tx:
                tx.lock("run_carry", tenant, run_id)
                tx.execute(
                    "DELETE FROM run_carry WHERE tenant = ? AND run_id = ? AND key <> ? AND key <> ?",
                    (tenant, run_id, key, keep or key),
                )
                tx.execute("DELETE FROM run_carry WHERE tenant = ? AND run_id = ? AND key = ?", (tenant, run_id, key))
                now = time.time()
                tx.executemany(
                    "INSERT INTO run_carry (tenant, run_id, key, part, body, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [(tenant, run_id, key, i, body, now) for i, body in enumerate(parts)],
                )

        await asyncio.to_thread(write)

    async def load(self, tenant: str, run_id: str, key: str, part: int) -> str | None:
        def read() -> str | None:
            with self._db.reading() as tx:
                row = tx.execute(
                    "SELECT body FROM run_carry WHERE tenant = ? AND run_id = ? AND key = ? AND part = ?",
                    (tenant, run_id, key, part),
                ).fetchone()
                return None if row is None else str(row[0])

        return await asyncio.to_thread(read)

    async def drop(self, tenant: str, run_id: str) -> int:
        def delete() -> int:
            with self._db.transaction() as tx:
                cur = tx.execute("DELETE FROM run_carry WHERE tenant = ? AND run_id = ?", (tenant, run_id))
                return cur.rowcount

        return await asyncio.to_thread(delete)

    async def purge_tenant(self, tenant: str) -> int:
        """Delete every carry of ``tenant`` (a deleted tenant's): rows removed."""

        def delete() -> int:
            with self._db.transaction() as tx:
                return tx.execute("DELETE FROM run_carry WHERE tenant = ?", (tenant,)).rowcount

        return await asyncio.to_thread(delete)
