"""Durable replanning: a failed run is revised by the planner and finishes without re-running
what already completed (counted through a side-effecting tool)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from duraplan.worker import running_worker
from executor import Duraplan, RunFailed, Settings
from executor.service.devserver import DevServer
from planner.testing import ScriptedModel


def _plan(second: dict[str, Any], max_revisions: int = 2) -> dict[str, Any]:
    return {
        "name": "charge-and-ship",
        "description": "Charge the customer once, then ship.",
        "replan": {"max_revisions": max_revisions},
        "steps": [
            {"id": "charge", "kind": "tool", "tool": "kv.incr", "args": {"key": "charges"}},
            {**second, "id": "ship", "depends_on": ["charge"]},
        ],
        "output": {"charged": "${steps.charge.output.value}", "shipped": "${steps.ship.output}"},
    }


BROKEN = {"kind": "tool", "tool": "debug.fail", "args": {"message": "carrier down"}}
FIXED = {"kind": "tool", "tool": "debug.echo", "args": {"value": "shipped by the other carrier"}}


async def test_replanned_run_reuses_completed_steps(dev_server: DevServer, tmp_path: Path) -> None:
    model = ScriptedModel(_plan(FIXED))
    settings = Settings(home=tmp_path, task_queue=f"replan-{uuid.uuid4().hex[:8]}", default_model="openai/scripted")
    async with running_worker(dev_server.client, settings, completion=model) as deps:
        handle = await Duraplan(dev_server.client, settings).submit_plan(_plan(BROKEN), tenant="shop", session="s")
        result = await handle.result()
        status = await handle.status()
        assert result == {"charged": 1, "shipped": {"value": "shipped by the other carrier"}}
        assert await deps.store.kv_get("shop", "charges") == 1, "the completed charge step never ran again"
    assert model.remaining == 0 and len(model.calls) == 1
    request = model.calls[0].last_user_message
    assert "carrier down" in request and "charges" in request
    assert [r["revision"] for r in status["revisions"]] == [1, 2]
    assert "carrier down" in status["revisions"][1]["reason"]
    assert status["plan_hash"] == status["revisions"][1]["plan_hash"] != status["revisions"][0]["plan_hash"]
    states = {s["id"]: (s["state"], s["attempts"]) for s in status["steps"]}
    assert states == {"charge": ("completed", 1), "ship": ("completed", 1)}


async def test_replanning_is_bounded(dev_server: DevServer, tmp_path: Path) -> None:
    model = ScriptedModel(_plan(BROKEN, max_revisions=1))  # the revision fails again
    settings = Settings(home=tmp_path, task_queue=f"replan-{uuid.uuid4().hex[:8]}", default_model="openai/scripted")
    async with running_worker(dev_server.client, settings, completion=model) as deps:
        handle = await Duraplan(dev_server.client, settings).submit_plan(
            _plan(BROKEN, max_revisions=1), tenant="shop", session="s"
        )
        with pytest.raises(RunFailed, match="carrier down"):
            await handle.result()
        status = await handle.status()
        assert await deps.store.kv_get("shop", "charges") == 1
    assert model.remaining == 0 and len(model.calls) == 1, "one revision allowed, one asked for"
    assert len(status["revisions"]) == 2
