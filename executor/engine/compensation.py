"""Compensation: on failure or cancel, the completed steps' declared undo actions, newest first."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError

from executor.engine.base import EngineBase
from executor.engine.contract import RUN_CODE, RUN_TOOL
from executor.engine.frames import StepFailed
from executor.engine.models import CodeCall, CompensationCall, ToolCall
from executor.engine.retry import (
    DEFAULT_RETRY,
    LOST_WORKER_ENGINE,
    MAX_WORKER_LOSSES,
    throttle_delay,
    to_step_error,
    worker_lost,
)
from schemas.plan import parse_duration

__all__ = ["CompensationMixin"]


class CompensationMixin(EngineBase):
    async def _compensate(self, final_state: str) -> None:
        if self.compensations:
            self._set_state("compensating")
        while self.compensations:
            call = self.compensations.pop()  # reverse completion order
            rec = self.records.get(call.path)
            try:
                await self._compensate_one(call)
                if rec is not None:
                    rec.state = "compensated"
            except StepFailed as failure:
                error = {"step": call.path, "type": failure.error.type, "message": failure.error.message}
                self.compensation_errors = (*self.compensation_errors, error)
        self._set_state(final_state)

    async def _compensate_one(self, call: CompensationCall) -> None:
        attempt = losses = 0
        while True:
            attempt += 1
            try:
                if call.tool is not None:
                    arg: ToolCall | CodeCall = ToolCall(
                        self.inp.tenant,
                        self.inp.run_id,
                        f"{call.path}#compensate",
                        attempt,
                        self._idempotency_key(f"{call.path}#compensate"),
                        call.tool,
                        call.args,
                        pin=self.inp.tool_pins.get(call.tool),
                        secrets=call.secrets,
                    )
                    await self._dispatch(RUN_TOOL, arg, call.tool in self._local_tools, None)
                else:
                    assert call.code is not None
                    arg = CodeCall(
                        self.inp.tenant,
                        self.inp.run_id,
                        f"{call.path}#compensate",
                        call.code,
                        call.inputs,
                        generation=self.inp.generation,
                        attempt=attempt,
                    )
                    await self._dispatch(RUN_CODE, arg, True, None)
                return
            except (ActivityError, ApplicationError, TimeoutError) as exc:
                error, _ = to_step_error(exc)
                if self.inp.engine >= LOST_WORKER_ENGINE and losses < MAX_WORKER_LOSSES and worker_lost(exc):
                    # the worker died under the undo (as for a step): not an attempt
                    attempt -= 1
                    losses += 1
                    await workflow.sleep(throttle_delay(losses))
                    continue
                if not error.retryable or attempt == DEFAULT_RETRY.max_attempts:
                    raise StepFailed(call.path, error) from None
                await workflow.sleep(parse_duration(DEFAULT_RETRY.initial_interval) * 2 ** (attempt - 1))
