"""Per-tenant quotas from the registry, one test per limit, on the real engine: steps per run,
step output size, event size, code CPU and memory, in-flight steps per worker, and the run rate
across a restart of the service. Over a limit: a clear error naming it, and nothing half-done."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client

from executor import Duraplan, RunFailed, RunNotFound, Settings, running_worker
from executor.service.tenants import QuotaExceeded, TenantRegistry
from executor.worker.fairness import QUEUE_PER_SLOT, TenantGate
from executor.worker.runner import WorkerDeps
from tests.engine.conftest import wait_for
from tests.engine.test_replay import assert_replays
from tools import Tool, ToolContext, default_registry

HELD: dict[str, asyncio.Event] = {}  # tenant -> released when set
PEAK: dict[str, int] = {}
NOW: dict[str, int] = {}


async def _hold(args: dict[str, Any], ctx: ToolContext) -> Any:
    """Counts concurrent calls per tenant, and blocks until the test releases the tenant."""
    NOW[ctx.tenant] = NOW.get(ctx.tenant, 0) + 1
    PEAK[ctx.tenant] = max(PEAK.get(ctx.tenant, 0), NOW[ctx.tenant])
    try:
        await HELD.setdefault(ctx.tenant, asyncio.Event()).wait()
        return args.get("n")
    finally:
        NOW[ctx.tenant] -= 1


@dataclass
class Env:
    dp: Duraplan
    tenants: TenantRegistry
    deps: WorkerDeps
    db: Path

    def tenant(self, **quotas: float) -> str:
        name = f"q-{uuid.uuid4().hex[:8]}"
        self.tenants.create(name)
        self.tenants.grant_tools(name, ["debug.*", "test.*"])
        if quotas:
            self.tenants.set_quotas(name, **quotas)
        return name


@pytest_asyncio.fixture(scope="module")
async def env(client: Client, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    home = tmp_path_factory.mktemp("quotas")
    tenants = TenantRegistry(home / "tenants.db")
    registry = default_registry()
    registry.register(
        Tool("test.hold", "Blocks until released.", {"type": "object"}, _hold, local=False)  # remote activity
    )
    settings = Settings(home=home, task_queue=f"quotas-{uuid.uuid4().hex[:8]}")
    async with running_worker(client, settings, registry=registry, tenants=tenants) as deps:
        yield Env(Duraplan(client, settings, registry, tenants=tenants), tenants, deps, home / "tenants.db")
    tenants.close()


def _echoes(n: int) -> dict[str, Any]:
    return {
        "name": "echoes",
        "steps": [
            {"id": f"s{i}", "kind": "tool", "tool": "debug.echo", "args": {"value": i}}
            | ({"depends_on": [f"s{i - 1}"]} if i else {})
            for i in range(n)
        ],
    }


async def test_max_steps_per_run(env: Env) -> None:
    tenant = env.tenant(max_steps_per_run=3)
    # A plan that asks for more than the cap is refused before anything starts.
    asks_more = {**_echoes(2), "limits": {"max_steps": 50}}
    with pytest.raises(QuotaExceeded, match="max_steps_per_run") as refused:
        await env.dp.submit_plan(asks_more, tenant=tenant, session="s", run_id="asks-more")
    assert "limits.max_steps=50" in str(refused.value) and refused.value.retry_after_s is None
    with pytest.raises(RunNotFound):
        await env.dp.get_run("asks-more", tenant=tenant).status()
    # A plan that leaves the limit unset runs under the tenant's cap: the 4th step fails the run.
    handle = await env.dp.submit_plan(_echoes(5), tenant=tenant, session="s")
    with pytest.raises(RunFailed, match="max_steps_per_run=3"):
        await handle.result()
    status = await handle.status()
    assert [s["state"] for s in status["steps"]] == ["completed"] * 3 + ["failed", "skipped"]
    await assert_replays(handle)
    # Within the cap, fine; a quota raised later applies to new runs.
    assert await (await env.dp.submit_plan(_echoes(3), tenant=tenant, session="s")).result() is None
    env.tenants.set_quotas(tenant, max_steps_per_run=10)
    await (await env.dp.submit_plan(_echoes(5), tenant=tenant, session="s")).result()


async def test_max_step_output_bytes(env: Env) -> None:
    tenant = env.tenant(max_step_output_bytes=1000)
    plan = {
        "name": "big",
        "steps": [
            {"id": "small", "kind": "tool", "tool": "debug.echo", "args": {"value": "x" * 100}},
            # after "small" (a reference orders them): run side by side, either may end first
            {
                "id": "big",
                "kind": "tool",
                "tool": "debug.echo",
                "args": {"value": "x" * 2000},
                "when": "${steps.small.output.value}",
            },
        ],
    }
    handle = await env.dp.submit_plan(plan, tenant=tenant, session="s")
    with pytest.raises(RunFailed, match="OutputTooLarge"):
        await handle.result()
    steps = {s["id"]: s for s in (await handle.status())["steps"]}
    assert steps["small"]["state"] == "completed"
    assert steps["big"]["state"] == "failed" and steps["big"]["attempts"] == 1, "not retried"
    assert "the limit is 1000" in steps["big"]["error"]["message"]
    assert "max_step_output_bytes" in steps["big"]["error"]["message"]
    # The default tenant's 1 MiB admits the same output.
    other = env.tenant()
    assert await (await env.dp.submit_plan(plan, tenant=other, session="s")).result() is None


async def test_max_event_bytes(env: Env) -> None:
    tenant = env.tenant(max_event_bytes=200)
    plan = {
        "name": "waits",
        "steps": [{"id": "w", "kind": "wait_for_event", "event": "go", "timeout": "1h"}],
        "output": "${steps.w.output}",
    }
    handle = await env.dp.submit_plan(plan, tenant=tenant, session="s")
    with pytest.raises(QuotaExceeded, match="max_event_bytes") as refused:
        await handle.send_event("go", {"blob": "y" * 500})
    assert "is 5" in str(refused.value) and "cap is 200" in str(refused.value)
    # A client without the registry is stopped by the run itself (its quota is pinned at submit).
    unchecked = Duraplan(env.dp.client, env.dp.settings, env.dp.registry)
    with pytest.raises(QuotaExceeded, match="max_event_bytes"):
        await unchecked.get_run(handle.run_id, tenant=tenant).send_event("go", {"blob": "y" * 500})
    status = await handle.status()
    assert status["state"] == "waiting" and status["buffered_events"] == 0, "nothing was taken in"
    await handle.send_event("go", {"ok": True})
    assert await handle.result() == {"ok": True}


async def test_code_cpu_and_memory(env: Env) -> None:
    tenant = env.tenant(code_memory_mb=64, code_cpu_seconds=1)
    hungry = {"name": "hungry", "steps": [{"id": "c", "kind": "code", "code": "1", "memory_mb": 128}]}
    with pytest.raises(QuotaExceeded, match="code_memory_mb") as refused:
        await env.dp.submit_plan(hungry, tenant=tenant, session="s")
    assert "step 'c' asks memory_mb=128" in str(refused.value)
    slow = {"name": "slow", "steps": [{"id": "c", "kind": "code", "code": "1", "cpu_seconds": 3}]}
    with pytest.raises(QuotaExceeded, match="code_cpu_seconds"):
        await env.dp.submit_plan(slow, tenant=tenant, session="s")
    # A step that sets no limit gets the tenant's cap (1 s), not the sandbox default (5 s).
    spin = {
        "name": "spin",
        "steps": [{"id": "c", "kind": "code", "code": "n = 0\nwhile True:\n    n += 1", "retry": {"max_attempts": 1}}],
    }
    handle = await env.dp.submit_plan(spin, tenant=tenant, session="s")
    with pytest.raises(RunFailed, match="TimeoutError") as failed:
        await handle.result()
    assert "1" in str(failed.value)
    [step] = (await handle.status())["steps"]
    started, ended = step["started_at"], step["ended_at"]
    assert (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds() < 4.5


def _holds(n: int) -> dict[str, Any]:
    return {
        "name": "fan-out",
        "steps": [
            {
                "id": "each",
                "kind": "foreach",
                "items": "${input.items}",
                "max_concurrency": 10,
                "steps": [{"id": "h", "kind": "tool", "tool": "test.hold", "args": {"n": "${item}"}}],
            }
        ],
        "inputs": {"type": "object"},
        "output": "${steps.each.output}",
    }


async def _records(env: Env, workflow_id: str) -> dict[str, Any]:
    records: dict[str, Any] = await env.dp.client.get_workflow_handle(workflow_id).query("step_records")
    return records


async def test_max_inflight_steps_per_worker(env: Env) -> None:
    noisy = env.tenant(max_inflight_steps=2)
    quiet = env.tenant()
    gate = env.deps.activities.gate
    # Each run holds at most 2 steps in flight (its own fan-out queues in the workflow); the two
    # runs together ask for 4, and the worker admits 2 while the other 2 wait in line there.
    busy = [
        await env.dp.submit_plan(_holds(3), tenant=noisy, session="s", inputs={"items": [10 * r + i for i in range(3)]})
        for r in range(2)
    ]
    await wait_for(lambda: NOW.get(noisy) == 2 and gate.waiting(noisy) == 2)
    # Another tenant is not held back by the noisy one's cap.
    calm = await env.dp.submit_plan(_holds(1), tenant=quiet, session="s", inputs={"items": [1]})
    await wait_for(lambda: NOW.get(quiet) == 1)
    HELD.setdefault(quiet, asyncio.Event()).set()
    assert await calm.result() == [1]
    assert NOW[noisy] == 2 and gate.running(noisy) == 2, "still capped while the quiet tenant ran"
    HELD.setdefault(noisy, asyncio.Event()).set()
    assert [await b.result() for b in busy] == [[0, 1, 2], [10, 11, 12]], "every step ran, once"
    assert PEAK[noisy] == 2
    for b in busy:
        holds = [r for path, r in (await _records(env, b.workflow_id)).items() if path.endswith(".h")]
        assert len(holds) == 3 and all(r["attempts"] == 1 and r["state"] == "completed" for r in holds)
        await assert_replays(b)


async def test_a_step_refused_at_the_gate_is_dispatched_again_not_retried(env: Env) -> None:
    noisy = env.tenant(max_inflight_steps=1)
    gate = env.deps.activities.gate
    gate.queue_per_slot = 0  # no waiting line in the worker: over the cap is refused at once
    try:
        first = await env.dp.submit_plan(_holds(1), tenant=noisy, session="s", inputs={"items": [1]})
        await wait_for(lambda: NOW.get(noisy) == 1)
        second = await env.dp.submit_plan(_holds(1), tenant=noisy, session="s", inputs={"items": [2]})

        async def throttled() -> bool:
            return any(r["state"] == "throttled" for r in (await _records(env, second.workflow_id)).values())

        await wait_for(throttled)
        HELD.setdefault(noisy, asyncio.Event()).set()
        assert (await first.result(), await second.result()) == ([1], [2])
        [hold] = [r for path, r in (await _records(env, second.workflow_id)).items() if path.endswith(".h")]
        assert hold["attempts"] == 1, "a refusal is not an attempt"
        assert PEAK[noisy] == 1
        for handle in (first, second):  # the refusal, timer and re-dispatch replay deterministically
            await assert_replays(handle)
    finally:
        gate.queue_per_slot = QUEUE_PER_SLOT


async def test_gate_hands_slots_over_in_order_and_bounds_its_line() -> None:
    gate = TenantGate(queue_per_slot=2, wait_seconds=5)
    assert await gate.enter("t", 1)
    order: list[int] = []

    async def waiter(i: int) -> None:
        if await gate.enter("t", 1):
            order.append(i)
            gate.leave("t")

    waiters = [asyncio.create_task(waiter(i)) for i in range(2)]
    await wait_for(lambda: gate.waiting("t") == 2)
    assert not await gate.enter("t", 1), "the line (2 per slot) is full: refused at once"
    assert await gate.enter("other", 1), "other tenants have their own slots"
    gate.leave("t")
    await asyncio.gather(*waiters)
    assert order == [0, 1] and gate.running("t") == 0 and gate.waiting("t") == 0
    # A waiter cancelled in line leaves no trace; one cancelled as its slot arrives passes it on.
    gate = TenantGate()
    assert await gate.enter("t", 1)
    gone = asyncio.create_task(gate.enter("t", 1))
    await wait_for(lambda: gate.waiting("t") == 1)
    gone.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await gone
    assert (gate.waiting("t"), gate.running("t")) == (0, 1)
    second, third = asyncio.create_task(gate.enter("t", 1)), asyncio.create_task(gate.enter("t", 1))
    await wait_for(lambda: gate.waiting("t") == 2)
    gate.leave("t")  # handed to the second ...
    second.cancel()  # ... which is cancelled before it runs again
    assert await third is True
    assert second.cancelled() and (gate.waiting("t"), gate.running("t")) == (0, 1)
    impatient = TenantGate(wait_seconds=0.05)
    assert await impatient.enter("t", 1)
    assert not await impatient.enter("t", 1), "no slot came free in time"
    assert impatient.waiting("t") == 0 and impatient.running("t") == 1


async def test_run_rate_survives_a_restart_between_bursts(env: Env) -> None:
    tenant = env.tenant(runs_per_second=0.001, runs_burst=3)
    plan = _echoes(1)
    # Two bursts of the same bucket (3 runs), a restart between them. A re-submit of an existing
    # run starts nothing, so it costs no token.
    first = await env.dp.submit_plan(plan, tenant=tenant, session="s", run_id="r1")
    await first.result()
    again = await env.dp.submit_plan(plan, tenant=tenant, session="s", run_id="r1")  # idempotent
    assert again.run_id == "r1"
    await env.dp.submit_plan(plan, tenant=tenant, session="s", run_id="r2")
    # The service restarts: a new registry and client on the same file.
    restarted = TenantRegistry(env.db)
    dp = Duraplan(env.dp.client, env.dp.settings, env.dp.registry, tenants=restarted)
    await dp.submit_plan(plan, tenant=tenant, session="s", run_id="r3")
    with pytest.raises(QuotaExceeded, match="runs_per_second") as refused:
        await dp.submit_plan(plan, tenant=tenant, session="s", run_id="r4")
    assert refused.value.retry_after_s is not None and refused.value.retry_after_s > 100
    with pytest.raises(RunNotFound):
        await dp.get_run("r4", tenant=tenant).status()
    restarted.close()


async def test_script_segments_get_the_tenants_code_quota(env: Env) -> None:
    tenant = env.tenant(code_memory_mb=64, code_cpu_seconds=1)
    hungry = {"name": "hungry", "steps": [{"id": "s", "kind": "script", "code": "1", "memory_mb": 128}]}
    with pytest.raises(QuotaExceeded, match="code_memory_mb"):
        await env.dp.submit_plan(hungry, tenant=tenant, session="s")
    # The segment after a host call spins: it gets the tenant's 1 s, not the sandbox default.
    code = "t = now()\nn = 0\nwhile True:\n    n += 1"
    spin = {"name": "spin", "steps": [{"id": "s", "kind": "script", "code": code, "retry": {"max_attempts": 1}}]}
    handle = await env.dp.submit_plan(spin, tenant=tenant, session="s")
    with pytest.raises(RunFailed, match="TimeoutError"):
        await handle.result()
    [step] = (await handle.status())["steps"]
    assert [c["kind"] for c in step["calls"]] == ["now"]
