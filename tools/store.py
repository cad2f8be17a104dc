"""Tenant-scoped state for tools: a key-value store, an effects ledger and an outbox.

It lives in one SQLite file by default, or in PostgreSQL when the store is opened with a
``postgresql://`` URL (``DURAPLAN_DATABASE_URL``), so that several workers share it; the SQL is
written once for both (``tools.database``).

The effects ledger is what makes side effects exactly-once across activity retries: ``once``
runs an effect and records its result in the same transaction, so after a crash either both
happened or neither did, and a retry with the same idempotency key gets the recorded result
instead of a second effect. Idempotent kv writes and outbox messages go through it.

Every query filters by tenant; there is no API that reaches across tenants.

Concurrency: database calls run on worker threads (``asyncio.to_thread``) so the event loop never
blocks on I/O. SQLite: one connection behind a lock, write transactions ``BEGIN IMMEDIATE``, so two
processes sharing the file also serialize the check-then-record in ``once``. PostgreSQL: a
connection pool; ``once`` locks its ledger key and kv writes lock their kv key (``Tx.lock``), so
workers on other machines serialize the same way, and unrelated keys do not wait for each other.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tools.database import Database, Tx, open_database

__all__ = ["EffectOutcome", "Store"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    tenant     {TEXT} NOT NULL,
    key        {TEXT} NOT NULL,
    value      {TEXT} NOT NULL,
    updated_at {REAL} NOT NULL,
    PRIMARY KEY (tenant, key)
){WITHOUT_ROWID};

CREATE TABLE IF NOT EXISTS effects (
    tenant          {TEXT} NOT NULL,
    idempotency_key {TEXT} NOT NULL,
    result          {TEXT} NOT NULL,
    created_at      {REAL} NOT NULL,
    PRIMARY KEY (tenant, idempotency_key)
){WITHOUT_ROWID};

CREATE TABLE IF NOT EXISTS outbox (
    seq             {SERIAL_PK},
    tenant          {TEXT} NOT NULL,
    idempotency_key {TEXT} NOT NULL,
    channel         {TEXT} NOT NULL,
    message         {TEXT} NOT NULL,
    created_at      {REAL} NOT NULL,
    delivered_at    {REAL},
    UNIQUE (tenant, idempotency_key)
);
CREATE INDEX IF NOT EXISTS outbox_by_channel ON outbox (tenant, channel, seq);
"""


@dataclass(frozen=True)
class EffectOutcome:
    """What ``once`` recorded, and whether this call replayed it instead of running the effect."""

    result: Any
    replayed: bool


