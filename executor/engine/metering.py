"""The workflow's side of metering: steps it interprets itself, and how each run segment ends.

Deterministic (runs inside the workflow): it counts finished steps by kind in memory and, when a
run segment ends (completed, failed, cancelled, or continued as new), hands the counts and the
outcome to one local activity (``duraplan.meter_run``) that writes them to the usage ledger keyed
by run, generation and segment, so a re-executed workflow task writes nothing twice. Activity steps
(tool, code, llm) are metered by their activities as each attempt finishes, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from executor.engine.contract import METER_RUN

__all__ = ["ACTIVITY_KINDS", "METER_RUN", "RunMeter", "RunMeterCall"]

ACTIVITY_KINDS = frozenset({"tool", "code", "llm"})
# Histories recorded before metering existed replay without the local activity.
_PATCH_METER = "meter-run-segments"


@dataclass
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
    def __init__(
        self,
        tenant: str,
        run_id: str,
        generation: int,
        segment: int,
        started_at: str,
        *,
        metered: bool = True,
        since: Callable[[str], bool] = workflow.patched,
    ) -> None:
        self._call = RunMeterCall(tenant, run_id, generation, segment, started_at, None, False)
        self._metered = metered  # False: nothing to record, so no local activity at all
        self._since = since  # whether a behaviour change applies to the run (EngineBase._since)

    def step_finished(self, kind: str) -> None:
        if kind not in ACTIVITY_KINDS:
            steps = self._call.workflow_steps
            steps[kind] = steps.get(kind, 0) + 1

    async def segment_ended(self, outcome: str | None) -> None:
        """Record the segment; a metering failure is logged, never fails the run."""
        if not self._metered or not self._since(_PATCH_METER):
            return
        self._call.outcome = outcome
        self._call.child = workflow.info().parent is not None
        try:
            await workflow.execute_local_activity(
                METER_RUN,
                self._call,
                start_to_close_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=200)),
            )
        except ActivityError as exc:
            workflow.logger.warning("usage of run %s not recorded: %s", self._call.run_id, exc)
