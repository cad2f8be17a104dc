"""The state every part of the plan workflow shares, declared once for the type checker.

``PlanWorkflow`` (workflow.py) is assembled from mixins, one per section of the interpreter:
scheduling, step kinds, containers, compensation. Each mixin reads and writes the attributes
declared here and calls the others through the methods declared below.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from temporalio import workflow

from executor.engine.frames import Frame
from executor.engine.metering import RunMeter
from executor.engine.models import (
    CompensationCall,
    EventRecord,
    Revision,
    RunInput,
    RunQuotas,
    StepError,
    StepQuota,
    StepRecord,
)
from schemas.plan import ForeachStep, Plan, ScriptStep, Step, SubplanStep, SwitchStep

__all__ = ["EngineBase"]


class EngineBase:
    inp: RunInput
    plan: Plan
    plan_json: dict[str, Any]
    current_hash: str
    revisions: list[Revision]
    records: dict[str, StepRecord]
    events: list[EventRecord]
    compensations: list[CompensationCall]
    compensation_errors: tuple[dict[str, str], ...]
    executed: int
    paused: bool
    state: str
    error: StepError | None
    _active: int
    _draining: bool
    _quotas: RunQuotas | None
    _max_parallel: int
    _local_tools: frozenset[str]
    _step_quota: StepQuota | None
    _deps_cache: dict[int, Any]  # id(step) -> its dependencies; ~id(block) -> the block's shape
    _task_mark: int
    _local_in_task: int
    _task_cut: bool
    _parked: int
    _meter: RunMeter

    def _since(self, patch_id: str) -> bool:
        """Whether the behaviour change ``patch_id`` applies to this run.

        Runs started at engine version 1 or later had every change up to it from their first task,
        so they never call ``workflow.patched`` (no marker, no search-attribute upsert per call);
        older runs ask it exactly where they always did, so their histories replay unchanged.
        """
        return self.inp.engine >= 1 or workflow.patched(patch_id)

    if TYPE_CHECKING:
        # scheduling.py
        def _run_block(self, steps: list[Step], frame: Frame) -> Awaitable[None]: ...
        def _done(self, path: str) -> bool: ...
        def _count_step(self, path: str) -> None: ...
        def _should_continue_as_new(self) -> bool: ...

        # steps.py
        def _execute(self, step: Step, path: str, frame: Frame, rec: StepRecord) -> Awaitable[Any]: ...
        async def _dispatch(self, fn: str, arg: Any, local: bool, timeout: float | None) -> Any: ...
        def _idempotency_key(self, path: str) -> str: ...
        async def _local_place(self, local: bool) -> bool: ...
        def _code_default(self, quota: str, default: float) -> Any: ...
        def _take_event(self, event_type: str) -> EventRecord | None: ...

        # script.py
        async def _script(self, step: ScriptStep, path: str, frame: Frame, rec: StepRecord) -> Any: ...
        def _guard_output(self, path: str, value: Any) -> Any: ...

        # containers.py
        async def _foreach(self, step: ForeachStep, path: str, frame: Frame, rec: StepRecord) -> list[Any]: ...
        async def _switch(self, step: SwitchStep, path: str, frame: Frame, rec: StepRecord) -> Any: ...
        async def _subplan(self, step: SubplanStep, path: str, frame: Frame, rec: StepRecord) -> Any: ...

        # workflow.py
        def _eval(self, expression: str, frame: Frame, where: str) -> Any: ...
        def _render(self, value: Any, frame: Frame, where: str) -> Any: ...
        def _set_state(self, state: str) -> None: ...
        def _sync_listed(self) -> None: ...
