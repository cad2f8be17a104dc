"""Per-tenant usage as every interface serves it, and the client's record of a run's start.

The worker records steps and run ends (``executor.worker.metering``); this module reads the ledger
(``tools.usage``) into one report per tenant and UTC day range.
"""

from __future__ import annotations

import datetime as dt
import logging

from pydantic import BaseModel, Field

from executor.errors import InputsInvalid
from tools.usage import DayUsage, UsageStore

__all__ = ["MAX_USAGE_DAYS", "UsageDay", "UsageReport", "record_run_start", "usage_report", "utc_day"]

log = logging.getLogger(__name__)
MAX_USAGE_DAYS = 366


def utc_day(when: dt.datetime | None = None) -> str:
    return (when or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date().isoformat()


async def record_run_start(store: UsageStore, tenant: str, run_id: str, generation: int) -> None:
    """Called by the client once it started a run (the worker backfills it otherwise)."""
    try:
        await store.record_run_start(tenant, f"{run_id}/{generation}", utc_day())
    except Exception:
        log.exception("start of run %s not recorded", run_id)


class UsageDay(BaseModel):
    day: str = Field(description="UTC day, YYYY-MM-DD ('total' for the sum over the range)")
    steps: dict[str, int] = Field(description="steps executed, by kind; a retried step counts once")
    attempts: dict[str, int] = Field(description="attempts of activity steps (tool, code, llm), by kind")
    activity_seconds: float
    code_cpu_seconds: float
    llm_prompt_tokens: int
    llm_completion_tokens: int
    llm_cost_usd: float
    runs_started: int
    runs_completed: int
    runs_failed: int
    runs_cancelled: int
    runs_terminated: int = Field(0, description="top-level runs terminated or timed out (no run-end of their own)")


class UsageReport(BaseModel):
    tenant: str
    first_day: str
    last_day: str
    days: list[UsageDay] = Field(description="days with any usage, oldest first")
    total: UsageDay


def _parse_day(name: str, value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InputsInvalid("usage query", [f"{name}: {value!r} is not a date (YYYY-MM-DD)"]) from None


def _range(day: str | None, first: str | None, last: str | None) -> tuple[str, str]:
    if day is not None and (first is not None or last is not None):
        raise InputsInvalid("usage query", ["give day, or from/to, not both"])
    if day is not None:
        one = _parse_day("day", day).isoformat()
        return one, one
    today = dt.date.fromisoformat(utc_day())
    end = _parse_day("to", last) if last is not None else today
    start = _parse_day("from", first) if first is not None else end
    if start > end:
        raise InputsInvalid("usage query", [f"from {start} is after to {end}"])
    if (end - start).days >= MAX_USAGE_DAYS:
        raise InputsInvalid("usage query", [f"at most {MAX_USAGE_DAYS} days at once"])
    return start.isoformat(), end.isoformat()


def _day(u: DayUsage) -> UsageDay:
    return UsageDay(
        day=u.day,
        steps=u.steps,
        attempts=u.attempts,
        activity_seconds=round(u.activity_seconds, 6),
        code_cpu_seconds=round(u.code_cpu_seconds, 6),
        llm_prompt_tokens=u.llm_prompt_tokens,
        llm_completion_tokens=u.llm_completion_tokens,
        llm_cost_usd=round(u.llm_cost_usd, 9),
        runs_started=u.runs_started,
        runs_completed=u.runs_completed,
        runs_failed=u.runs_failed,
        runs_cancelled=u.runs_cancelled,
        runs_terminated=u.runs_terminated,
    )


def _total(days: list[DayUsage]) -> DayUsage:
    total = DayUsage(day="total")
    for u in days:
        for kind, n in u.steps.items():
            total.steps[kind] = total.steps.get(kind, 0) + n
        for kind, n in u.attempts.items():
            total.attempts[kind] = total.attempts.get(kind, 0) + n
        total.activity_seconds += u.activity_seconds
        total.code_cpu_seconds += u.code_cpu_seconds
        total.llm_prompt_tokens += u.llm_prompt_tokens
        total.llm_completion_tokens += u.llm_completion_tokens
        total.llm_cost_usd += u.llm_cost_usd
        total.runs_started += u.runs_started
        total.runs_completed += u.runs_completed
        total.runs_failed += u.runs_failed
        total.runs_cancelled += u.runs_cancelled
        total.runs_terminated += u.runs_terminated
    return total


async def usage_report(
    store: UsageStore, tenant: str, *, day: str | None = None, first: str | None = None, last: str | None = None
) -> UsageReport:
    """One tenant's usage for ``day``, or ``first``..``last`` (inclusive, UTC); today by default."""
    start, end = _range(day, first, last)
    days = await store.usage(tenant, start, end)
    return UsageReport(
        tenant=tenant, first_day=start, last_day=end, days=[_day(u) for u in days], total=_day(_total(days))
    )
