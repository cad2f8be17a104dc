"""Script steps on a real dev server: host calls are durable steps (tool, now, random, parallel,
compensate, fail, events), each shown in status as a nested call of the script step."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from executor import Duraplan, RunFailed, Settings, running_worker
from executor.service.devserver import DevServer
from executor.worker.runner import WorkerDeps


@pytest_asyncio.fixture(loop_scope="session")
async def dp(dev_server: DevServer, tmp_path: Path) -> AsyncIterator[tuple[Duraplan, WorkerDeps]]:
    settings = Settings(home=tmp_path, task_queue=f"script-{uuid.uuid4().hex[:8]}")
    async with running_worker(dev_server.client, settings) as deps:
        yield Duraplan(dev_server.client, settings, deps.registry), deps


def _plan(code: str, **step: Any) -> dict[str, Any]:
    return {
        "name": "script",
        "steps": [{"id": "s", "kind": "script", "code": code, **step}],
        "output": "${steps.s.output}",
    }


async def test_tools_now_random_and_nested_status(dp: tuple[Duraplan, WorkerDeps]) -> None:
    duraplan, deps = dp
    code = (
        "tool('kv.put', key='greeting', value=f'hello {name}')\n"
        "got = tool('kv.get', key='greeting')['value']\n"
        "t = now()\n"
        "r = random()\n"
        "{'got': got, 'now_is_text': isinstance(t, str), 'r_ok': 0 <= r < 1}\n"
    )
    handle = await duraplan.submit_plan(
        _plan(code, inputs={"name": "${input.name}"}), tenant="acme", session="s", inputs={"name": "ann"}
    )
    out = await handle.result(timeout=60)
    assert out == {"got": "hello ann", "now_is_text": True, "r_ok": True}
    assert await deps.store.kv_get("acme", "greeting") == "hello ann"
    status = await handle.status()
    step = status["steps"][0]
    assert [(c["id"], c["name"], c["kind"], c["state"]) for c in step["calls"]] == [
        ("#0", "tool:kv.put", "tool", "completed"),
        ("#1", "tool:kv.get", "tool", "completed"),
        ("#2", "now", "now", "completed"),
        ("#3", "random", "random", "completed"),
    ]
    assert '"value": "hello ann"' in step["calls"][1]["output_preview"]
    assert "_snap" not in (step["detail"] or {}), "the snapshot stays out of status"
    assert status["executed_steps"] == 5  # the script step and its four host calls


async def test_parallel_sleeps_run_concurrently(dp: tuple[Duraplan, WorkerDeps]) -> None:
    duraplan, _ = dp
    code = "parallel([call('sleep', 1), call('sleep', 1), call('sleep', '1s'), call('sleep', 1)])\n'ok'"
    started = time.monotonic()
    handle = await duraplan.submit_plan(_plan(code), tenant="acme", session="s")
    assert await handle.result(timeout=60) == "ok"
    assert time.monotonic() - started < 2.0, "four 1 s sleeps in parallel take about 1 s"


async def test_tool_error_is_catchable_and_uncaught_fails_with_its_type(dp: tuple[Duraplan, WorkerDeps]) -> None:
    duraplan, _ = dp
    code = (
        "try:\n"
        "    tool('debug.fail', message='boom')\n"
        "    caught = None\n"
        "except Exception as e:\n"
        "    caught = str(e)\n"
        "caught\n"
    )
    handle = await duraplan.submit_plan(_plan(code, retry={"max_attempts": 1}), tenant="acme", session="s")
    caught = await handle.result(timeout=60)
    assert "boom" in caught


async def test_bad_host_calls_raise_in_the_script_not_in_the_workflow(dp: tuple[Duraplan, WorkerDeps]) -> None:
    """Computed arguments are checked when the call runs: the script sees an exception it can
    catch; nothing reaches the workflow as a task failure (which would hang the run)."""
    duraplan, _ = dp
    code = (
        "errors = []\n"
        "for bad in [lambda: sleep(10 ** 12), lambda: sleep(d), lambda: sleep_until('2999-01-01T00:00:00Z'),\n"
        "            lambda: parallel([1, 2]), lambda: compensate(three), lambda: tool(name, key='k')]:\n"
        "    try:\n"
        "        bad()\n"
        "    except Exception as e:\n"
        "        errors.append(type(e).__name__)\n"
        "got = tool('debug.echo', value={1, 2})\n"
        "[errors, got]\n"
    )
    plan = _plan(code, inputs={"d": "soon", "name": "no.such", "three": 3}, retry={"max_attempts": 1})
    handle = await duraplan.submit_plan(plan, tenant="acme", session="s")
    errors, got = await handle.result(timeout=60)
    assert errors == ["ValueError", "ValueError", "ValueError", "TypeError", "TypeError", "RuntimeError"]
    assert got == {"value": [1, 2]}, "a set argument arrives as a list"


async def test_a_nan_duration_raises_in_the_script_and_does_not_hang_the_run(dp: tuple[Duraplan, WorkerDeps]) -> None:
    """NaN passed every bound on a duration (``nan > limit`` is false) and broke ``timedelta`` in
    the workflow: every workflow task failed, the run stayed running for ever."""
    duraplan, _ = dp
    code = (
        "errors = []\n"
        "for bad in [lambda: sleep(float('nan')), lambda: wait_for_event('go', timeout=float('nan')),\n"
        "            lambda: sleep(10 ** 400), lambda: sleep(float('inf'))]:\n"
        "    try:\n"
        "        bad()\n"
        "    except ValueError as e:\n"
        "        errors.append(str(e))\n"
        "errors\n"
    )
    handle = await duraplan.submit_plan(_plan(code, retry={"max_attempts": 1}), tenant="acme", session="s")
    errors = await handle.result(timeout=60)
    assert len(errors) == 4 and "nan is not a finite number" in errors[0], errors
    assert "too long" in errors[2] and "inf is not a finite number" in errors[3], errors


async def test_step_budget_counts_host_calls(dp: tuple[Duraplan, WorkerDeps]) -> None:
    duraplan, _ = dp
    plan = _plan("while True:\n    now()\n")
    plan["limits"] = {"max_steps": 20}
    handle = await duraplan.submit_plan(plan, tenant="acme", session="s")
    with pytest.raises(RunFailed, match="exceeded limits"):
        await handle.result(timeout=60)


async def test_no_effect_beyond_the_step_budget(dp: tuple[Duraplan, WorkerDeps]) -> None:
    duraplan, deps = dp
    plan = _plan("for i in range(10):\n    tool('kv.incr', key='budget')\n")
    plan["limits"] = {"max_steps": 4}  # the script step and three calls
    handle = await duraplan.submit_plan(plan, tenant="acme", session="s")
    with pytest.raises(RunFailed, match="exceeded limits"):
        await handle.result(timeout=60)
    assert await deps.store.kv_get("acme", "budget") == 3, "the fourth call was refused before it ran"