class Store:
    """The store at ``path``: a SQLite file (or ``":memory:"``), or a ``postgresql://`` URL."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = open_database(
            path,
            # WAL: ":memory:" stays in "memory" mode. FULL: a committed effect record must survive
            # power loss, or its effect repeats.
            sqlite_pragmas=("journal_mode=WAL", "synchronous=FULL"),
        )
        self.path = self._db.location  # never a password
        try:
            self._db.create_schema(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    @property
    def database(self) -> Database:
        """The connection source, for state kept beside the tools' (``tools.carry_store``)."""
        return self._db

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- exactly-once effects ------------------------------------------------------------------

    async def once(self, tenant: str, idempotency_key: str, effect: Callable[[Tx], Any]) -> Any:
        """Run ``effect(conn)`` once per (tenant, idempotency_key); return its recorded result.

        ``effect`` runs inside the transaction that records its JSON-serializable result, on a
        worker thread. It must only use the given ``Tx`` (SQL with ``?`` placeholders, which runs
        on SQLite and PostgreSQL alike) and must not commit or roll back.
        If it raises, nothing is recorded and the error propagates. The result is returned as
        its JSON round trip, so a first call and a replay return equal values.
        """
        outcome = await self.once_outcome(tenant, idempotency_key, effect)
        return outcome.result

    async def once_outcome(self, tenant: str, idempotency_key: str, effect: Callable[[Tx], Any]) -> EffectOutcome:
        """Like ``once``, but also says whether the result was a replay."""
        _check_tenant(tenant)
        _check_key(idempotency_key)
        return await self._write(lambda c: _once_tx(c, tenant, idempotency_key, effect))

    async def effect_count(self, tenant: str) -> int:
        _check_tenant(tenant)

        def count(conn: Tx) -> int:
            sql = "SELECT COUNT(*) FROM effects WHERE tenant = ?"
            return int(conn.execute(sql, (tenant,)).fetchone()[0])

        return await self._read(count)

    # -- key-value -----------------------------------------------------------------------------

    async def kv_get(self, tenant: str, key: str, default: Any = None) -> Any:
        """The stored value, or ``default`` if the key is absent (a stored null is None)."""
        _check_tenant(tenant)
        _check_text("key", key)

        def get(conn: Tx) -> Any:
            row = conn.execute("SELECT value FROM kv WHERE tenant = ? AND key = ?", (tenant, key)).fetchone()
            return default if row is None else json.loads(row[0])

        return await self._read(get)

    async def kv_put(self, tenant: str, key: str, value: Any, *, idempotency_key: str | None = None) -> None:
        _check_tenant(tenant)
        _check_text("key", key)
        encoded = _dumps(value)  # fail on unserializable values before touching the database

        def put(conn: Tx) -> None:
            conn.lock("kv", tenant, key)
            _upsert(conn, tenant, key, encoded)

        await self._maybe_once(tenant, "kv.put", key, idempotency_key, put)

    async def kv_delete(self, tenant: str, key: str, *, idempotency_key: str | None = None) -> bool:
        """Delete ``key``; True if it existed (a replay returns what the first call saw)."""
        _check_tenant(tenant)
        _check_text("key", key)

        def delete(conn: Tx) -> bool:
            conn.lock("kv", tenant, key)
            cur = conn.execute("DELETE FROM kv WHERE tenant = ? AND key = ?", (tenant, key))
            return cur.rowcount > 0

        return bool(await self._maybe_once(tenant, "kv.delete", key, idempotency_key, delete))

    async def kv_list(self, tenant: str, prefix: str = "", *, limit: int | None = None) -> list[str]:
        """Keys starting with ``prefix``, sorted."""
        _check_tenant(tenant)
        _check_text("prefix", prefix)

        def keys(conn: Tx) -> list[str]:
            # substr rather than LIKE: no wildcard escaping, and exact (case-sensitive) matching.
            sql = "SELECT key FROM kv WHERE tenant = ? AND substr(key, 1, CAST(? AS INTEGER)) = ? ORDER BY key"
            params: tuple[Any, ...] = (tenant, len(prefix), prefix)
            if limit is not None:
                sql, params = sql + " LIMIT ?", (*params, limit)
            return [r[0] for r in conn.execute(sql, params)]

        return await self._read(keys)

    async def kv_incr(self, tenant: str, key: str, by: int = 1, *, idempotency_key: str | None = None) -> int:
        """Add ``by`` to an integer value (absent counts as 0); return the new value.

        Raises TypeError if the stored value is not an integer.
        """
        _check_tenant(tenant)
        _check_text("key", key)

        def incr(conn: Tx) -> int:
            conn.lock("kv", tenant, key)  # read-modify-write: no lost update between workers
            row = conn.execute("SELECT value FROM kv WHERE tenant = ? AND key = ?", (tenant, key)).fetchone()
            current = 0 if row is None else json.loads(row[0])
            if isinstance(current, bool) or not isinstance(current, int):
                raise TypeError(f"kv key {key!r} holds {type(current).__name__}, not an integer")
            new = current + by
            _upsert(conn, tenant, key, _dumps(new))
            return new

        return int(await self._maybe_once(tenant, "kv.incr", key, idempotency_key, incr))

    # -- outbox --------------------------------------------------------------------------------

    async def outbox_add(self, tenant: str, idempotency_key: str, channel: str, message: Any) -> dict[str, Any]:
        """Record ``message`` once per idempotency key.

        Returns the outbox entry (as it is now, so ``delivered_at`` is current) plus
        ``duplicate``: True if the key was already recorded, in which case the first call's
        channel and message are kept.
        """
        _check_tenant(tenant)
        _check_text("channel", channel)
        _check_key(idempotency_key)
        encoded = _dumps(message)

        def insert(conn: Tx) -> None:
            conn.execute(
                "INSERT INTO outbox (tenant, idempotency_key, channel, message, created_at) VALUES (?, ?, ?, ?, ?)",
                (tenant, idempotency_key, channel, encoded, time.time()),
            )

        def add(conn: Tx) -> dict[str, Any]:
            effect_key = _effect_key("outbox", "", idempotency_key)
            outcome = _once_tx(conn, tenant, effect_key, insert)
            entry = _outbox_entry(conn, tenant, idempotency_key)
            assert entry is not None  # inserted by this call or an earlier one, same transaction
            return {**entry, "duplicate": outcome.replayed}

        return await self._write(add)

    async def outbox_mark_delivered(self, tenant: str, idempotency_key: str) -> bool:
        """Stamp ``delivered_at`` (first delivery wins); False if there is no such entry."""
        _check_tenant(tenant)
        _check_text("idempotency_key", idempotency_key)

        def mark(conn: Tx) -> bool:
            cur = conn.execute(
                "UPDATE outbox SET delivered_at = coalesce(delivered_at, ?) WHERE tenant = ? AND idempotency_key = ?",
                (time.time(), tenant, idempotency_key),
            )
            return cur.rowcount > 0

        return await self._write(mark)

    async def outbox_get(self, tenant: str, idempotency_key: str) -> dict[str, Any] | None:
        _check_tenant(tenant)
        _check_text("idempotency_key", idempotency_key)
        return await self._read(lambda c: _outbox_entry(c, tenant, idempotency_key))

    async def outbox_list(self, tenant: str, channel: str | None = None) -> list[dict[str, Any]]:
        """Entries in the order they were added."""
        _check_tenant(tenant)
        if channel is not None:
            _check_text("channel", channel)

        def entries(conn: Tx) -> list[dict[str, Any]]:
            sql = f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE tenant = ?"
            params: tuple[str, ...] = (tenant,)
            if channel is not None:
                sql += " AND channel = ?"
                params += (channel,)
            return [_outbox_row(r) for r in conn.execute(sql + " ORDER BY seq", params)]

        return await self._read(entries)

    # -- plumbing ------------------------------------------------------------------------------

    async def _maybe_once(
        self,
        tenant: str,
        kind: str,
        key: str,
        idempotency_key: str | None,
        effect: Callable[[Tx], T],
    ) -> Any:
        if idempotency_key is None:
            return await self._write(effect)
        _check_key(idempotency_key)
        # The ledger key names the operation and kv key, so one idempotency key reused for a
        # different write never replays the wrong result (or silently skips the other write).
        effect_key = _effect_key(kind, key, idempotency_key)
        outcome = await self._write(lambda c: _once_tx(c, tenant, effect_key, effect))
        return outcome.result

    async def purge_tenant(self, tenant: str) -> dict[str, int]:
        """Delete everything of ``tenant`` here (kv, effects ledger, outbox), in one transaction:
        rows removed per table. For a deleted tenant whose runs have ended: a run still going could
        repeat an effect whose ledger row is gone."""
        _check_tenant(tenant)

        def purge(conn: Tx) -> dict[str, int]:
            return {
                table: conn.execute(f"DELETE FROM {table} WHERE tenant = ?", (tenant,)).rowcount
                for table in ("kv", "effects", "outbox")
            }

        return await self._write(purge)

    async def _read(self, fn: Callable[[Tx], T]) -> T:
        import asyncio  # loaded with the running loop; not at import: validating a plan runs none

        return await asyncio.to_thread(self._run_read, fn)

    async def _write(self, fn: Callable[[Tx], T]) -> T:
        import asyncio

        return await asyncio.to_thread(self._run_write, fn)

    def _run_read(self, fn: Callable[[Tx], T]) -> T:
        with self._db.reading() as conn:
            return fn(conn)

    def _run_write(self, fn: Callable[[Tx], T]) -> T:
        with self._db.transaction() as conn:
            return fn(conn)


