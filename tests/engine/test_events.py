"""Events: buffering, timeouts, deduplication, payload schemas and who may receive them."""

from __future__ import annotations

from typing import Any

import pytest

from executor import Duraplan, InputsInvalid, RunNotFound, RunStateError

from .conftest import run_failure, step_state, steps_by_id, wait_step_state


def wait_step(step_id: str, event: str = "approval", **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "wait_for_event", "event": event, **extra}


async def test_event_sent_before_the_wait_starts_is_received(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "early-event",
        "steps": [
            {"id": "nap", "kind": "sleep", "duration": "1s"},
            wait_step("wait", depends_on=["nap"], timeout="10s"),
        ],
        "output": "${steps.wait.output}",
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="ev")
    await wait_step_state(handle, "nap", "sleeping")
    assert await step_state(handle, "wait") == "pending"
    sent = await handle.send_event("approval", {"ok": True}, event_id="e-1")
    assert sent == {"accepted": True, "duplicate": False, "buffered": 1}
    assert await handle.result() == {"ok": True}
    wait = steps_by_id(await handle.status())["wait"]
    assert wait["state"] == "completed"
    assert wait["detail"]["event_id"] == "e-1"


async def test_event_wait_timeout_fails_the_run(dp: Duraplan, tenant: str) -> None:
    plan = {"name": "event-timeout", "steps": [wait_step("wait", timeout="1s")]}
    handle = await dp.submit_plan(plan, tenant=tenant, session="ev")
    failure = await run_failure(handle)
    assert failure.details["type"] == "EventTimeout"
    wait = steps_by_id(await handle.status())["wait"]
    assert wait["state"] == "failed"
    assert wait["error"]["type"] == "EventTimeout"


async def test_event_wait_timeout_with_on_timeout_continue_gives_null(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "event-timeout-continue",
        "steps": [
            wait_step("wait", timeout="1s", on_timeout="continue"),
            {"id": "after", "kind": "set", "value": {"got": "${steps.wait.output}", "status": "${steps.wait.status}"}},
        ],
        "output": "${steps.after.output}",
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="ev")
    assert await handle.result() == {"got": None, "status": "completed"}
    wait = steps_by_id(await handle.status())["wait"]
    assert wait["detail"]["timed_out"] is True


async def test_same_event_id_is_delivered_once(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "dedupe",
        "steps": [
            wait_step("first", timeout="20s"),
            wait_step("second", timeout="1s", on_timeout="continue", depends_on=["first"]),
        ],
        "output": {"first": "${steps.first.output}", "second": "${steps.second.output}"},
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="ev")
    one = await handle.send_event("approval", {"n": 1}, event_id="same")
    two = await handle.send_event("approval", {"n": 2}, event_id="same")
    assert one["duplicate"] is False
    assert two["duplicate"] is True
    # The second wait never got the duplicate: it timed out.
    assert await handle.result() == {"first": {"n": 1}, "second": None}
    steps = steps_by_id(await handle.status())
    assert steps["second"]["detail"]["timed_out"] is True


async def test_invalid_payload_is_rejected_and_not_consumed(dp: Duraplan, tenant: str) -> None:
    schema = {
        "type": "object",
        "properties": {"amount": {"type": "integer", "minimum": 0}},
        "required": ["amount"],
    }
    plan = {
        "name": "schema",
        "steps": [wait_step("wait", timeout="20s", payload_schema=schema)],
        "output": "${steps.wait.output}",
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="ev")
    await wait_step_state(handle, "wait", "waiting")
    with pytest.raises(InputsInvalid, match="amount"):
        await handle.send_event("approval", {"amount": "lots"})
    with pytest.raises(InputsInvalid):
        await handle.send_event("approval", {"other": 1})
    status = await handle.status()
    assert status["buffered_events"] == 0
    assert steps_by_id(status)["wait"]["state"] == "waiting"
    accepted = await handle.send_event("approval", {"amount": 7})
    assert accepted["accepted"] is True
    assert await handle.result() == {"amount": 7}


async def test_unknown_event_type_is_rejected(dp: Duraplan, tenant: str) -> None:
    plan = {"name": "unknown-type", "steps": [wait_step("wait", timeout="20s")], "output": "${steps.wait.output}"}
    handle = await dp.submit_plan(plan, tenant=tenant, session="ev")
    with pytest.raises(InputsInvalid, match="no wait_for_event step waits for event type 'nonsense'"):
        await handle.send_event("nonsense", {"x": 1})
    assert (await handle.status())["buffered_events"] == 0
    await handle.send_event("approval", "yes")
    assert await handle.result() == "yes"


async def test_event_to_a_finished_run_raises_run_state_error(dp: Duraplan, tenant: str) -> None:
    plan = {"name": "finished", "steps": [wait_step("wait", timeout="20s")]}
    handle = await dp.submit_plan(plan, tenant=tenant, session="ev")
    await handle.send_event("approval", 1)
    await handle.result()
    with pytest.raises(RunStateError, match="is completed"):
        await handle.send_event("approval", 2)


async def test_event_to_an_unknown_run_raises_run_not_found(dp: Duraplan, tenant: str) -> None:
    # the update is sent without a describe first: its refusal is what names the cause
    with pytest.raises(RunNotFound):
        await dp.get_run("no-such-run", tenant=tenant).send_event("approval", 1)


async def _listed_states(handle: Any) -> list[str]:
    """The DuraplanStatus values the run upserted, in history order."""
    states = []
    async for event in handle._handle.fetch_history_events():
        if event.HasField("upsert_workflow_search_attributes_event_attributes"):
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if "DuraplanStatus" in fields:
                states.append(fields["DuraplanStatus"].data.decode().strip('"'))
    return states


async def test_a_released_run_that_completes_upserts_no_running_first(dp: Duraplan, tenant: str) -> None:
    """Engine 3: the listing follows a step that stops waiting on the loop's next turn, so a run the
    event lets complete goes from waiting to closed (one visibility write less per release); one
    that goes on to an activity step is listed running before that step is scheduled, as before."""
    done = await dp.submit_plan({"name": "release", "steps": [wait_step("wait")]}, tenant=tenant, session="ev")
    goes_on = await dp.submit_plan(
        {
            "name": "release-then-step",
            "steps": [
                wait_step("wait"),
                {"id": "echo", "kind": "tool", "tool": "debug.echo", "args": {"v": 1}, "depends_on": ["wait"]},
            ],
        },
        tenant=tenant,
        session="ev",
    )
    for handle in (done, goes_on):
        await wait_step_state(handle, "wait", "waiting")
        await handle.send_event("approval", {"ok": True})
        await handle.result()
    assert await _listed_states(done) == ["waiting"]
    assert await _listed_states(goes_on) == ["waiting", "running"]
