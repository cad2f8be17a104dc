"""Per-tenant metering on the worker: each attempt of an activity step, and each run segment's end.

Activity steps (tool, code, llm) record each attempt as it finishes: wall seconds, the code
sandbox's CPU seconds, model tokens and cost (litellm's cost map). The workflow records how each
run segment ends through ``duraplan.meter_run`` (``executor.engine.metering``); the client records
a run's start at submit (``executor.service.usage``). The ledger (``tools.usage``) makes each of
these count once: see there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from temporalio import activity

from executor.engine.metering import METER_RUN, RunMeterCall
from executor.service.usage import utc_day
from tools.usage import AttemptUsage, RunEnd, UsageStore

__all__ = ["AttemptStats", "Meter", "llm_cost", "step_key"]

log = logging.getLogger(__name__)


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
