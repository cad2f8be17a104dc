"""Planning sessions replay: one recorded before ``submit`` went through the start path (it started
a child workflow) and one recorded after (the ``duraplan.start_run`` activity), both against the
current ``PlanningSession``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from executor.worker.runner import workflow_runner
from planner.workflows import PlanningSession

HISTORIES = sorted(Path(__file__).with_name("histories").glob("*.json"))


def test_both_versions_are_committed() -> None:
    assert {p.stem for p in HISTORIES} == {"chat_submit_child_workflow", "chat_submit_start_path"}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_planning_session_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=[PlanningSession], workflow_runner=workflow_runner("planner"))
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"
