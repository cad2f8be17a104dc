"""Long runs keep their continue-as-new carry bounded: finished foreach items packed, a large carry
kept in the worker's store (a lowered ``carry_limit`` makes a short run take that path)."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.api.enums.v1 import EventType

from executor import Duraplan
from executor.engine.carry import decode_carry, encode_carry, pack_records, split_text, unpack_records
from executor.engine.contract import WORKFLOW_NAME
from executor.engine.models import Carry, EventRecord, RunInput, StepError, StepRecord, plan_hash
from executor.worker.runner import WorkerDeps
from tools.carry_store import CarryStore

N = 150


def test_pack_keeps_every_record_and_packs_plain_items() -> None:
    records = {
        "nums": StepRecord(state="completed", output=[1, 2]),
        "each": StepRecord(state="running", detail={"items": 6}),
        "each[0]": StepRecord(state="completed", output={"v": 0}),
        "each[1]": StepRecord(state="completed", output=None),
        "each[3]": StepRecord(state="completed", output=3),
        "each[2].echo": StepRecord(state="running", attempts=1),
        "each[4]": StepRecord(state="failed", error=StepError("Boom", "no")),
        "each[0].echo": StepRecord(state="completed", output=0),  # inside a finished item: dropped
    }
    packed, items = pack_records(records)
    assert items == {"each": [[0, [{"v": 0}, None]], [3, [3]]]}
    assert set(packed) == {"nums", "each", "each[2].echo", "each[4]"}
    back = unpack_records(packed, items)
    assert back == {k: v for k, v in records.items() if k != "each[0].echo"}


def test_carry_text_round_trips_in_parts() -> None:
    carry = Carry(
        records={"a": {"s": "completed", "o": "é" * 10}},
        events=[EventRecord("go", {"x": 1}, "e1", "2026-01-01T00:00:00")],
        items={"each": [[0, [1, 2]]]},
        continued=3,
    )
    text = encode_carry(carry)
    parts = split_text(text, 7)
    assert len(parts) > 1 and decode_carry("".join(parts)) == carry


async def test_long_run_offloads_its_carry_and_runs_every_step_once(dp: Duraplan, worker_deps: WorkerDeps) -> None:
    tenant = "carry-offload"
    plan: dict[str, Any] = {
        "name": "carry-offload",
        "steps": [
            {"id": "nums", "kind": "code", "code": "list(range(n))", "inputs": {"n": N}},
            {
                "id": "each",
                "kind": "foreach",
                "items": "${steps.nums.output}",
                "max_concurrency": 5,
                "steps": [{"id": "echo", "kind": "tool", "tool": "debug.echo", "args": {"value": "${item}"}}],
                "output": "${steps.echo.output.value}",
            },
            # An event sent while the loop runs waits in the buffer across every continue-as-new.
            {"id": "go", "kind": "wait_for_event", "event": "go", "depends_on": ["each"]},
            {"id": "total", "kind": "code", "code": "(len(xs), sum(xs))", "inputs": {"xs": "${steps.each.output}"}},
        ],
        "limits": {"max_parallel": 5, "max_steps": 10 * N},
        "output": {"total": "${steps.total.output}", "go": "${steps.go.output}"},
    }
    run_id = f"carry-{plan_hash({'n': id(plan)})[-8:]}"
    arg = RunInput(
        plan=plan,
        plan_hash=plan_hash(plan),
        tenant=tenant,
        session="s",
        run_id=run_id,
        local_tools=[],  # activities: history grows with each step
        history_limit=200,  # a few continue-as-new
        carry_limit=200,  # every carry goes to the store
        search_attributes=False,
    )
    handle = await dp.client.start_workflow(
        WORKFLOW_NAME, arg, id=f"{tenant}/{run_id}", task_queue=dp.settings.task_queue
    )
    await handle.execute_update("send_event", EventRecord("go", {"k": 1}, "e-1", ""))
    assert await handle.result() == {"total": [N, N * (N - 1) // 2], "go": {"k": 1}}
    status = await handle.query("status")
    assert status["continued_as_new"] >= 2
    assert status["executed_steps"] == N + 3  # nothing ran twice across executions

    # Later executions started from a reference, not from the records themselves.
    refs = 0
    async for wf in dp.client.list_workflows(f"WorkflowId = '{tenant}/{run_id}'"):
        history = await dp.client.get_workflow_handle(f"{tenant}/{run_id}", run_id=wf.run_id).fetch_history()
        first = history.events[0]
        assert first.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
        payload = first.workflow_execution_started_event_attributes.input.payloads[0].data
        assert len(payload) < 4096, "a carry this size belongs in the store"
        refs += b'"ref":"' in payload
    assert refs == status["continued_as_new"]
    # The finished run leaves nothing in the store.
    carries = CarryStore(worker_deps.store.database)
    assert await carries.load(tenant, f"{run_id}#0", str(status["continued_as_new"]), 0) is None


async def test_a_terminated_run_leaves_no_carry(dp: Duraplan, worker_deps: WorkerDeps) -> None:
    """A terminated run runs no code to drop its stored carries: the usage reconciler, which lists
    every closed execution anyway, drops them (a long run's carry is hundreds of KiB)."""
    from executor.service.usage_reconcile import Reconciler
    from tools.usage import UsageStore

    tenant = "carry-terminated"
    plan: dict[str, Any] = {
        "name": "carry-terminated",
        "steps": [
            {"id": "nums", "kind": "code", "code": "list(range(n))", "inputs": {"n": 60}},
            {
                "id": "each",
                "kind": "foreach",
                "items": "${steps.nums.output}",
                "max_concurrency": 5,
                "steps": [{"id": "echo", "kind": "tool", "tool": "debug.echo", "args": {"value": "${item}"}}],
            },
            {"id": "go", "kind": "wait_for_event", "event": "go", "depends_on": ["each"]},
        ],
        "limits": {"max_parallel": 5, "max_steps": 600},
    }
    run_id = f"carry-t-{plan_hash({'n': id(plan)})[-8:]}"
    arg = RunInput(
        plan=plan,
        plan_hash=plan_hash(plan),
        tenant=tenant,
        session="s",
        run_id=run_id,
        local_tools=[],
        history_limit=100,  # continues as new while the loop runs
        carry_limit=200,  # every carry goes to the store
        search_attributes=False,
    )
    handle = await dp.client.start_workflow(
        WORKFLOW_NAME, arg, id=f"{tenant}/{run_id}", task_queue=dp.settings.task_queue
    )
    carries = CarryStore(worker_deps.store.database)

    async def stored() -> int:
        with worker_deps.store.database.reading() as db:
            row = db.execute("SELECT COUNT(*) FROM run_carry WHERE tenant = ?", (tenant,)).fetchone()
        return int(row[0])

    for _ in range(400):
        status = await handle.query("status")
        if status["state"] == "waiting":
            break
        await asyncio.sleep(0.05)
    assert status["state"] == "waiting" and status["continued_as_new"] >= 1 and await stored() > 0
    await handle.terminate("test")
    usage = UsageStore(worker_deps.settings.store_location())
    try:
        reconciler = Reconciler(dp.client, usage, dp.settings.task_queue, search_attributes=False)
        for _ in range(100):  # visibility shows the close a moment later
            await reconciler.reconcile(tenant)
            if await stored() == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        usage.close()
    assert await stored() == 0, "the terminated run's carries stayed in the store"
    assert await carries.load(tenant, f"{run_id}#0", "1", 0) is None
