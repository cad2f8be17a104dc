"""The workflow's side of metering: steps it interprets itself, and how each run segment ends.

Deterministic (runs inside the workflow): it counts finished steps by kind in memory and, when a
run segment ends (completed, failed, cancelled, or continued as new), records the counts and the
outcome:

- runs started at engine version 2 or later upsert them into the run's memo (``METER_MEMO``) just
  before the final command, so they ride the same workflow-task completion (no activity, no extra
  activation); ``executor.service.usage_reconcile`` folds closed executions' memos into the usage
  ledger from visibility;
- from engine version 3, a run's first segment (no continue-as-new before it) that interpreted no
  step itself upserts nothing: everything its end records follows from the execution as visibility
  lists it (tenant and run id from the workflow id, generation from the start memo, outcome from the
  close status, parent or not). The memo upsert is a command, a history event and a visibility
  write on the server (~1.5 ms of worker and server CPU per run here), for runs of tool, code and
  llm steps only that is all they would have paid for metering;
- older runs hand them to one local activity (``duraplan.meter_run``) that writes the ledger, as
  they always did, so their histories replay unchanged.

Either way the ledger rows are keyed by run, generation and segment, so nothing is written twice.
Activity steps (tool, code, llm) are metered by their activities as each attempt finishes, not here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from executor.engine.contract import METER_RUN

__all__ = ["ACTIVITY_KINDS", "MEMO_ENGINE", "METER_MEMO", "METER_RUN", "SILENT_ENGINE", "RunMeter", "RunMeterCall"]

ACTIVITY_KINDS = frozenset({"tool", "code", "llm"})
# Histories recorded before metering existed replay without the local activity.
_PATCH_METER = "meter-run-segments"
# The engine version from which a segment's end is a memo upsert, not a local activity.
MEMO_ENGINE = 2
# The engine version from which a segment with nothing to say (see above) upserts no memo.
SILENT_ENGINE = 3
METER_MEMO = "meter"  # the memo key (its value: RunMeterCall's fields, as JSON)


@dataclass(slots=True)  # one per run: no __dict__
class RunMeterCall:
    tenant: str
    run_id: str
    generation: int
    segment: int
    started_at: str  # ISO, the run's first start (kept across continue-as-new)
    outcome: str | None  # completed | failed | cancelled; None: continued as new
    child: bool  # a subplan's run: its steps count, it is not a run of its own
    workflow_steps: dict[str, int] = field(default_factory=dict)


class RunMeter:
    """A run segment's workflow-interpreted steps, counted; recorded when the segment ends.

    Held by every run for its whole life, so it keeps the few values a record needs in slots of
    its own and makes the record (``RunMeterCall``) and the counts' dict only when they are needed:
    ~240 bytes less per waiting run than a record, a dict and a bound method held all along."""

    __slots__ = ("_engine", "_generation", "_metered", "_run_id", "_segment", "_started_at", "_steps", "_tenant")

    def __init__(
        self,
        tenant: str,
        run_id: str,
        generation: int,
        segment: int,
        started_at: str,
        *,
        metered: bool = True,
        engine: int = 0,
    ) -> None:
        self._tenant, self._run_id, self._generation = tenant, run_id, generation
        self._segment, self._started_at = segment, started_at
        self._metered = metered  # False: nothing to record, so no memo and no local activity at all
        self._engine = engine  # RunInput.engine: the run's commands depend on it
        self._steps: dict[str, int] | None = None  # kind -> count, from the first one

    def step_finished(self, kind: str) -> None:
        if kind not in ACTIVITY_KINDS:
            if self._steps is None:
                self._steps = {}
            self._steps[kind] = self._steps.get(kind, 0) + 1

    def _record(self, outcome: str | None) -> RunMeterCall:
        return RunMeterCall(
            self._tenant,
            self._run_id,
            self._generation,
            self._segment,
            self._started_at,
            outcome,
            workflow.info().parent is not None,
            dict(self._steps or {}),
        )

    async def segment_ended(self, outcome: str | None) -> None:
        """Record the segment; a metering failure is logged, never fails the run.

        Called right before the run's final command (complete, fail, cancel, continue-as-new), with
        nothing awaited in between, so the memo upsert and that command complete one workflow task."""
        if not self._metered:
            return
        if self._engine >= SILENT_ENGINE and self._segment == 0 and not self._steps:
            return  # usage_reconcile.run_end_of derives this end from the closed execution
        if self._engine >= MEMO_ENGINE:
            workflow.upsert_memo({METER_MEMO: dataclasses.asdict(self._record(outcome))})
            return
        # EngineBase._since: runs from engine version 1 on never ask workflow.patched
        if not (self._engine >= 1 or workflow.patched(_PATCH_METER)):
            return
        try:
            await workflow.execute_local_activity(
                METER_RUN,
                self._record(outcome),
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=200)),
            )
        except ActivityError as exc:
            workflow.logger.warning("usage of run %s not recorded: %s", self._run_id, exc)
