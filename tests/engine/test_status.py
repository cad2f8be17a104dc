"""Run-level behaviour: set/fail steps, outputs, limits, idempotent submit, listing, tenancy, status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from executor import Duraplan, RunConflict, RunFailed, RunNotFound, validate_plan
from executor.engine.models import plan_hash

from .conftest import run_failure, steps_by_id, ts, wait_for, wait_step_state


def waiting_plan(name: str = "waits") -> dict[str, Any]:
    return {"name": name, "steps": [{"id": "wait", "kind": "wait_for_event", "event": "go", "timeout": "60s"}]}


# ---- set, fail, output -------------------------------------------------------------------------


async def test_set_step_and_plan_output_templates(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "set-output",
        "inputs": {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}},
        "steps": [
            {
                "id": "info",
                "kind": "set",
                "value": {"who": "${input.name}", "n": "${input.n}", "list": ["${input.n}", 2]},
            },
        ],
        "output": {
            "greeting": "Hello ${input.name}!",
            "typed": "${steps.info.output.n}",
            "embedded": "n=${steps.info.output.n} list=${steps.info.output.list}",
            "run": "${run.id}",
            "literal": [True, None, 1.5],
        },
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="st", inputs={"name": "Ada", "n": 3}, run_id="out-1")
    assert await handle.result() == {
        "greeting": "Hello Ada!",
        "typed": 3,
        "embedded": "n=3 list=[3, 2]",
        "run": "out-1",
        "literal": [True, None, 1.5],
    }
    info = steps_by_id(await handle.status())["info"]
    assert info["state"] == "completed"
    assert info["kind"] == "set"


async def test_fail_step_fails_the_run_with_its_error_type_and_message(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "fail",
        "steps": [
            {"id": "check", "kind": "set", "value": "${input.count}"},
            {
                "id": "stop",
                "kind": "fail",
                "message": "too many: ${steps.check.output}",
                "error_type": "TooMany",
                "when": "${steps.check.output > `3`}",
            },
            {"id": "after", "kind": "set", "value": 1, "depends_on": ["stop"]},
        ],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="st", inputs={"count": 5})
    failure = await run_failure(handle)
    assert failure.status == "failed"
    assert failure.details == {"step": "stop", "type": "TooMany", "message": "too many: 5"}
    status = await handle.status()
    assert status["error"] == {"type": "TooMany", "message": "too many: 5"}
    assert steps_by_id(status)["after"]["state"] == "skipped"
    # The same plan with the guard false completes.
    ok = await dp.submit_plan(plan, tenant=tenant, session="st", inputs={"count": 1})
    await ok.result()
    assert steps_by_id(await ok.status())["stop"]["state"] == "skipped"


# ---- limits ------------------------------------------------------------------------------------


async def test_max_steps_exceeded(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "budget",
        "limits": {"max_steps": 3},
        "steps": [
            {
                "id": "each",
                "kind": "foreach",
                "items": "${input.items}",
                "max_concurrency": 1,
                "steps": [{"id": "one", "kind": "set", "value": "${item}"}],
            }
        ],
    }
    ok = await dp.submit_plan(plan, tenant=tenant, session="st", inputs={"items": [1, 2, 3]})
    assert (await ok.status())["plan_name"] == "budget"
    await ok.result()
    over = await dp.submit_plan(plan, tenant=tenant, session="st", inputs={"items": [1, 2, 3, 4]})
    failure = await run_failure(over)
    assert failure.details["type"] == "StepBudgetExceeded"
    assert failure.details["step"] == "each[3].one"
    assert (await over.status())["executed_steps"] == 4


async def test_deadline_exceeded(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "deadline",
        "limits": {"deadline": "1s"},
        "steps": [{"id": "nap", "kind": "sleep", "duration": "30s"}],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="st")
    failure = await run_failure(handle, timeout=15)
    assert failure.details["type"] == "DeadlineExceeded"
    status = await handle.status()
    assert status["state"] == "failed"
    # Failed at the deadline, not after the 30 s sleep.
    assert ts(status["closed_at"]) - ts(status["started_at_server"]) < timedelta(seconds=5)


# ---- submit, list, tenancy ---------------------------------------------------------------------


async def test_resubmitting_the_same_run_returns_the_same_run(dp: Duraplan, tenant: str) -> None:
    plan = {"name": "idem", "steps": [{"id": "a", "kind": "set", "value": "${input.x}"}], "output": "${steps.a.output}"}
    first = await dp.submit_plan(plan, tenant=tenant, session="st", inputs={"x": 1}, run_id="idem-1")
    assert await first.result() == 1
    server_start = (await first.status())["started_at_server"]
    again = await dp.submit_plan(plan, tenant=tenant, session="st", inputs={"x": 1}, run_id="idem-1")
    assert again.run_id == first.run_id
    assert await again.result() == 1
    assert (await again.status())["started_at_server"] == server_start


async def test_resubmitting_with_different_inputs_conflicts(dp: Duraplan, tenant: str) -> None:
    plan = {"name": "idem", "steps": [{"id": "a", "kind": "set", "value": "${input.x}"}], "output": "${steps.a.output}"}
    first = await dp.submit_plan(plan, tenant=tenant, session="st", inputs={"x": 1}, run_id="idem-2")
    with pytest.raises(RunConflict):
        await dp.submit_plan(plan, tenant=tenant, session="st", inputs={"x": 2}, run_id="idem-2")
    assert await first.result() == 1  # the existing run is untouched


async def test_list_runs_by_tenant_session_and_status(dp: Duraplan, tenant: str) -> None:
    done = await dp.submit_plan(
        {"name": "quick", "steps": [{"id": "a", "kind": "set", "value": 1}]},
        tenant=tenant,
        session="s-one",
        run_id="done",
    )
    await done.result()
    waiting = await dp.submit_plan(waiting_plan(), tenant=tenant, session="s-two", run_id="waiting")
    other = await dp.submit_plan(waiting_plan(), tenant=f"{tenant}-other", session="s-one", run_id="elsewhere")
    try:
        await wait_step_state(waiting, "wait", "waiting")

        async def ids(**filters: Any) -> list[str]:
            return sorted(r["run_id"] for r in await dp.list_runs(tenant=tenant, **filters))

        async def settled() -> bool:
            return await ids() == ["done", "waiting"] and await ids(status="completed") == ["done"]

        await wait_for(settled, timeout=15)
        assert await ids(session="s-one") == ["done"]
        assert await ids(session="s-two") == ["waiting"]
        # `runs` and `status` say the same: the run waits for its event
        assert (await waiting.status()).state == "waiting"
        assert await ids(status="waiting") == ["waiting"]
        assert await ids(status="running") == []
        assert await ids(session="s-two", status="completed") == []
        runs = {r["run_id"]: r for r in await dp.list_runs(tenant=tenant)}
        assert runs["done"]["state"] == "completed"
        assert runs["done"]["session"] == "s-one"
        assert runs["done"]["plan_name"] == "quick"
        assert runs["waiting"]["state"] == "waiting"
        assert runs["waiting"]["closed_at"] is None
    finally:
        await waiting.terminate()
        await other.terminate()


async def test_run_of_another_tenant_is_not_found(dp: Duraplan, tenant: str) -> None:
    handle = await dp.submit_plan(waiting_plan(), tenant=tenant, session="st", run_id="private")
    try:
        intruder = dp.get_run("private", tenant=f"{tenant}-b")
        with pytest.raises(RunNotFound):
            await intruder.status()
        with pytest.raises(RunNotFound):
            await intruder.result()
        with pytest.raises(RunNotFound):
            await intruder.send_event("go", {})
        with pytest.raises(RunNotFound):
            await intruder.cancel()
        for operation in (intruder.pause, intruder.resume, intruder.terminate, intruder.restart):
            with pytest.raises(RunNotFound):
                await operation()
        assert await dp.list_runs(tenant=f"{tenant}-b") == []
        # The owner's run is untouched and still receives events.
        await handle.send_event("go", "mine")
        await handle.result()
        assert (await handle.status())["state"] == "completed"
    finally:
        if (await handle.status())["state"] != "completed":
            await handle.terminate()


# ---- status ------------------------------------------------------------------------------------


async def test_plan_hash_is_pinned(dp: Duraplan, tenant: str) -> None:
    plan = {"name": "hashed", "steps": [{"id": "a", "kind": "set", "value": 1}]}
    changed = {"name": "hashed", "steps": [{"id": "a", "kind": "set", "value": 2}]}
    one = await dp.submit_plan(plan, tenant=tenant, session="st")
    two = await dp.submit_plan(plan, tenant=tenant, session="st")
    three = await dp.submit_plan(changed, tenant=tenant, session="st")
    for h in (one, two, three):
        await h.result()
    h1, h2, h3 = [(await h.status())["plan_hash"] for h in (one, two, three)]
    assert h1.startswith("sha256:") and len(h1) == len("sha256:") + 64
    assert h1 == h2
    assert h3 != h1
    normalized = validate_plan(plan, tools=dp.registry).model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert h1 == plan_hash(normalized)


async def test_status_reports_per_step_state_attempts_timings_errors_and_previews(dp: Duraplan, tenant: str) -> None:
    long_text = "x" * 500
    plan = {
        "name": "status",
        "steps": [
            {"id": "short", "kind": "tool", "tool": "debug.echo", "args": {"value": "hi"}},
            {"id": "long", "kind": "tool", "tool": "debug.echo", "args": {"value": long_text}},
            {
                "id": "flaky",
                "kind": "tool",
                "tool": "debug.flaky",
                "args": {"fail_times": 1},
                "retry": {"max_attempts": 2, "initial_interval": "100ms"},
            },
            {"id": "broken", "kind": "tool", "tool": "debug.fail", "args": {"message": "bad"}, "on_error": "continue"},
            {
                "id": "gate",
                "kind": "wait_for_event",
                "event": "go",
                "timeout": "60s",
                "depends_on": ["short", "long", "flaky", "broken"],
            },
            {"id": "later", "kind": "set", "value": 1, "depends_on": ["gate"]},
        ],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="st", run_id="status-1")
    await wait_step_state(handle, "gate", "waiting")
    status = await handle.status()
    assert status["state"] == "waiting"
    assert status["run_id"] == "status-1"
    assert status["tenant"] == tenant
    assert status["session"] == "st"
    assert status["plan_name"] == "status"
    assert status["generation"] == 0
    steps = steps_by_id(status)
    assert [s["id"] for s in status["steps"]] == ["short", "long", "flaky", "broken", "gate", "later"]
    assert steps["short"]["output_preview"] == '{"value": "hi"}'
    assert len(steps["long"]["output_preview"]) == 200
    assert steps["long"]["output_preview"].endswith("…")
    assert steps["flaky"]["attempts"] == 2
    assert steps["flaky"]["state"] == "completed"
    assert steps["broken"]["state"] == "failed"
    assert steps["broken"]["error"] == {"type": "DebugFail", "message": "bad"}
    for sid in ("short", "long", "flaky", "broken"):
        assert ts(steps[sid]["started_at"]) <= ts(steps[sid]["ended_at"])
    assert steps["gate"]["state"] == "waiting"
    assert steps["gate"]["started_at"] is not None and steps["gate"]["ended_at"] is None
    assert steps["later"].model_dump(exclude_defaults=True) == {
        "id": "later",
        "kind": "set",
        "path": "later",
        "state": "pending",
    }
    await handle.send_event("go")
    await handle.result()
    final = await handle.status()
    assert final["state"] == "completed"
    assert final["closed_at"] is not None
    assert steps_by_id(final)["later"]["state"] == "completed"


async def test_runtime_expression_error_names_the_field(dp: Duraplan, tenant: str) -> None:
    plan = {"name": "bad-expr", "steps": [{"id": "n", "kind": "set", "value": {"len": "${length(input.x)}"}}]}
    handle = await dp.submit_plan(plan, tenant=tenant, session="expr", inputs={"x": 3})
    with pytest.raises(RunFailed, match=r"ExpressionError.*invalid type for value: 3.*\(in /value\)"):
        await handle.result()
