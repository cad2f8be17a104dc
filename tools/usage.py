"""The usage ledger: what each tenant used, per UTC day, recorded exactly once.

It lives in the tool store's database (``<home>/store.db``, or the shared PostgreSQL of
``DURAPLAN_DATABASE_URL``) on a connection of its own, through the same seam (``tools.database``):
plain SQL (``INSERT ... ON CONFLICT``, ``GROUP BY``, ``SUM``) written once for both.

What "once" means, and why every table is keyed the way it is:

- ``usage_steps``: one row per executed step, keyed by the step's identity (run id, restart
  generation, step path). The first attempt of a step that finishes inserts it; later attempts,
  a re-executed attempt after a worker crash, or a replayed local activity find it there
  (``ON CONFLICT DO NOTHING``). So a retried step counts once, on the day its first attempt ended.
- ``usage_attempts``: one row per finished attempt, keyed by step identity + attempt number: the
  resources (activity seconds, code CPU seconds, tokens, cost) of every attempt count, a retried
  step's failed attempts included, but the same attempt executed twice (a local activity replayed
  after a crash) counts once. An attempt whose worker was killed before it finished records
  nothing: its work is lost and is done again by the next attempt, which is recorded.
- ``usage_runs``: one row per run (run id + generation): started on one day, ended (completed,
  failed, cancelled) on another; an end is recorded once (``DO UPDATE ... WHERE outcome IS NULL``).
- ``usage_workflow_steps``: steps the workflow interprets itself (set, sleep, wait_for_event,
  foreach, switch, subplan, fail), counted by kind per run segment (a continue-as-new boundary),
  keyed by run id + generation + segment.
- ``usage_reconcile``: how far the reconciler (``executor.service.usage_reconcile``) has read closed
  runs from visibility (a close time), and which process holds the lease to read next. Losing it,
  or two readers at once, costs only re-reading: the rows above are keyed, so nothing counts twice.

Every query filters by tenant; nothing reads across tenants.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from tools.database import Database, Tx, open_database

__all__ = ["AttemptUsage", "DayUsage", "RunEnd", "UsageStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_steps (
    tenant      {TEXT} NOT NULL,
    step_key    {TEXT} NOT NULL,
    day         {TEXT} NOT NULL,
    kind        {TEXT} NOT NULL,
    recorded_at {REAL} NOT NULL,
    PRIMARY KEY (tenant, step_key)
);
CREATE INDEX IF NOT EXISTS usage_steps_by_day ON usage_steps (tenant, day);

CREATE TABLE IF NOT EXISTS usage_attempts (
    tenant            {TEXT} NOT NULL,
    step_key          {TEXT} NOT NULL,
    attempt           BIGINT NOT NULL,
    day               {TEXT} NOT NULL,
    kind              {TEXT} NOT NULL,
    outcome           {TEXT} NOT NULL,
    activity_seconds  {REAL} NOT NULL,
    cpu_seconds       {REAL} NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_usd          {REAL} NOT NULL,
    recorded_at       {REAL} NOT NULL,
    PRIMARY KEY (tenant, step_key, attempt)
);
CREATE INDEX IF NOT EXISTS usage_attempts_by_day ON usage_attempts (tenant, day);

CREATE TABLE IF NOT EXISTS usage_runs (
    tenant      {TEXT} NOT NULL,
    run_key     {TEXT} NOT NULL,
    started_day {TEXT} NOT NULL,
    ended_day   {TEXT},
    outcome     {TEXT},
    PRIMARY KEY (tenant, run_key)
);
CREATE INDEX IF NOT EXISTS usage_runs_started ON usage_runs (tenant, started_day);
CREATE INDEX IF NOT EXISTS usage_runs_ended ON usage_runs (tenant, ended_day);
CREATE INDEX IF NOT EXISTS usage_runs_open ON usage_runs (tenant, started_day) WHERE outcome IS NULL;

CREATE TABLE IF NOT EXISTS usage_workflow_steps (
    tenant      {TEXT} NOT NULL,
    segment_key {TEXT} NOT NULL,
    kind        {TEXT} NOT NULL,
    day         {TEXT} NOT NULL,
    steps       BIGINT NOT NULL,
    PRIMARY KEY (tenant, segment_key, kind)
);
CREATE INDEX IF NOT EXISTS usage_workflow_steps_by_day ON usage_workflow_steps (tenant, day);

CREATE TABLE IF NOT EXISTS usage_reconcile (
    scope       {TEXT} NOT NULL PRIMARY KEY,
    close_time  {REAL},
    holder      {TEXT},
    lease_until {REAL} NOT NULL
);
"""


@dataclass(frozen=True)
class AttemptUsage:
    """One finished attempt of an activity step (tool, code, llm)."""

    tenant: str
    step_key: str  # "<run id>/<generation>/<step path>"
    attempt: int
    kind: str
    outcome: str  # completed | failed | cancelled
    day: str  # UTC, YYYY-MM-DD
    activity_seconds: float = 0.0
    cpu_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class RunEnd:
    """A run segment ending: its outcome (None at a continue-as-new) and workflow-step counts."""

    tenant: str
    run_key: str  # "<run id>/<generation>"
    segment: int
    started_day: str
    day: str
    outcome: str | None
    workflow_steps: dict[str, int] = field(default_factory=dict)


