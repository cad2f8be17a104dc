"""The hand-written floor: a workflow that calls duraplan's own tool activity N times in a row.

It sends the same ``ToolCall`` to the same ``duraplan.tool`` activity (the built-in ``debug.echo``)
with the same timeouts and retry policy as duraplan's interpreter, chaining each output into the
next call like a plan chains ``${steps.<prev>.output.value}``. Kept free of heavy imports: it runs
in the same workflow sandbox as duraplan's workflow, on the same worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from executor.engine.contract import SA_STATUS
    from executor.engine.models import ToolCall

__all__ = [
    "BASELINE_WORKFLOW",
    "RELEASE_SIGNAL",
    "WAITER_WORKFLOW",
    "BaselineInput",
    "BaselineWorkflow",
    "WaiterWorkflow",
]

BASELINE_WORKFLOW = "BenchBaseline"
TOOL_ACTIVITY = "duraplan.tool"  # executor.worker.activities.run_tool


@dataclass
class BaselineInput:
    tenant: str
    run_id: str
    steps: int
    local: bool
    value: Any
    # Only for bench.overhead: end like duraplan does, by upserting the status search attribute.
    upsert_status: bool = False


@workflow.defn(name=BASELINE_WORKFLOW)
class BaselineWorkflow:
    @workflow.run
    async def run(self, inp: BaselineInput) -> Any:
        once = RetryPolicy(maximum_attempts=1)  # what duraplan passes: the workflow owns retries
        out: Any = {"value": inp.value}
        for i in range(inp.steps):
            path = f"s{i}"
            call = ToolCall(
                inp.tenant,
                inp.run_id,
                path,
                1,
                f"{inp.tenant}/{inp.run_id}/0/{path}",
                "debug.echo",
                {"value": out["value"]},
            )
            if inp.local:
                out = await workflow.execute_local_activity(
                    TOOL_ACTIVITY, call, start_to_close_timeout=timedelta(seconds=30), retry_policy=once
                )
            else:
                out = await workflow.execute_activity(
                    TOOL_ACTIVITY,
                    call,
                    start_to_close_timeout=timedelta(seconds=600),
                    heartbeat_timeout=timedelta(seconds=10),
                    retry_policy=once,
                )
        if inp.upsert_status:
            workflow.upsert_search_attributes([SA_STATUS.value_set("completed")])
        return out


WAITER_WORKFLOW = "BenchWaiter"
RELEASE_SIGNAL = "release"
WAITER_TIMEOUT = timedelta(hours=2)  # the timeout of bench.concurrency's wait_for_event step


@workflow.defn(name=WAITER_WORKFLOW)
class WaiterWorkflow:
    """The hand-written floor for a waiting run: block on a signal, return its payload.

    With the same 2 h timeout as bench.concurrency's ``wait_for_event`` step: both hold a timer."""

    def __init__(self) -> None:
        self._payload: Any = None
        self._released = False

    @workflow.run
    async def run(self) -> Any:
        await workflow.wait_condition(lambda: self._released, timeout=WAITER_TIMEOUT)
        return self._payload

    @workflow.signal(name=RELEASE_SIGNAL)
    def release(self, payload: Any) -> None:
        self._payload, self._released = payload, True
