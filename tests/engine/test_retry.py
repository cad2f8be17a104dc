"""Retries, non-retryable failures, step timeouts and on_error: continue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from temporalio.worker import Replayer

from executor import Duraplan
from executor.engine.workflow import PlanWorkflow
from executor.worker.runner import workflow_runner

from .conftest import run_failure, steps_by_id, ts

FAST = {"initial_interval": "100ms", "backoff": 1.0}


def plan_of(*steps: dict[str, Any], output: Any = None) -> dict[str, Any]:
    return {"name": "retry", "steps": list(steps), "output": output}


async def test_retries_then_succeeds(dp: Duraplan, tenant: str) -> None:
    step = {
        "id": "flaky",
        "kind": "tool",
        "tool": "debug.flaky",
        "args": {"fail_times": 2, "value": "ok"},
        "retry": {"max_attempts": 3, **FAST},
    }
    handle = await dp.submit_plan(plan_of(step, output="${steps.flaky.output}"), tenant=tenant, session="r")
    assert await handle.result() == {"attempt": 3, "value": "ok"}
    flaky = steps_by_id(await handle.status())["flaky"]
    assert flaky["state"] == "completed"
    assert flaky["attempts"] == 3


async def test_retry_waits_initial_interval_times_backoff(dp: Duraplan, tenant: str) -> None:
    step = {
        "id": "flaky",
        "kind": "tool",
        "tool": "debug.flaky",
        "args": {"fail_times": 2},
        "retry": {"max_attempts": 3, "initial_interval": "300ms", "backoff": 2.0},
    }
    handle = await dp.submit_plan(plan_of(step), tenant=tenant, session="r")
    await handle.result()
    flaky = steps_by_id(await handle.status())["flaky"]
    # Two waits: 300ms then 600ms.
    assert (ts(flaky["ended_at"]) - ts(flaky["started_at"])).total_seconds() >= 0.85


async def test_exhausted_retries_fail_the_run_with_the_tool_error_type(dp: Duraplan, tenant: str) -> None:
    step = {
        "id": "flaky",
        "kind": "tool",
        "tool": "debug.flaky",
        "args": {"fail_times": 5, "error_type": "UpstreamDown"},
        "retry": {"max_attempts": 2, **FAST},
    }
    handle = await dp.submit_plan(plan_of(step), tenant=tenant, session="r")
    failure = await run_failure(handle)
    assert failure.status == "failed"
    assert failure.details["type"] == "UpstreamDown"
    assert failure.details["step"] == "flaky"
    status = await handle.status()
    assert status["state"] == "failed"
    assert status["failed_step"] == "flaky"
    assert status["error"]["type"] == "UpstreamDown"
    flaky = steps_by_id(status)["flaky"]
    assert flaky["state"] == "failed"
    assert flaky["attempts"] == 2
    assert flaky["error"]["type"] == "UpstreamDown"
    assert "attempt 2" in flaky["error"]["message"]


async def test_non_retryable_tool_error_fails_after_one_attempt(dp: Duraplan, tenant: str) -> None:
    step = {
        "id": "boom",
        "kind": "tool",
        "tool": "debug.fail",
        "args": {"message": "permanent", "retryable": False},
        "retry": {"max_attempts": 5, **FAST},
    }
    handle = await dp.submit_plan(plan_of(step), tenant=tenant, session="r")
    failure = await run_failure(handle)
    assert failure.details["type"] == "DebugFail"
    boom = steps_by_id(await handle.status())["boom"]
    assert boom["attempts"] == 1
    assert boom["error"] == {"type": "DebugFail", "message": "permanent"}


async def test_retry_non_retryable_list_stops_retrying_a_retryable_error(dp: Duraplan, tenant: str) -> None:
    step = {
        "id": "flaky",
        "kind": "tool",
        "tool": "debug.flaky",
        "args": {"fail_times": 3, "retryable": True, "error_type": "QuotaGone"},
        "retry": {"max_attempts": 5, "non_retryable": ["QuotaGone"], **FAST},
    }
    handle = await dp.submit_plan(plan_of(step), tenant=tenant, session="r")
    failure = await run_failure(handle)
    assert failure.details["type"] == "QuotaGone"
    assert steps_by_id(await handle.status())["flaky"]["attempts"] == 1


def slow_step(execution: str) -> dict[str, Any]:
    return {
        "id": "slow",
        "kind": "tool",
        "tool": "debug.sleep",
        "args": {"seconds": 5},
        "timeout": "1s",
        "execution": execution,
        "retry": {"max_attempts": 1},
    }


@pytest.mark.parametrize("execution", ["remote", "local"])
async def test_step_timeout_fails_the_run(dp: Duraplan, tenant: str, execution: str) -> None:
    handle = await dp.submit_plan(plan_of(slow_step(execution)), tenant=tenant, session="r")
    started = asyncio.get_running_loop().time()
    failure = await run_failure(handle)
    # It failed at the timeout, not after the 5 s the tool would have slept.
    assert asyncio.get_running_loop().time() - started < 4
    assert failure.details["type"] == "StepTimeout"
    assert failure.details["step"] == "slow"


async def test_remote_step_timeout_status(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(plan_of(slow_step("remote")), tenant=tenant, session="r")
    await run_failure(handle)
    slow = steps_by_id(await handle.status())["slow"]
    assert slow["state"] == "failed"
    assert slow["attempts"] == 1
    assert slow["error"]["type"] == "StepTimeout"
    assert (ts(slow["ended_at"]) - ts(slow["started_at"])).total_seconds() < 3.5


async def test_local_step_timeout_replays_deterministically(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(plan_of(slow_step("local")), tenant=tenant, session="r")
    await run_failure(handle)
    replay = await Replayer(workflows=[PlanWorkflow], workflow_runner=workflow_runner()).replay_workflow(
        await handle._handle.fetch_history(), raise_on_replay_failure=False
    )
    assert replay.replay_failure is None
    slow = steps_by_id(await handle.status())["slow"]
    assert slow["error"]["type"] == "StepTimeout"


async def test_on_error_continue_records_the_error_and_goes_on(dp: Duraplan, tenant: str) -> None:
    plan = plan_of(
        {
            "id": "x",
            "kind": "tool",
            "tool": "debug.fail",
            "args": {"message": "nope", "error_type": "Nope"},
            "on_error": "continue",
        },
        {
            "id": "y",
            "kind": "set",
            "value": {"status": "${steps.x.status}", "error": "${steps.x.error}", "output": "${steps.x.output}"},
        },
        output="${steps.y.output}",
    )
    handle = await dp.submit_plan(plan, tenant=tenant, session="r")
    assert await handle.result() == {
        "status": "failed",
        "error": {"type": "Nope", "message": "nope"},
        "output": None,
    }
    status = await handle.status()
    assert status["state"] == "completed"
    assert status["error"] is None
    x = steps_by_id(status)["x"]
    assert x["state"] == "failed"
    assert x["error"] == {"type": "Nope", "message": "nope"}
    assert x["output_preview"] is None


def test_only_a_heartbeat_timeout_is_a_worker_loss() -> None:
    """Issue 11 item 3: a killed worker (or a server outage) shows as a heartbeat timeout; that is
    re-dispatched without spending an attempt, at most MAX_WORKER_LOSSES times per step."""
    from temporalio.api.enums.v1 import RetryState
    from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError, TimeoutType

    from executor.engine.retry import MAX_WORKER_LOSSES, worker_lost

    def failed(cause: BaseException) -> ActivityError:
        err = ActivityError(
            "activity failed",
            scheduled_event_id=1,
            started_event_id=2,
            identity="w",
            activity_type="duraplan.tool",
            activity_id="1",
            retry_state=RetryState.RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED,
        )
        err.__cause__ = cause
        return err

    assert worker_lost(failed(TimeoutError("hb", type=TimeoutType.HEARTBEAT, last_heartbeat_details=[])))
    assert not worker_lost(failed(TimeoutError("slow", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[])))
    assert not worker_lost(failed(ApplicationError("boom")))
    assert 1 <= MAX_WORKER_LOSSES <= 5