@dataclass
class DayUsage:
    day: str
    steps: dict[str, int] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    activity_seconds: float = 0.0
    code_cpu_seconds: float = 0.0
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    llm_cost_usd: float = 0.0
    runs_started: int = 0
    runs_completed: int = 0
    runs_failed: int = 0
    runs_cancelled: int = 0
    runs_terminated: int = 0  # terminated or timed out: ended without running their own end


class UsageStore:
    """The ledger on its own connection to ``target``: a SQLite path or a PostgreSQL URL."""

    def __init__(self, target: str | os.PathLike[str]) -> None:
        # NORMAL in WAL mode: a commit survives a killed process (what "once" is about); only a
        # power cut may lose the last commits, and metering is not worth an fsync per step.
        self._db = open_database(target, sqlite_pragmas=("journal_mode=WAL", "synchronous=NORMAL"))
        self.location = self._db.location  # never a password
        try:
            self._db.create_schema(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    @property
    def database(self) -> Database:
        """The connection source, for state kept beside the ledger (``tools.carry_store``)."""
        return self._db

    def close(self) -> None:
        self._db.close()

    # -- writes ----------------------------------------------------------------------------

    async def record_attempt(self, usage: AttemptUsage) -> bool:
        """Record a finished attempt (and its step, if first); False if this attempt was recorded before."""
        return await self._write(lambda tx: _attempt_tx(tx, usage))

    async def record_run_start(self, tenant: str, run_key: str, day: str) -> bool:
        """A run started; False if it was recorded before (a retried submit, or the worker's backfill)."""

        def insert(tx: Tx) -> bool:
            cur = tx.execute(
                "INSERT INTO usage_runs (tenant, run_key, started_day) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant, run_key) DO NOTHING",
                (tenant, run_key, day),
            )
            return cur.rowcount > 0

        return await self._write(insert)

    async def record_run_end(self, end: RunEnd) -> None:
        await self._write(lambda tx: _run_end_tx(tx, end))

    async def record_run_ends(self, ends: list[RunEnd]) -> None:
        """Several run ends in one transaction (the reconciler's page of closed runs)."""

        def write(tx: Tx) -> None:
            for end in ends:
                _run_end_tx(tx, end)

        if ends:
            await self._write(write)

    async def open_runs(self, tenant: str, limit: int) -> list[str]:
        """Run keys of the tenant's runs started and not recorded as ended, newest day first."""

        def read(tx: Tx) -> list[str]:
            cur = tx.execute(
                "SELECT run_key FROM usage_runs WHERE tenant = ? AND outcome IS NULL "
                "ORDER BY started_day DESC, run_key LIMIT ?",
                (tenant, limit),
            )
            return [str(row[0]) for row in cur]

        return await asyncio.to_thread(self._run_read, read)

    # -- the reconciler's checkpoint and lease -----------------------------------------------

    async def reconciled_until(self, scope: str) -> float | None:
        """The latest close time (epoch seconds) the reconciler of ``scope`` has read; None: never read."""

        def read(tx: Tx) -> float | None:
            row = tx.execute("SELECT close_time FROM usage_reconcile WHERE scope = ?", (scope,)).fetchone()
            return None if row is None or row[0] is None else float(row[0])

        return await asyncio.to_thread(self._run_read, read)

    async def advance_reconciled(self, scope: str, close_time: float) -> None:
        """Move the checkpoint forward to ``close_time`` (never back: readers may finish out of order)."""

        def write(tx: Tx) -> None:
            tx.execute(
                "INSERT INTO usage_reconcile (scope, close_time, lease_until) VALUES (?, ?, 0) "
                "ON CONFLICT (scope) DO UPDATE SET close_time = CASE WHEN usage_reconcile.close_time IS NULL "
                "OR excluded.close_time > usage_reconcile.close_time THEN excluded.close_time "
                "ELSE usage_reconcile.close_time END",
                (scope, close_time),
            )

        await self._write(write)

    async def take_lease(self, scope: str, holder: str, seconds: float) -> bool:
        """Hold ``scope``'s reading for ``seconds`` unless another holder's lease is still running;
        True if ``holder`` has it now. One reader at a time saves the others' visibility reads."""

        def take(tx: Tx) -> bool:
            now = time.time()
            tx.execute(
                "INSERT INTO usage_reconcile (scope, close_time, holder, lease_until) VALUES (?, NULL, ?, ?) "
                "ON CONFLICT (scope) DO NOTHING",
                (scope, holder, now + seconds),
            )
            cur = tx.execute(
                "UPDATE usage_reconcile SET holder = ?, lease_until = ? "
                "WHERE scope = ? AND (holder = ? OR holder IS NULL OR lease_until < ?)",
                (holder, now + seconds, scope, holder, now),
            )
            return cur.rowcount > 0

        return await self._write(take)

    # -- reads -----------------------------------------------------------------------------

    async def usage(self, tenant: str, first_day: str, last_day: str) -> list[DayUsage]:
        """Days from ``first_day`` to ``last_day`` (inclusive) that have any usage, oldest first."""
        return await asyncio.to_thread(self._run_read, lambda tx: _usage(tx, tenant, first_day, last_day))

    # -- plumbing --------------------------------------------------------------------------

    async def _write(self, fn: Callable[[Tx], T]) -> T:
        return await asyncio.to_thread(self._run_write, fn)

    def _run_write(self, fn: Callable[[Tx], T]) -> T:
        with self._db.transaction() as tx:
            return fn(tx)

    def _run_read(self, fn: Callable[[Tx], T]) -> T:
        with self._db.reading() as tx:
            return fn(tx)


def _attempt_tx(conn: Tx, u: AttemptUsage) -> bool:
    now = time.time()
    conn.execute(
        "INSERT INTO usage_steps (tenant, step_key, day, kind, recorded_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant, step_key) DO NOTHING",
        (u.tenant, u.step_key, u.day, u.kind, now),
    )
    cur = conn.execute(
        "INSERT INTO usage_attempts (tenant, step_key, attempt, day, kind, outcome, activity_seconds, cpu_seconds, "
        "prompt_tokens, completion_tokens, cost_usd, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (tenant, step_key, attempt) DO NOTHING",
        (
            u.tenant,
            u.step_key,
            u.attempt,
            u.day,
            u.kind,
            u.outcome,
            u.activity_seconds,
            u.cpu_seconds,
            u.prompt_tokens,
            u.completion_tokens,
            u.cost_usd,
            now,
        ),
    )
    return cur.rowcount > 0


def _run_end_tx(conn: Tx, end: RunEnd) -> None:
    segment_key = f"{end.run_key}/{end.segment}"
    for kind, steps in sorted(end.workflow_steps.items()):
        if steps > 0:
            conn.execute(
                "INSERT INTO usage_workflow_steps (tenant, segment_key, kind, day, steps) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, segment_key, kind) DO NOTHING",
                (end.tenant, segment_key, kind, end.day, steps),
            )
    if end.started_day:  # the worker backfills a start the submitting client could not record
        conn.execute(
            "INSERT INTO usage_runs (tenant, run_key, started_day) VALUES (?, ?, ?) "
            "ON CONFLICT (tenant, run_key) DO NOTHING",
            (end.tenant, end.run_key, end.started_day),
        )
    if end.outcome is not None:
        conn.execute(
            "UPDATE usage_runs SET ended_day = ?, outcome = ? WHERE tenant = ? AND run_key = ? AND outcome IS NULL",
            (end.day, end.outcome, end.tenant, end.run_key),
        )


def _usage(conn: Tx, tenant: str, first: str, last: str) -> list[DayUsage]:
    days: dict[str, DayUsage] = {}

    def day(d: str) -> DayUsage:
        return days.setdefault(d, DayUsage(day=d))

    span = (tenant, first, last)
    for d, kind, n in conn.execute(
        "SELECT day, kind, COUNT(*) FROM usage_steps WHERE tenant = ? AND day >= ? AND day <= ? GROUP BY day, kind",
        span,
    ):
        day(d).steps[kind] = day(d).steps.get(kind, 0) + int(n)
    for d, kind, n in conn.execute(
        "SELECT day, kind, SUM(steps) FROM usage_workflow_steps WHERE tenant = ? AND day >= ? AND day <= ? "
        "GROUP BY day, kind",
        span,
    ):
        day(d).steps[kind] = day(d).steps.get(kind, 0) + int(n)
    for d, kind, n, seconds, cpu, prompt, completion, cost in conn.execute(
        "SELECT day, kind, COUNT(*), SUM(activity_seconds), SUM(cpu_seconds), SUM(prompt_tokens), "
        "SUM(completion_tokens), SUM(cost_usd) FROM usage_attempts WHERE tenant = ? AND day >= ? AND day <= ? "
        "GROUP BY day, kind",
        span,
    ):
        u = day(d)
        u.attempts[kind] = int(n)
        u.activity_seconds += float(seconds or 0.0)
        u.code_cpu_seconds += float(cpu or 0.0)
        u.llm_prompt_tokens += int(prompt or 0)
        u.llm_completion_tokens += int(completion or 0)
        u.llm_cost_usd += float(cost or 0.0)
    for d, n in conn.execute(
        "SELECT started_day, COUNT(*) FROM usage_runs WHERE tenant = ? AND started_day >= ? AND started_day <= ? "
        "GROUP BY started_day",
        span,
    ):
        day(d).runs_started = int(n)
    for d, outcome, n in conn.execute(
        "SELECT ended_day, outcome, COUNT(*) FROM usage_runs WHERE tenant = ? AND ended_day >= ? AND ended_day <= ? "
        "GROUP BY ended_day, outcome",
        span,
    ):
        u = day(d)
        if outcome == "completed":
            u.runs_completed = int(n)
        elif outcome == "failed":
            u.runs_failed = int(n)
        elif outcome == "cancelled":
            u.runs_cancelled = int(n)
        elif outcome in ("terminated", "timed_out"):
            u.runs_terminated += int(n)
    return [days[d] for d in sorted(days)]
