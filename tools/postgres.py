"""The PostgreSQL backend of ``tools.database``: a psycopg 3 connection pool shared by threads.

Several worker machines point ``DURAPLAN_DATABASE_URL`` at one database and so share one kv
store, one effects ledger, one outbox and one tenant registry. Transactions run at READ
COMMITTED; a transaction that reads and then writes first takes a transaction-scoped advisory lock
on what it touches (``Tx.lock``), which is what makes the effects ledger's check-run-record
exactly-once across workers, as ``BEGIN IMMEDIATE`` does for processes sharing a SQLite file.
Locks are keyed by a 64-bit hash of their parts; a collision only makes two unrelated
transactions wait for each other.

Pooled connections are in autocommit mode, so reads see the latest committed data and a write
transaction is an explicit ``BEGIN ... COMMIT`` (psycopg's ``Connection.transaction``). Each is
checked before it is handed out, so a restarted server costs a reconnect, not a failed step.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from tools.database import POSTGRESQL, Cursor, Database, Tx, _must_still_be_open
from tools.errors import DatabaseUnavailable

__all__ = ["PostgresDatabase", "redact_url"]

CONNECT_TIMEOUT_S = 10.0
# A worker that dies or is cut off inside a transaction must not hold its locks (and so every step
# on the same key, on every worker) for long: the server ends a session idle in a transaction after
# 30 s, and a lock waiter gives up after 60 s (its step fails and is retried). Store transactions
# take milliseconds.
_SESSION_SETTINGS = "SET idle_in_transaction_session_timeout = '30s'; SET lock_timeout = '60s'"


def redact_url(url: str) -> str:
    """``postgresql://user@host:port/dbname``: the URL without its password (or other options)."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparsable URL)"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def _reason(exc: psycopg.Error, url: str) -> str:
    """libpq's message on one line, without the password: on a URL it cannot parse, libpq quotes
    the offending token, which may be the password itself, so then only that is said."""
    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        return "the URL is not a valid postgresql:// connection URI"
    reason = " ".join(str(exc).split())  # libpq's hint comes on a second line
    with contextlib.suppress(ValueError):
        for secret in {password, urlsplit(url).password} - {None, ""}:
            reason = reason.replace(str(secret), "***")
    return reason


@functools.lru_cache(maxsize=512)
def _pyformat(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


def _lock_key(parts: tuple[str, ...]) -> int:
    digest = hashlib.blake2b(json.dumps(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)  # pg_advisory_xact_lock takes a signed bigint


class _PgTx:
    dialect = POSTGRESQL

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        return self._conn.execute(_pyformat(sql), tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(_pyformat(sql), [tuple(r) for r in rows])

    def lock(self, *parts: str) -> None:
        self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(parts),))

    @property
    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status != TransactionStatus.IDLE


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute(_SESSION_SETTINGS)


class PostgresDatabase(Database):
    dialect = POSTGRESQL

    def __init__(self, url: str, *, max_connections: int = 8, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
        self.location = redact_url(url)
        self._closed = False
        # Connect once up front: a wrong URL, password or database fails here, with libpq's reason
        # (less the password), instead of as a pool timeout on first use.
        try:
            psycopg.connect(url, connect_timeout=max(1, round(connect_timeout))).close()
        except psycopg.Error as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {self.location}: {_reason(exc, url)}") from None
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            # Keepalives: notice a server that went away without closing the connection.
            kwargs={"autocommit": True, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3},
            configure=_configure,
            check=ConnectionPool.check_connection,
            timeout=connect_timeout,
            num_workers=1,
            open=False,
            name=f"duraplan {self.location}",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {self.location} (pool timeout)") from None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise RuntimeError(f"database {self.location} is closed")
        with self._pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._connection() as conn, conn.transaction():
            tx = _PgTx(conn)
            yield tx
            _must_still_be_open(tx)

    @contextlib.contextmanager
    def reading(self) -> Iterator[Tx]:
        with self._connection() as conn:
            yield _PgTx(conn)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()
