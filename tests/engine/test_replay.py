"""Finished runs replay deterministically: what a worker restart or a query on a closed run does."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.worker import Replayer

from executor import Duraplan, RunFailed, RunHandle
from executor.engine.workflow import PlanWorkflow
from executor.worker.runner import workflow_runner

from .conftest import wait_step_state

MIXED = {
    "name": "mixed",
    "steps": [
        {
            "id": "flaky",
            "kind": "tool",
            "tool": "debug.flaky",
            "args": {"fail_times": 1},
            "retry": {"initial_interval": "100ms"},
        },
        {"id": "bad", "kind": "tool", "tool": "debug.fail", "args": {"message": "x"}, "on_error": "continue"},
        {"id": "nap", "kind": "sleep", "duration": "100ms"},
        {"id": "slow", "kind": "tool", "tool": "debug.sleep", "args": {"seconds": 0.1}},
        {
            "id": "each",
            "kind": "foreach",
            "items": "${input.items}",
            "max_concurrency": 2,
            "steps": [
                {
                    "id": "route",
                    "kind": "switch",
                    "cases": [
                        {
                            "when": "${item > `1`}",
                            "steps": [{"id": "big", "kind": "code", "code": "n * 10", "inputs": {"n": "${item}"}}],
                        }
                    ],
                    "default": [{"id": "small", "kind": "set", "value": "${item}"}],
                }
            ],
        },
        {
            "id": "wait",
            "kind": "wait_for_event",
            "event": "go",
            "timeout": "30s",
            "depends_on": ["each", "flaky", "bad", "nap", "slow"],
        },
        {
            "id": "child",
            "kind": "subplan",
            "plan": {
                "name": "c",
                "steps": [{"id": "x", "kind": "set", "value": "${input.v}"}],
                "output": "${steps.x.output}",
            },
            "inputs": {"v": "${steps.wait.output}"},
        },
    ],
    "output": {"each": "${steps.each.output}", "child": "${steps.child.output}"},
}

FAILED = {
    "name": "failed-saga",
    "steps": [
        {
            "id": "a",
            "kind": "tool",
            "tool": "kv.incr",
            "args": {"key": "n"},
            "compensate": {"tool": "kv.incr", "args": {"key": "n", "by": -1}},
        },
        {"id": "boom", "kind": "tool", "tool": "debug.fail", "args": {"message": "x"}, "depends_on": ["a"]},
    ],
}


async def assert_replays(handle: RunHandle) -> None:
    history = await handle._handle.fetch_history()
    replayer = Replayer(workflows=[PlanWorkflow], workflow_runner=workflow_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


async def test_mixed_plan_replays(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(MIXED, tenant=tenant, session="replay", inputs={"items": [1, 2, 3]})
    await wait_step_state(handle, "wait", "waiting")
    await handle.send_event("go", "hi")
    assert await handle.result() == {"each": [1, 20, 30], "child": "hi"}
    await assert_replays(handle)


@pytest.mark.parametrize("control", ["cancel", "pause-resume"])
async def test_controlled_run_replays(dp: Duraplan, tenant: str, control: str) -> None:
    plan: dict[str, Any] = {
        "name": "controlled",
        "steps": [
            {
                "id": "a",
                "kind": "tool",
                "tool": "kv.incr",
                "args": {"key": "n"},
                "compensate": {"tool": "kv.incr", "args": {"key": "n", "by": -1}},
            },
            {"id": "wait", "kind": "wait_for_event", "event": "go", "timeout": "30s", "depends_on": ["a"]},
            {"id": "after", "kind": "set", "value": 1, "depends_on": ["wait"]},
        ],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="replay")
    await wait_step_state(handle, "wait", "waiting")
    if control == "cancel":
        await handle.cancel()
        with pytest.raises(RunFailed):
            await handle.result()
    else:
        await handle.pause()
        await handle.send_event("go", 1, event_id="e")
        await wait_step_state(handle, "wait", "completed")
        await handle.resume()
        await handle.result()
    await assert_replays(handle)


async def test_failed_run_with_compensation_replays(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(FAILED, tenant=tenant, session="replay")
    with pytest.raises(RunFailed):
        await handle.result()
    await assert_replays(handle)
