"""A 10,000-step plan completes through continue-as-new, with every step executed exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from executor import Duraplan, Settings, running_worker
from executor.service.devserver import DevServer

N = 10_000


@pytest.mark.timeout(900)
async def test_ten_thousand_steps_continue_as_new(dev_server: DevServer, tmp_path: Path) -> None:
    plan = {
        "name": "ten-thousand",
        "steps": [
            {"id": "nums", "kind": "code", "code": "list(range(n))", "inputs": {"n": N}},
            {
                "id": "each",
                "kind": "foreach",
                "items": "${steps.nums.output}",
                "max_concurrency": 20,
                "steps": [
                    {
                        "id": "double",
                        "kind": "tool",
                        "tool": "transform",
                        "args": {"data": "${item}", "expression": "@"},
                    }
                ],
            },
            {"id": "total", "kind": "code", "code": "(len(xs), sum(xs))", "inputs": {"xs": "${steps.each.output}"}},
        ],
        "limits": {"max_parallel": 50, "max_steps": 20_000},
        "output": "${steps.total.output}",
    }
    settings = Settings(home=tmp_path, task_queue=f"scale-{uuid.uuid4().hex[:8]}")
    async with running_worker(dev_server.client, settings):
        handle = await Duraplan(dev_server.client, settings).submit_plan(plan, tenant="scale", session="s")
        assert await handle.result(timeout=600) == [N, N * (N - 1) // 2]
        status = await handle.status()
    assert status["continued_as_new"] >= 1, "a run this long must continue as new"
    # nums + 10,000 items + total: nothing ran twice across continue-as-new.
    assert status["executed_steps"] == N + 2
    each = next(s for s in status["steps"] if s["id"] == "each")
    assert each["progress"] == {"done": N, "total": N, "counts": {"completed": N}}
