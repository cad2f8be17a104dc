"""Scheduling a block as a DAG: parallel starts, implicit and explicit ordering, max_parallel, when."""

from __future__ import annotations

import itertools
from typing import Any

from executor import Duraplan

from .conftest import step_state, steps_by_id, ts, wait_step_state


def sleep_step(step_id: str, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "tool", "tool": "debug.sleep", "args": {"seconds": seconds}, **extra}


def echo_step(step_id: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "tool", "tool": "debug.echo", "args": {"value": value}, **extra}


async def run_to_status(dp: Duraplan, tenant: str, plan: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    handle = await dp.submit_plan(plan, tenant=tenant, session="dag")
    result = await handle.result()
    return result, await handle.status()


async def test_independent_steps_overlap(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "parallel",
        "limits": {"max_parallel": 2},
        "steps": [sleep_step("a", 1), sleep_step("b", 1)],
        "output": ["${steps.a.output}", "${steps.b.output}"],
    }
    result, status = await run_to_status(dp, tenant, plan)
    assert result == [{"slept": 1}, {"slept": 1}]
    a, b = steps_by_id(status)["a"], steps_by_id(status)["b"]
    # The two intervals overlap ...
    assert ts(a["started_at"]) < ts(b["ended_at"]) and ts(b["started_at"]) < ts(a["ended_at"])
    # ... and both together took about one sleep, not two.
    first = min(ts(a["started_at"]), ts(b["started_at"]))
    last = max(ts(a["ended_at"]), ts(b["ended_at"]))
    assert (last - first).total_seconds() < 1.8


async def test_reference_waits_for_referenced_step(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "reference",
        "steps": [
            sleep_step("a", 0.5),
            echo_step("c", "${steps.a.output}"),
            echo_step("d", "independent"),
        ],
        "output": "${steps.c.output.value}",
    }
    result, status = await run_to_status(dp, tenant, plan)
    assert result == {"slept": 0.5}
    steps = steps_by_id(status)
    assert ts(steps["c"]["started_at"]) >= ts(steps["a"]["ended_at"])
    # The control: a step without the reference did not wait for a.
    assert ts(steps["d"]["ended_at"]) < ts(steps["a"]["ended_at"])


async def test_depends_on_orders_steps_without_references(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "depends",
        "steps": [
            sleep_step("a", 0.5),
            echo_step("b", "after a", depends_on=["a"]),
            echo_step("d", "independent"),
        ],
    }
    _, status = await run_to_status(dp, tenant, plan)
    steps = steps_by_id(status)
    assert all(s["state"] == "completed" for s in steps.values())
    assert ts(steps["b"]["started_at"]) >= ts(steps["a"]["ended_at"])
    assert ts(steps["d"]["ended_at"]) < ts(steps["a"]["ended_at"])


async def test_max_parallel_one_serialises_steps_ready_together(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "serial",
        "limits": {"max_parallel": 1},
        "steps": [sleep_step("a", 0.5), sleep_step("b", 0.5)],
    }
    _, status = await run_to_status(dp, tenant, plan)
    ends = sorted(ts(s["ended_at"]) for s in status["steps"])
    # One after the other: the second finishes a full sleep after the first.
    assert (ends[1] - ends[0]).total_seconds() >= 0.45


async def test_max_parallel_one_serialises_three_steps(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "serial3",
        "limits": {"max_parallel": 1},
        "steps": [sleep_step("a", 0.5), sleep_step("b", 0.5), sleep_step("c", 0.5)],
    }
    _, status = await run_to_status(dp, tenant, plan)
    ends = sorted(ts(s["ended_at"]) for s in status["steps"])
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(ends)]
    assert min(gaps) >= 0.45, f"steps finished {gaps} s apart: some ran together"


def queued_plan() -> dict[str, Any]:
    # b becomes ready when the test sends "open", while a holds the only slot: it must wait for a.
    return {
        "name": "queued",
        "limits": {"max_parallel": 1},
        "steps": [
            sleep_step("a", 1.5),
            {"id": "gate", "kind": "wait_for_event", "event": "open", "timeout": "30s"},
            sleep_step("b", 0.5, depends_on=["gate"]),
        ],
    }


async def open_gate_while_a_runs(dp: Duraplan, tenant: str) -> dict[str, Any]:
    handle = await dp.submit_plan(queued_plan(), tenant=tenant, session="dag")
    await wait_step_state(handle, "gate", "waiting")
    await wait_step_state(handle, "a", "running")
    await handle.send_event("open")
    await wait_step_state(handle, "gate", "completed")
    assert await step_state(handle, "a") == "running"  # b is ready now and a still holds the slot
    await handle.result()
    return steps_by_id(await handle.status())


async def test_max_parallel_one_queues_a_step_that_becomes_ready_later(dp: Duraplan, tenant: str) -> None:
    steps = await open_gate_while_a_runs(dp, tenant)
    gap = (ts(steps["b"]["ended_at"]) - ts(steps["a"]["ended_at"])).total_seconds()
    assert gap >= 0.45, f"b ended {gap:.2f}s after a: it ran alongside a"


async def test_queued_step_reports_start_when_it_gets_a_slot(dp: Duraplan, tenant: str) -> None:
    steps = await open_gate_while_a_runs(dp, tenant)
    assert ts(steps["b"]["started_at"]) >= ts(steps["a"]["ended_at"])


async def test_when_false_skips_and_dependents_see_null(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "when",
        "inputs": {"type": "object", "properties": {"go": {"type": "boolean"}}},
        "steps": [
            echo_step("maybe", "ran", when="${input.go}"),
            echo_step("always", "ran", when="${input.go == `false`}"),
            {
                "id": "after",
                "kind": "set",
                "value": {"maybe": "${steps.maybe.output}", "status": "${steps.maybe.status}"},
            },
        ],
        "output": "${steps.after.output}",
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="dag", inputs={"go": False})
    assert await handle.result() == {"maybe": None, "status": "skipped"}
    steps = steps_by_id(await handle.status())
    assert steps["maybe"]["state"] == "skipped"
    assert steps["maybe"]["attempts"] == 0  # never dispatched
    assert steps["always"]["state"] == "completed"
    assert steps["after"]["state"] == "completed"
