"""Compensations: undone in reverse completion order when a run fails or is cancelled."""

from __future__ import annotations

from typing import Any

from executor import Duraplan
from executor.worker.runner import WorkerDeps

from .conftest import run_failure, steps_by_id, wait_step_state


def undoable(step_id: str, **extra: Any) -> dict[str, Any]:
    """A step that records "do <id>" in the outbox and is compensated by recording "undo <id>"."""
    return {
        "id": step_id,
        "kind": "tool",
        "tool": "notify",
        "args": {"channel": "log", "message": f"do {step_id}"},
        "compensate": {"tool": "notify", "args": {"channel": "log", "message": f"undo {step_id}"}},
        **extra,
    }


async def outbox(worker_deps: WorkerDeps, tenant: str) -> list[str]:
    return [e["message"] for e in await worker_deps.store.outbox_list(tenant, "log")]


async def test_compensations_run_in_reverse_completion_order_on_failure(
    dp: Duraplan, tenant: str, worker_deps: WorkerDeps
) -> None:
    # Completion order a, b, c is forced by dependencies; the plan lists them in another order.
    plan = {
        "name": "saga",
        "steps": [
            undoable("c", depends_on=["b"]),
            undoable("a"),
            undoable("b", depends_on=["a"]),
            {"id": "no_undo", "kind": "tool", "tool": "debug.echo", "args": {"value": 1}, "depends_on": ["c"]},
            {"id": "boom", "kind": "fail", "message": "stop here", "depends_on": ["no_undo"]},
        ],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="comp")
    failure = await run_failure(handle)
    assert failure.details["step"] == "boom"
    assert await outbox(worker_deps, tenant) == ["do a", "do b", "do c", "undo c", "undo b", "undo a"]
    status = await handle.status()
    assert status["state"] == "failed"
    assert status["compensation_errors"] == []
    steps = steps_by_id(status)
    assert {i: steps[i]["state"] for i in ("a", "b", "c", "no_undo", "boom")} == {
        "a": "compensated",
        "b": "compensated",
        "c": "compensated",
        "no_undo": "completed",
        "boom": "failed",
    }


async def test_compensations_run_when_a_waiting_run_is_cancelled(
    dp: Duraplan, tenant: str, worker_deps: WorkerDeps
) -> None:
    plan = {
        "name": "saga-cancel",
        "steps": [
            undoable("a"),
            undoable("b", depends_on=["a"]),
            {"id": "wait", "kind": "wait_for_event", "event": "go", "timeout": "60s", "depends_on": ["b"]},
            undoable("never", depends_on=["wait"]),
        ],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="comp")
    await wait_step_state(handle, "wait", "waiting")
    await handle.cancel()
    failure = await run_failure(handle)
    assert failure.status == "cancelled"
    assert await outbox(worker_deps, tenant) == ["do a", "do b", "undo b", "undo a"]
    steps = steps_by_id(await handle.status())
    assert steps["a"]["state"] == "compensated"
    assert steps["b"]["state"] == "compensated"
    assert steps["never"]["state"] == "skipped"  # never started: a run that ended leaves no step open
    assert steps["wait"]["state"] == "cancelled"  # it was waiting when the run was cancelled


async def test_no_compensation_when_the_run_completes(dp: Duraplan, tenant: str, worker_deps: WorkerDeps) -> None:
    plan = {"name": "saga-ok", "steps": [undoable("a"), undoable("b", depends_on=["a"])]}
    handle = await dp.submit_plan(plan, tenant=tenant, session="comp")
    await handle.result()
    assert await outbox(worker_deps, tenant) == ["do a", "do b"]
    steps = steps_by_id(await handle.status())
    assert steps["a"]["state"] == steps["b"]["state"] == "completed"


async def test_code_and_templated_compensations(dp: Duraplan, tenant: str, worker_deps: WorkerDeps) -> None:
    # Compensation arguments are templates, rendered when the step completes.
    plan = {
        "name": "saga-mixed",
        "steps": [
            {
                "id": "reserve",
                "kind": "tool",
                "tool": "kv.incr",
                "args": {"key": "stock", "by": 5},
                "compensate": {"tool": "kv.incr", "args": {"key": "stock", "by": -5}},
            },
            {
                "id": "record",
                "kind": "tool",
                "tool": "debug.echo",
                "args": {"value": "r"},
                "compensate": {"tool": "kv.put", "args": {"key": "undone", "value": "${steps.reserve.output}"}},
            },
            {
                "id": "compute",
                "kind": "code",
                "code": "1 + 1",
                "compensate": {"code": "undo + 1", "inputs": {"undo": "${steps.reserve.output.value}"}},
                "depends_on": ["reserve"],
            },
            {
                "id": "boom",
                "kind": "tool",
                "tool": "debug.fail",
                "args": {"message": "x"},
                "depends_on": ["compute", "record"],
            },
        ],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="comp")
    await run_failure(handle)
    assert await worker_deps.store.kv_get(tenant, "stock") == 0
    assert await worker_deps.store.kv_get(tenant, "undone") == {"key": "stock", "value": 5}
    status = await handle.status()
    assert status["compensation_errors"] == []
    steps = steps_by_id(status)
    assert {i: steps[i]["state"] for i in ("reserve", "record", "compute")} == dict.fromkeys(
        ("reserve", "record", "compute"), "compensated"
    )


async def test_failing_compensation_is_reported(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "saga-broken-undo",
        "steps": [
            {
                "id": "a",
                "kind": "tool",
                "tool": "debug.echo",
                "args": {"value": 1},
                "compensate": {"tool": "debug.fail", "args": {"message": "cannot undo", "error_type": "UndoFailed"}},
            },
            {"id": "boom", "kind": "fail", "message": "stop", "depends_on": ["a"]},
        ],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="comp")
    failure = await run_failure(handle)
    assert failure.details["step"] == "boom"
    status = await handle.status()
    assert status["compensation_errors"] == [{"step": "a", "type": "UndoFailed", "message": "cannot undo"}]
    assert steps_by_id(status)["a"]["state"] == "completed"
