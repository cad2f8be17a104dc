"""Determinism: committed histories replay against the current interpreter, and plans complete on
a worker that replays every workflow task from the start (``max_cached_workflows=0``)."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from executor import Duraplan, RunFailed, Settings, running_worker
from executor.engine.contract import WORKFLOW_NAME
from executor.engine.metering import METER_MEMO
from executor.engine.models import RunInput, plan_hash
from executor.engine.workflow import PlanWorkflow
from executor.lang.loader import load_plan
from executor.service.devserver import DevServer
from executor.worker.runner import workflow_runner

sys.path.insert(0, str(Path(__file__).parent))
from replay_plans import PLANS

HISTORIES = sorted(Path(__file__).with_name("histories").glob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_committed_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(f"{path.stem}", json.loads(path.read_text()))
    replayer = Replayer(workflows=[PlanWorkflow], workflow_runner=workflow_runner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"


def test_every_plan_has_a_committed_history() -> None:
    assert {p.stem for p in HISTORIES} == set(PLANS), "run `python tests/replay_plans.py` to record"


async def test_plans_complete_with_every_task_replayed(dev_server: DevServer, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, task_queue=f"replay-{uuid.uuid4().hex[:8]}")
    async with running_worker(dev_server.client, settings, max_cached_workflows=0):
        dp = Duraplan(dev_server.client, settings)
        plan, inputs, _ = PLANS["dag_foreach_switch"]
        handle = await dp.submit_plan(plan, tenant="replay", session="s", inputs=inputs)
        assert await handle.result() == {"loop": [0, 1, 4, 9], "route": "big"}
        plan, inputs, events = PLANS["events_sleep_compensation"]
        handle = await dp.submit_plan(plan, tenant="replay", session="s", inputs=inputs)
        for event_type, payload in events:
            await handle.send_event(event_type, payload)
        with pytest.raises(RunFailed, match="denied by ann"):
            await handle.result()
        status = await handle.status()
        assert {s["id"]: s["state"] for s in status["steps"]} == {
            "hold": "compensated",
            "nap": "completed",
            "approval": "completed",
            "deny": "failed",
        }


async def test_script_completes_with_every_task_replayed(dev_server: DevServer, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, task_queue=f"replay-{uuid.uuid4().hex[:8]}")
    async with running_worker(dev_server.client, settings, max_cached_workflows=0) as deps:
        plan, _, events = PLANS["script_host_calls"]
        handle = await Duraplan(dev_server.client, settings).submit_plan(plan, tenant="replay", session="s")
        for event_type, payload in events:
            await handle.send_event(event_type, payload)
        with pytest.raises(RunFailed, match="denied by ann"):
            await handle.result()
        status = await handle.status()
        assert await deps.store.kv_get("replay", "hold") is None, "the script's compensation ran"
    kinds = [c["kind"] for c in status["steps"][0]["calls"]]
    assert kinds == ["tool", "compensate", "now", "random", "parallel", "wait_for_event", "fail"]
    assert status["error"]["type"] == "Denied"


def _markers(history: WorkflowHistory) -> list[str]:
    return [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
    ]


def _upserts(history: WorkflowHistory) -> int:
    return sum(e.HasField("upsert_workflow_search_attributes_event_attributes") for e in history.events)


def _memo_upserts(history: WorkflowHistory) -> list[set[str]]:
    """The memo keys each WorkflowPropertiesModified event sets."""
    return [
        set(e.workflow_properties_modified_event_attributes.upserted_memo.fields)
        for e in history.events
        if e.HasField("workflow_properties_modified_event_attributes")
    ]


ECHO = {
    "name": "echo",
    "steps": [{"id": "e", "kind": "tool", "tool": "debug.echo", "args": {"value": 1}, "execution": "local"}],
    "output": "${steps.e.output}",
}


# A tool step and a step the workflow interprets itself (a `set`): its end has counts to record.
ECHO_SET = {
    "name": "echo-set",
    "steps": [*ECHO["steps"], {"id": "s", "kind": "set", "value": "${steps.e.output}", "depends_on": ["e"]}],
    "output": "${steps.s.output}",
}


@pytest.mark.parametrize(
    ("metering", "plan"),
    [(True, ECHO_SET), (False, ECHO_SET), (True, ECHO)],
    ids=["metered", "unmetered", "metered-tools-only"],
)
async def test_new_runs_record_no_patch_markers(
    dev_server: DevServer, tmp_path: Path, metering: bool, plan: dict[str, Any]
) -> None:
    """A run started now takes every engine change as given: no patch marker and no
    TemporalChangeVersion upsert in its history; its end recorded in the memo (no local activity),
    only when metered, and only when it has workflow-step counts to record (engine 3: a run of
    tool steps only ends with no upsert, its outcome is its close status)."""
    settings = Settings(home=tmp_path, task_queue=f"engine-{uuid.uuid4().hex[:8]}", metering=metering)
    async with running_worker(dev_server.client, settings, max_cached_workflows=0):
        handle = await Duraplan(dev_server.client, settings).submit_plan(plan, tenant="replay", session="s")
        assert await handle.result() == {"value": 1}
        history = await dev_server.client.get_workflow_handle(f"replay/{handle.run_id}").fetch_history()
    assert _markers(history) == ["core_local_activity"], "the tool step's local activity, no duraplan.meter_run"
    upserted = metering and plan is ECHO_SET
    assert _memo_upserts(history) == ([{METER_MEMO}] if upserted else [])
    assert _upserts(history) == 0
    kinds = [e.event_type for e in history.events]
    if upserted:  # the upsert rides the final workflow task: right before the completion command
        assert kinds[-2:] == [
            EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        ]
    else:
        assert EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED not in kinds
    replayer = Replayer(workflows=[PlanWorkflow], workflow_runner=workflow_runner())
    assert (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure is None


async def test_runs_started_before_engine_versions_still_patch(dev_server: DevServer, tmp_path: Path) -> None:
    """A run whose input has no engine version (started by an older client, or continued from an
    older run) asks ``workflow.patched`` where it always did, so the markers are there."""
    settings = Settings(home=tmp_path, task_queue=f"engine-{uuid.uuid4().hex[:8]}")
    body = load_plan(ECHO)
    arg = RunInput(
        plan=body, plan_hash=plan_hash(body), tenant="replay", session="s", run_id=f"old-{uuid.uuid4().hex[:8]}"
    )
    assert arg.engine == 0
    async with running_worker(dev_server.client, settings, max_cached_workflows=0):
        handle = await dev_server.client.start_workflow(
            WORKFLOW_NAME, arg, id=f"replay/{arg.run_id}", task_queue=settings.task_queue, search_attributes=None
        )
        assert await handle.result() == {"value": 1}
        history = await handle.fetch_history()
    assert "core_patch" in _markers(history)


async def test_engine_1_runs_still_meter_with_the_local_activity(dev_server: DevServer, tmp_path: Path) -> None:
    """A run started at engine version 1 (before its end went to the memo) keeps the run-end local
    activity, on a worker of today, and replays."""
    settings = Settings(home=tmp_path, task_queue=f"engine-{uuid.uuid4().hex[:8]}")
    body = load_plan(ECHO)
    arg = RunInput(
        plan=body,
        plan_hash=plan_hash(body),
        tenant="replay",
        session="s",
        run_id=f"v1-{uuid.uuid4().hex[:8]}",
        search_attributes=False,
        engine=1,
    )
    async with running_worker(dev_server.client, settings, max_cached_workflows=0):
        handle = await dev_server.client.start_workflow(
            WORKFLOW_NAME, arg, id=f"replay/{arg.run_id}", task_queue=settings.task_queue
        )
        assert await handle.result() == {"value": 1}
        history = await handle.fetch_history()
        report = await Duraplan(dev_server.client, settings).usage(tenant="replay")
    assert _markers(history) == ["core_local_activity"] * 2, "the tool step's, then duraplan.meter_run"
    assert _memo_upserts(history) == []
    assert report.total.runs_completed == 1, "the activity wrote the run's end, the reconciler nothing more"
    replayer = Replayer(workflows=[PlanWorkflow], workflow_runner=workflow_runner())
    assert (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure is None
