"""What status shows of nested steps, through the Python API: a switch's branches (untaken ones
skipped), a foreach's items (counts by state, each item's steps on request), and no open step
once a run has ended (cancelled or failed)."""

from __future__ import annotations

from typing import Any

from executor import Duraplan
from executor.engine.run_status import FINAL_STEP_STATES, StepView

from .conftest import run_failure, steps_by_id, wait_step_state


def nested_plan() -> dict[str, Any]:
    return {
        "name": "nested",
        "steps": [
            {
                "id": "route",
                "kind": "switch",
                "cases": [{"when": "${`false`}", "steps": [{"id": "never", "kind": "set", "value": 0}]}],
                "default": [{"id": "taken", "kind": "set", "value": 1}],
            },
            {
                "id": "each",
                "kind": "foreach",
                "items": "${`[1, 2, 3]`}",
                "steps": [{"id": "double", "kind": "code", "code": "item * 2", "inputs": {"item": "${item}"}}],
            },
            {"id": "gate", "kind": "wait_for_event", "event": "go", "depends_on": ["route", "each"]},
            {"id": "after", "kind": "set", "value": 2, "depends_on": ["gate"]},
        ],
    }


def all_views(steps: list[StepView]) -> list[StepView]:
    out: list[StepView] = []
    for step in steps:
        out.append(step)
        out += all_views(step.steps)
        for item in step.items or []:
            out += all_views(item.steps)
    return out


async def test_switch_branches_and_foreach_items_are_in_status(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(nested_plan(), tenant=tenant, session="nest")
    await wait_step_state(handle, "gate", "waiting")
    status = await handle.status(items=True)
    assert status.state == "waiting"
    route = steps_by_id(status)["route"]
    assert route.branch == -1
    assert {s.path: s.state for s in route.steps} == {"route.never": "skipped", "route.taken": "completed"}
    each = steps_by_id(status)["each"]
    assert each.progress is not None and each.progress.counts == {"completed": 3}
    assert each.items is not None and [i.state for i in each.items] == ["completed"] * 3
    assert [i.steps[0].path for i in each.items] == ["each[0].double", "each[1].double", "each[2].double"]
    assert each.items[2].steps[0].output_preview == "6"
    assert steps_by_id(await handle.status())["each"].items is None  # items only on request

    await handle.cancel()
    await run_failure(handle)
    ended = await handle.status(items=True)
    assert ended.state == "cancelled"
    states = {s.path: s.state for s in all_views(ended.steps)}
    assert set(states.values()) <= FINAL_STEP_STATES, states
    assert (states["gate"], states["after"]) == ("cancelled", "skipped")


async def test_a_failed_run_leaves_no_step_open(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "fails",
        "steps": [
            {"id": "nap", "kind": "sleep", "duration": "60s"},
            {"id": "boom", "kind": "fail", "message": "no", "error_type": "Boom"},
            {"id": "after", "kind": "set", "value": 1, "depends_on": ["boom"]},
        ],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="nest")
    await run_failure(handle)
    status = await handle.status()
    assert status.state == "failed"
    assert {s.id: s.state for s in status.steps} == {"nap": "cancelled", "boom": "failed", "after": "skipped"}
