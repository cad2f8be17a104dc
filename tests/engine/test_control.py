"""Steering a run: pause/resume, cancel, terminate, restart."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from executor import Duraplan, RunFailed, RunStateError

from .conftest import run_failure, step_state, steps_by_id, wait_for, wait_step_state


def two_step_plan(first_seconds: float = 1.0) -> dict[str, Any]:
    return {
        "name": "two-steps",
        "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "steps": [
            {"id": "first", "kind": "tool", "tool": "debug.sleep", "args": {"seconds": first_seconds}},
            {
                "id": "second",
                "kind": "tool",
                "tool": "debug.echo",
                "args": {"n": "${input.n}"},
                "depends_on": ["first"],
            },
        ],
        "output": "${steps.second.output.n}",
    }


async def test_pause_lets_the_running_step_finish_and_holds_the_next(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(two_step_plan(), tenant=tenant, session="ctl", inputs={"n": 5})
    await wait_step_state(handle, "first", "running")
    assert await handle.pause() == "paused"
    await wait_step_state(handle, "first", "completed")
    # Observed several times over a while: the next step does not start while paused.
    for _ in range(5):
        status = await handle.status()
        assert status["state"] == "paused"
        assert status["paused"] is True
        assert steps_by_id(status)["second"]["state"] == "pending"
        await asyncio.sleep(0.2)
    assert await handle.resume() == "running"
    assert await handle.result() == 5
    status = await handle.status()
    assert status["state"] == "completed"
    assert status["paused"] is False


async def test_paused_runs_are_listed_as_paused(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(two_step_plan(), tenant=tenant, session="ctl", inputs={"n": 1})
    await handle.pause()

    async def listed() -> bool:
        return [r["run_id"] for r in await dp.list_runs(tenant=tenant, status="paused")] == [handle.run_id]

    await wait_for(listed, timeout=15)
    await handle.resume()
    assert await handle.result() == 1


async def test_cancel_fails_result_with_status_cancelled(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "cancel-waiting",
        "steps": [
            {"id": "first", "kind": "wait_for_event", "event": "go", "timeout": "60s"},
            {"id": "second", "kind": "set", "value": 1, "depends_on": ["first"]},
        ],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="ctl")
    await wait_step_state(handle, "first", "waiting")
    await handle.cancel()
    failure = await run_failure(handle, timeout=10)
    assert isinstance(failure, RunFailed)
    assert failure.status == "cancelled"
    status = await handle.status()
    assert status["state"] == "cancelled"
    assert status["error"]["type"] == "Cancelled"
    # No step of an ended run is left open: in flight is cancelled, never started is skipped.
    assert {s.id: s.state for s in status.steps} == {"first": "cancelled", "second": "skipped"}
    with pytest.raises(RunStateError):
        await handle.send_event("go")


async def test_cancel_stops_a_running_activity_step_without_retrying_it(dp: Duraplan, tenant: str) -> None:
    plan = two_step_plan(first_seconds=3)
    plan["steps"][0]["retry"] = {"max_attempts": 2, "initial_interval": "100ms"}
    handle = await dp.submit_plan(plan, tenant=tenant, session="ctl", inputs={"n": 1})
    await wait_step_state(handle, "first", "running")
    started = asyncio.get_running_loop().time()
    await handle.cancel()
    failure = await run_failure(handle, timeout=15)
    elapsed = asyncio.get_running_loop().time() - started
    assert failure.status == "cancelled"
    first = steps_by_id(await handle.status())["first"]
    assert first["attempts"] == 1, f"the running step was retried after the cancel ({first})"
    assert elapsed < 2.5


async def test_terminate_stops_the_run_at_once(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(two_step_plan(first_seconds=30), tenant=tenant, session="ctl", inputs={"n": 1})
    await wait_step_state(handle, "first", "running")
    await handle.terminate("test")
    failure = await run_failure(handle)
    assert failure.status == "terminated"
    status = await handle.status()
    assert status["state"] == "terminated"
    assert status["closed_at"] is not None
    with pytest.raises(RunStateError):
        await handle.pause()
    # An ended run has nothing to cancel or terminate: a clear state error, not a server error.
    with pytest.raises(RunStateError, match="is terminated; nothing to cancel"):
        await handle.cancel()
    with pytest.raises(RunStateError, match="is terminated; nothing to terminate"):
        await handle.terminate()


async def test_restart_runs_again_with_the_same_inputs_under_the_same_id(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(two_step_plan(first_seconds=0.1), tenant=tenant, session="ctl", inputs={"n": 42})
    assert await handle.result() == 42
    first_started = (await handle.status())["started_at_server"]
    again = await handle.restart()
    assert again.run_id == handle.run_id
    assert await again.result() == 42
    status = await again.status()
    assert status["generation"] == 1
    assert status["state"] == "completed"
    assert status["started_at_server"] != first_started
    assert steps_by_id(status)["first"]["state"] == "completed"


async def test_pause_of_a_finished_run_raises_run_state_error(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(two_step_plan(first_seconds=0.1), tenant=tenant, session="ctl", inputs={"n": 3})
    await handle.result()
    with pytest.raises(RunStateError):
        await handle.pause()
    with pytest.raises(RunStateError):
        await handle.resume()
    assert await step_state(handle, "second") == "completed"


async def test_a_restarted_run_is_listed_once_by_its_current_generation(dp: Duraplan, tenant: str) -> None:
    plan = {"name": "waits", "steps": [{"id": "wait", "kind": "wait_for_event", "event": "go", "timeout": "60s"}]}
    handle = await dp.submit_plan(plan, tenant=tenant, session="ctl", run_id="again")
    try:
        await handle.restart()
        await handle.restart()  # generations 0 and 1 are terminated, 2 waits
        await wait_step_state(handle, "wait", "waiting")

        async def listed() -> list[tuple[str, int, str]] | None:
            rows = [(r.run_id, r.generation, r.state) for r in await dp.list_runs(tenant=tenant)]
            return rows if rows == [("again", 2, "waiting")] else None

        assert await wait_for(listed, timeout=15)
        # Filters apply to the current generation: the terminated ones are not this run's state.
        assert await dp.list_runs(tenant=tenant, status="terminated") == []
        assert [r.run_id for r in await dp.list_runs(tenant=tenant, status="waiting")] == ["again"]
        assert (await handle.status()).generation == 2
    finally:
        await handle.terminate()
