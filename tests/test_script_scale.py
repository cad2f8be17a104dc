"""A script with 10,000 host calls completes: its state crosses continue-as-new as one snapshot
and the newest call records, history stays within Temporal's limits, every call ran once."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from executor import Duraplan, Settings, running_worker
from executor.engine.script import SCRIPT_LOG_KEPT
from executor.service.devserver import DevServer

N = int(os.environ.get("DURAPLAN_SCRIPT_SCALE_N", "10000"))
CODE = """
last = None
for i in range(n):
    last = tool('kv.incr', key='calls')['value']
last
"""


@pytest.mark.timeout(900)
async def test_ten_thousand_host_calls(dev_server: DevServer, tmp_path: Path) -> None:
    plan = {
        "name": "script-scale",
        "steps": [{"id": "s", "kind": "script", "code": CODE, "inputs": {"n": N}}],
        "limits": {"max_steps": 20_000},
        "output": "${steps.s.output}",
    }
    settings = Settings(home=tmp_path, task_queue=f"script-scale-{uuid.uuid4().hex[:8]}")
    async with running_worker(dev_server.client, settings) as deps:
        handle = await Duraplan(dev_server.client, settings).submit_plan(plan, tenant="scale", session="s")
        assert await handle.result(timeout=800) == N
        status = await handle.status()
        assert await deps.store.kv_get("scale", "calls") == N, "no call ran twice, none was lost"
        desc = await dev_server.client.get_workflow_handle(handle.workflow_id).describe()
    assert status["continued_as_new"] >= 1, "a script this long must continue as new"
    assert status["executed_steps"] == N + 1
    step = status["steps"][0]
    assert step["detail"]["calls"] == N
    assert len(step["calls"]) == min(N, SCRIPT_LOG_KEPT)
    assert step["calls"][-1]["id"] == f"#{N - 1}"
    assert desc.raw_description.workflow_execution_info.history_length < 10_000
