"""A script that calls a tool, waits for an approval event, sleeps a day and calls a tool again,
on the time-skipping test server: the day passes in moments and the output is right."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from executor import Duraplan, Settings, running_worker

CODE = """
first = tool('kv.incr', key='visits')['value']
approval = wait_for_event('approval', timeout='2d')
sleep('1d')
slept_until = now()
second = tool('kv.incr', key='visits')['value']
{'first': first, 'approved': approval['approved'], 'second': second, 'slept_until': slept_until}
"""


async def test_tool_event_sleep_tool(time_skipping_env: WorkflowEnvironment, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, task_queue=f"ts-script-{uuid.uuid4().hex[:8]}", search_attributes=False)
    plan = {"name": "approve", "steps": [{"id": "s", "kind": "script", "code": CODE}], "output": "${steps.s.output}"}
    async with running_worker(time_skipping_env.client, settings) as deps:
        dp = Duraplan(time_skipping_env.client, settings, deps.registry)
        handle = await dp.submit_plan(plan, tenant="acme", session="s")
        for _ in range(400):  # the script reaches its wait: an observable state, not a guess
            calls = (await handle.status())["steps"][0].get("calls") or []
            if any(c["kind"] == "wait_for_event" and c["state"] == "waiting" for c in calls):
                assert (await handle.status())["state"] == "waiting", "the run shows it waits"
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the script never waited for its event")
        started = (await handle.status())["started_at"]
        await handle.send_event("approval", {"approved": True}, event_id="a-1")
        out = await handle.result()
        status = await handle.status()
    assert out["first"] == 1 and out["second"] == 2 and out["approved"] is True
    assert out["slept_until"][:10] > started[:10], "a day passed (skipped) between the event and the second call"
    kinds = [(c["kind"], c["state"]) for c in status["steps"][0]["calls"]]
    assert kinds == [
        ("tool", "completed"),
        ("wait_for_event", "completed"),
        ("sleep", "completed"),
        ("now", "completed"),
        ("tool", "completed"),
    ]
