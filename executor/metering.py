"""Per-tenant metering on the worker side, and the usage report every interface serves.

Activity steps (tool, code, llm) record each attempt as it finishes: wall seconds, the code
sandbox's CPU seconds, model tokens and cost (litellm's cost map). The workflow records how each
run segment ends through ``duraplan.meter_run`` (``executor.run_meter``); the client records a
run's start at submit. The ledger (``tools.usage``) makes each of these count once: see there.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic import BaseModel, Field
from temporalio import activity

from executor.errors import InputsInvalid
from executor.run_meter import METER_RUN, RunMeterCall
from tools.usage import AttemptUsage, DayUsage, RunEnd, UsageStore

__all__ = [
    "MAX_USAGE_DAYS",
    "AttemptStats",
    "Meter",
    "UsageDay",
    "UsageReport",
    "llm_cost",
    "step_key",
    "usage_report",
    "utc_day",
]

log = logging.getLogger(__name__)
MAX_USAGE_DAYS = 366


def utc_day(when: dt.datetime | None = None) -> str:
    return (when or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date().isoformat()


def step_key(run_id: str, generation: int, path: str) -> str:
    """A step's identity across retries, crashes and continue-as-new (a restart is a new generation)."""
    return f"{run_id}/{generation}/{path}"


def llm_cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """USD from litellm's model cost map; 0 for a model it does not price (e.g. a local server)."""
    import litellm

    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    except Exception:
        return 0.0
    return float(prompt_cost) + float(completion_cost)


@dataclass
class AttemptStats:
    """What an attempt reports besides its wall time (set by the activity as it learns it)."""

    cpu_seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class Meter:
    """Records attempts and run segments into ``store`` (None: metering off, nothing recorded)."""

    def __init__(self, store: UsageStore | None) -> None:
        self.store = store

    @contextlib.asynccontextmanager
    async def attempt(self, tenant: str, key: str, attempt: int, kind: str) -> AsyncIterator[AttemptStats]:
        """Time the block and record it when it ends, however it ends (a cancelled attempt used
        its seconds too). A ledger failure is logged: metering never fails a step."""
        stats = AttemptStats()
        started = asyncio.get_running_loop().time()
        outcome = "failed"
        try:
            yield stats
            outcome = "completed"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if self.store is not None:
                usage = AttemptUsage(
                    tenant=tenant,
                    step_key=key,
                    attempt=attempt,
                    kind=kind,
                    outcome=outcome,
                    day=utc_day(),
                    activity_seconds=asyncio.get_running_loop().time() - started,
                    cpu_seconds=stats.cpu_seconds,
                    prompt_tokens=stats.prompt_tokens,
                    completion_tokens=stats.completion_tokens,
                    cost_usd=stats.cost_usd,
                )
                # shielded: a cancelled attempt is still written
                await asyncio.shield(self._record(usage))

    async def _record(self, usage: AttemptUsage) -> None:
        assert self.store is not None
        try:
            await self.store.record_attempt(usage)
        except Exception:
            log.exception("usage of step %s attempt %d not recorded", usage.step_key, usage.attempt)

    @activity.defn(name=METER_RUN)
    async def meter_run(self, call: RunMeterCall) -> None:
        """A run segment ended: its workflow-step counts and, for a top-level run, its outcome."""
        if self.store is None:
            return
        await self.store.record_run_end(
            RunEnd(
                tenant=call.tenant,
                run_key=f"{call.run_id}/{call.generation}",
                segment=call.segment,
                started_day="" if call.child else call.started_at[:10],
                day=utc_day(),
                outcome=None if call.child else call.outcome,
                workflow_steps=call.workflow_steps,
            )
        )

    async def run_started(self, tenant: str, run_id: str, generation: int) -> None:
        """Called by the client once it started a run (the worker backfills it otherwise)."""
        if self.store is None:
            return
        try:
            await self.store.record_run_start(tenant, f"{run_id}/{generation}", utc_day())
        except Exception:
            log.exception("start of run %s not recorded", run_id)


# ---- the report ---------------------------------------------------------------------------------


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