def _once_tx(
    conn: Tx,
    tenant: str,
    effect_key: str,
    effect: Callable[[Tx], Any],
) -> EffectOutcome:
    # Held to commit: a second worker with the same key waits here, then reads the record below.
    conn.lock("effect", tenant, effect_key)
    row = conn.execute(
        "SELECT result FROM effects WHERE tenant = ? AND idempotency_key = ?",
        (tenant, effect_key),
    ).fetchone()
    if row is not None:
        return EffectOutcome(result=json.loads(row[0]), replayed=True)
    encoded = _dumps(effect(conn))
    if not conn.in_transaction:
        raise RuntimeError("an effect must not commit or roll back the store's transaction")
    conn.execute(
        "INSERT INTO effects (tenant, idempotency_key, result, created_at) VALUES (?, ?, ?, ?)",
        (tenant, effect_key, encoded, time.time()),
    )
    return EffectOutcome(result=json.loads(encoded), replayed=False)


def _upsert(conn: Tx, tenant: str, key: str, encoded: str) -> None:
    conn.execute(
        "INSERT INTO kv (tenant, key, value, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (tenant, key) DO UPDATE SET value = excluded.value, "
        "updated_at = excluded.updated_at",
        (tenant, key, encoded, time.time()),
    )


_OUTBOX_COLUMNS = "idempotency_key, channel, message, created_at, delivered_at"


def _outbox_entry(conn: Tx, tenant: str, key: str) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE tenant = ? AND idempotency_key = ?",
        (tenant, key),
    ).fetchone()
    return None if row is None else _outbox_row(row)


def _outbox_row(row: tuple[Any, ...]) -> dict[str, Any]:
    key, channel, message, created_at, delivered_at = row
    return {
        "idempotency_key": key,
        "channel": channel,
        "message": json.loads(message),
        "created_at": created_at,
        "delivered_at": delivered_at,
    }


def _effect_key(kind: str, subject: str, idempotency_key: str) -> str:
    # JSON array: unambiguous whatever characters the parts contain, and readable in the table.
    return json.dumps([kind, subject, idempotency_key], ensure_ascii=False, separators=(",", ":"))


def _dumps(value: Any) -> str:
    # allow_nan=False: NaN/Infinity are not JSON and would not round-trip through other readers.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _check_tenant(tenant: str) -> None:
    if not isinstance(tenant, str) or not tenant:
        raise ValueError("tenant must be a non-empty string")
    _check_text("tenant", tenant)


def _check_key(idempotency_key: str) -> None:
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise ValueError("idempotency_key must be a non-empty string")
    _check_text("idempotency_key", idempotency_key)


def _check_text(name: str, value: str) -> None:
    # PostgreSQL text cannot hold NUL; refuse it on SQLite too, so both backends accept the same keys.
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL characters")
