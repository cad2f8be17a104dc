"""Run ends reach the ledger from visibility (executor.service.usage_reconcile), once each: a
completed, a failed, a cancelled, a continued-as-new and a terminated run, and a subplan's child
run, also when the reconciler reads them again or two reconcilers read at once. On SQLite and on
the shared PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from executor import Duraplan, RunFailed, Settings, running_worker
from executor.engine.contract import SA_TENANT, WORKFLOW_NAME
from executor.engine.metering import METER_MEMO
from executor.engine.models import ENGINE_VERSION, RunInput, plan_hash
from executor.lang.loader import load_plan
from executor.service.usage_reconcile import SCOPE, SWEEP_OVERLAP, Reconciler
from tests.engine.conftest import step_state, wait_for
from tools.usage import UsageStore

SETS = {
    "name": "sets",
    "steps": [
        {"id": "a", "kind": "set", "value": 1},
        {"id": "b", "kind": "set", "value": "${steps.a.output}", "depends_on": ["a"]},
        {"id": "e", "kind": "tool", "tool": "debug.echo", "args": {"value": 2}, "execution": "local"},
    ],
    "output": "${steps.b.output}",
}
FAILS = {"name": "fails", "steps": [{"id": "no", "kind": "fail", "message": "refused"}]}
# Tool steps only (engine 3): their runs' ends upsert no memo; the reconciler reads them from the close status.
TOOLS = {
    "name": "tools",
    "steps": [{"id": "t", "kind": "tool", "tool": "debug.echo", "args": {"value": 4}, "execution": "local"}],
    "output": "${steps.t.output.value}",
}
TOOL_FAILS = {
    "name": "tool-fails",
    "steps": [{"id": "t", "kind": "tool", "tool": "debug.fail", "args": {"message": "broken"}}],
}
WAITS = {"name": "waits", "steps": [{"id": "w", "kind": "wait_for_event", "event": "go"}]}
PARENT = {
    "name": "parent",
    "steps": [
        {
            "id": "sub",
            "kind": "subplan",
            "plan": {"name": "child", "steps": [{"id": "c", "kind": "set", "value": 3}], "output": "${steps.c.output}"},
        },
        {"id": "after", "kind": "set", "value": "${steps.sub.output}", "depends_on": ["sub"]},
    ],
    "output": "${steps.after.output}",
}
# Remote tool steps grow history (scheduled, started, completed): a small history limit continues the run as new
# more than once; the set steps between them are counted per segment, from each segment's memo.
LONG = {
    "name": "long",
    "steps": [
        step
        for i in range(8)
        for step in (
            {
                "id": f"e{i}",
                "kind": "tool",
                "tool": "debug.echo",
                "args": {"value": i},
                "execution": "remote",
                **({"depends_on": [f"s{i - 1}"]} if i else {}),
            },
            {"id": f"s{i}", "kind": "set", "value": i, "depends_on": [f"e{i}"]},
        )
    ],
}


async def _start_continuing(
    client: Client, settings: Settings, tenant: str, plan: dict[str, Any], generation: int = 0
) -> tuple[str, WorkflowHandle[Any, Any]]:
    """A run with a small history limit (it continues as new), started as the start path would."""
    body = load_plan(plan)
    run_id = f"long-{uuid.uuid4().hex[:8]}"
    arg = RunInput(
        plan=body,
        plan_hash=plan_hash(body),
        tenant=tenant,
        session="s",
        run_id=run_id,
        history_limit=20,
        search_attributes=settings.search_attributes,
        engine=ENGINE_VERSION,
        generation=generation,
    )
    attributes = TypedSearchAttributes([SearchAttributePair(SA_TENANT, tenant)])
    handle = await client.start_workflow(
        WORKFLOW_NAME,
        arg,
        id=f"{tenant}/{run_id}",
        task_queue=settings.task_queue,
        search_attributes=attributes if settings.search_attributes else None,
        memo={"generation": generation} if generation else None,  # as start_run's restart sets it
    )
    return run_id, handle


async def _continued_run(client: Client, settings: Settings, tenant: str) -> str:
    run_id, handle = await _start_continuing(client, settings, tenant, LONG)
    await handle.result()
    return run_id


@pytest.mark.parametrize("search_attributes", [True, False], ids=["tenant-filter", "no-search-attributes"])
async def test_every_run_end_counts_once(
    client: Client, tmp_path: Path, db_location: str | Path, search_attributes: bool
) -> None:
    if search_attributes is False and not isinstance(db_location, Path):
        pytest.skip("the no-search-attributes path does not depend on the backend")
    database_url = None if isinstance(db_location, Path) else db_location
    settings = Settings(
        home=tmp_path,
        task_queue=f"meter-rec-{uuid.uuid4().hex[:8]}",
        database_url=database_url,
        search_attributes=search_attributes,
    )
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    async with running_worker(client, settings):
        dp = Duraplan(client, settings)
        assert await (await dp.submit_plan(SETS, tenant=tenant, session="s")).result() == 1
        with pytest.raises(RunFailed, match="refused"):
            await (await dp.submit_plan(FAILS, tenant=tenant, session="s")).result()
        waiting = await dp.submit_plan(WAITS, tenant=tenant, session="s")
        await wait_for(lambda: step_state(waiting, "w"), timeout=30)
        await waiting.cancel()
        with pytest.raises(RunFailed):
            await waiting.result()
        assert await (await dp.submit_plan(PARENT, tenant=tenant, session="s")).result() == 3
        long_id = await _continued_run(client, settings, tenant)
        doomed = await dp.submit_plan(WAITS, tenant=tenant, session="s")
        await wait_for(lambda: step_state(doomed, "w"), timeout=30)
        await doomed.terminate()
        tools_only = await dp.submit_plan(TOOLS, tenant=tenant, session="s")
        assert await tools_only.result() == 4
        restarted = await tools_only.restart()  # generation 1: a run of its own
        assert await restarted.result() == 4
        with pytest.raises(RunFailed, match="broken"):
            await (await dp.submit_plan(TOOL_FAILS, tenant=tenant, session="s")).result()
        for run_id in (tools_only.run_id, waiting.run_id):
            memo = await (await client.get_workflow_handle(f"{tenant}/{run_id}").describe()).memo()
            assert METER_MEMO not in memo, "no step the workflow interpreted itself: nothing upserted"

        # set: a, b, after, the child run's c and long's 8; the cancelled and terminated waits finished none.
        expected_steps = {"set": 12, "tool": 12, "fail": 1, "subplan": 1}

        async def report_complete() -> bool:
            total = (await dp.usage(tenant=tenant)).total
            return total.runs_terminated == 1 and total.steps.get("set", 0) == 12 and total.runs_failed == 2

        # Visibility is eventually consistent; the report re-reads it each time it is asked.
        await wait_for(report_complete, timeout=30, interval=0.2)
        total = (await dp.usage(tenant=tenant)).total
        assert total.steps == expected_steps, "each segment's workflow steps once (child run's `c` included)"
        assert (total.runs_started, total.runs_completed, total.runs_failed) == (9, 5, 2)
        assert (total.runs_cancelled, total.runs_terminated) == (1, 1), "the child run is no run of its own"

        store = dp.usage_store
        assert store is not None
        # The worker's own pass (every few seconds) moves the checkpoint; only it does.
        await wait_for(lambda: store.reconciled_until(SCOPE), timeout=20, interval=0.2)

        # Read everything again, from scratch, twice at once on two connections: nothing changes.
        other = UsageStore(settings.store_location())
        try:
            first, second = (
                Reconciler(client, store, settings.task_queue, search_attributes=search_attributes),
                Reconciler(client, other, settings.task_queue, search_attributes=search_attributes),
            )
            passes = await asyncio.gather(
                first.reconcile(overlap=SWEEP_OVERLAP),
                second.reconcile(overlap=SWEEP_OVERLAP),
                first.reconcile(tenant, overlap=SWEEP_OVERLAP),
            )
            # 9 top-level runs (a restart's two generations), the child, and the long run's earlier
            # executions: all listed again
            assert all(p.listed >= 11 for p in passes), passes
            again = (await dp.usage(tenant=tenant)).total
            assert again == total
            # Nothing showed up late: the next pass counts the overlap window instead of listing it.
            quiet = await first.reconcile()
            assert quiet.counted and quiet.written == 0, quiet
            # Something visibility has that this reader never listed (a close that showed up late):
            # the counts differ, the window is listed again and the missing run end written, once.
            newest = max(first._written.values())  # the checkpoint: the window ends before it
            _, missing = max((t, k) for k, t in first._written.items() if t < newest)
            first._written.pop(missing)
            late = await first.reconcile()
            assert (late.counted, late.written) == (False, 1), late
            assert (await dp.usage(tenant=tenant)).total == total
            assert (await dp.usage(tenant=f"{tenant}-other")).total.steps == {}, "nothing leaks to another tenant"
        finally:
            other.close()

        # The memo the run wrote, and what a worker of engine 1 would not have written.
        described = await client.get_workflow_handle(f"{tenant}/{long_id}").describe()
        meter = (await described.memo())[METER_MEMO]
        assert meter["outcome"] == "completed" and meter["segment"] >= 1 and meter["tenant"] == tenant


async def test_metering_off_writes_nothing(client: Client, tmp_path: Path) -> None:
    """metered=False: no memo on the run, no ledger, no reconciler."""
    settings = Settings(home=tmp_path, task_queue=f"meter-off-{uuid.uuid4().hex[:8]}", metering=False)
    async with running_worker(client, settings):
        dp = Duraplan(client, settings)
        handle = await dp.submit_plan(SETS, tenant="off", session="s")
        assert await handle.result() == 1
    described = await client.get_workflow_handle(f"off/{handle.run_id}").describe()
    assert METER_MEMO not in await described.memo()
    assert dp.usage_store is None


async def test_checkpoint_only_moves_forward_and_one_reader_holds_the_lease(db_location: str | Path) -> None:
    store = UsageStore(db_location)
    try:
        assert await store.reconciled_until("runs") is None
        await store.advance_reconciled("runs", 100.0)
        await store.advance_reconciled("runs", 50.0)  # a slower reader finishing late
        assert await store.reconciled_until("runs") == 100.0
        assert await store.take_lease("runs", "a", 60)
        assert not await store.take_lease("runs", "b", 60), "a holds it"
        assert await store.take_lease("runs", "a", 60), "a renews its own"
        assert await store.reconciled_until("runs") == 100.0, "the lease leaves the checkpoint alone"
        assert await store.take_lease("runs", "a", -1)  # a's lease has run out
        assert await store.take_lease("runs", "b", 60), "an expired lease goes to the next reader"
        assert not await store.take_lease("runs", "a", 60)
    finally:
        store.close()


async def test_a_run_terminated_after_continuing_as_new_counts_as_terminated(client: Client, tmp_path: Path) -> None:
    """A restarted run (generation 1) that continued as new and was then terminated: its last
    execution ran no code of its own, the generation it carries names the run; it counts as
    terminated, once, and as started once."""
    settings = Settings(home=tmp_path, task_queue=f"meter-term-{uuid.uuid4().hex[:8]}")
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    waits = {
        **LONG,
        "steps": [*LONG["steps"], {"id": "w", "kind": "wait_for_event", "event": "go", "depends_on": ["s7"]}],
    }
    async with running_worker(client, settings):
        dp = Duraplan(client, settings)
        run_id, handle = await _start_continuing(client, settings, tenant, waits, generation=1)

        async def waiting() -> bool:
            status = await handle.query("status")
            return bool(status["continued_as_new"] >= 1 and status["state"] == "waiting")

        await wait_for(waiting, timeout=30, interval=0.1)
        await handle.terminate("test")
        total = (await dp.usage(tenant=tenant)).total
        assert (total.runs_started, total.runs_terminated, total.runs_completed) == (1, 1, 0)
        assert total.steps.get("set", 0) >= 1, "the segments that continued as new counted their steps"
        last = await client.get_workflow_handle(f"{tenant}/{run_id}").describe()
        assert await last.memo() == {"generation": 1}, "continue-as-new carries the start memo over"


async def test_a_tenant_asking_for_usage_in_a_loop_is_rechecked_once_a_second(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each recheck asks Temporal about up to RECHECK open runs: a report loop must not multiply them."""
    store = UsageStore(tmp_path / "usage.db")
    try:
        reconciler = Reconciler(client, store, f"recheck-{uuid.uuid4().hex[:8]}")
        asked: list[str] = []
        real = store.open_runs

        async def open_runs(tenant: str, limit: int) -> list[str]:
            asked.append(tenant)
            return await real(tenant, limit)

        monkeypatch.setattr(store, "open_runs", open_runs)
        for _ in range(5):
            await reconciler.recheck_open("loop")
        await reconciler.recheck_open("other")
        assert asked == ["loop", "other"], "one recheck per tenant within RECHECK_INTERVAL"
        monkeypatch.setattr("executor.service.usage_reconcile.RECHECK_INTERVAL", 0.0)
        await reconciler.recheck_open("loop")
        assert asked == ["loop", "other", "loop"]
    finally:
        store.close()
