"""A stream of local activities (a big foreach of local tools) is cut into workflow tasks of at most
``LOCAL_PER_TASK``: from engine version 2 by one empty regular activity per cut (``TASK_CUT``),
before it by sending every further step of the task to a regular activity. Both on a worker that
replays every task."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from executor import Settings, running_worker
from executor.engine.contract import TASK_CUT, WORKFLOW_NAME
from executor.engine.models import RunInput, plan_hash
from executor.engine.steps import LOCAL_PER_TASK, TASK_CUT_ENGINE
from executor.engine.workflow import PlanWorkflow
from executor.lang.loader import load_plan
from executor.service.devserver import DevServer
from executor.worker.runner import workflow_runner

N = LOCAL_PER_TASK * 2 + 50


def _foreach(args: dict[str, Any], *, concurrency: int = 20, **step: Any) -> dict[str, Any]:
    """A plan: one local ``debug.echo`` step with ``args`` per item of ``input.items``."""
    echo = {"id": "echo", "kind": "tool", "tool": "debug.echo", "args": args, "execution": "local", **step}
    return {
        "name": "many-local",
        "steps": [
            {
                "id": "each",
                "kind": "foreach",
                "items": "${input.items}",
                "max_concurrency": concurrency,
                "steps": [echo],
                "output": "${steps.echo.output}",
            }
        ],
        "output": "${steps.each.output}",
    }


async def _run(
    dev_server: DevServer, tmp_path: Path, plan: dict[str, Any], items: list[Any], engine: int, **worker: Any
) -> tuple[Any, WorkflowHistory]:
    """Run ``plan`` over ``items`` as a run started at ``engine`` (unmetered): its result and history,
    which must replay."""
    settings = Settings(home=tmp_path, task_queue=f"cut-{uuid.uuid4().hex[:8]}", metering=False)
    body = load_plan(plan)
    arg = RunInput(
        plan=body,
        plan_hash=plan_hash(body),
        tenant="cut",
        session="s",
        run_id=f"cut-{uuid.uuid4().hex[:8]}",
        inputs={"items": items},
        engine=engine,
        metered=False,
    )
    async with running_worker(dev_server.client, settings, **worker):
        handle = await dev_server.client.start_workflow(
            WORKFLOW_NAME, arg, id=f"cut/{arg.run_id}", task_queue=settings.task_queue, search_attributes=None
        )
        result = await asyncio.wait_for(handle.result(), timeout=60)
        history = await handle.fetch_history()
    replayer = Replayer(workflows=[PlanWorkflow], workflow_runner=workflow_runner())
    assert (await replayer.replay_workflow(history, raise_on_replay_failure=False)).replay_failure is None
    return result, history


def _count(history: WorkflowHistory, kind: int) -> int:
    return sum(e.event_type == kind for e in history.events)


def _most_markers_per_task(history: WorkflowHistory) -> int:
    """The most local-activity markers one workflow task completion recorded."""
    most = current = 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            current = 0
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            current += 1
            most = max(most, current)
    return most


@pytest.mark.parametrize("engine", [TASK_CUT_ENGINE - 1, TASK_CUT_ENGINE])
async def test_a_task_full_of_local_activities_is_cut(dev_server: DevServer, tmp_path: Path, engine: int) -> None:
    plan = _foreach({"value": "${item}"})
    result, history = await _run(dev_server, tmp_path, plan, list(range(N)), engine, max_cached_workflows=0)
    assert result == [{"value": i} for i in range(N)]
    assert _most_markers_per_task(history) <= LOCAL_PER_TASK
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    local = _count(history, EventType.EVENT_TYPE_MARKER_RECORDED)
    if engine >= TASK_CUT_ENGINE:
        # every step a local activity; each cut one empty activity whose completion started the next task
        assert local == N
        assert set(scheduled) == {TASK_CUT} and 1 <= len(scheduled) <= N // LOCAL_PER_TASK, scheduled
    else:
        assert TASK_CUT not in scheduled and local + len(scheduled) == N
        assert len(scheduled) > N // LOCAL_PER_TASK, "older runs send every step past the cut to regular activities"


async def test_a_cut_whose_step_fails_before_scheduling_hands_over(dev_server: DevServer, tmp_path: Path) -> None:
    """Steps past a full task fail before anything is scheduled (their arguments do not render) and
    the plan goes on (on_error: continue): the run still ends (a step picked to end the task once
    waited for ever here)."""
    items: list[dict[str, int]] = [{"x": i} for i in range(LOCAL_PER_TASK)] + [{} for _ in range(30)]
    plan = _foreach({"value": "${abs(item.x)}"}, concurrency=10, on_error="continue")
    result, _ = await _run(dev_server, tmp_path, plan, items, TASK_CUT_ENGINE)
    assert result[:LOCAL_PER_TASK] == [{"value": i} for i in range(LOCAL_PER_TASK)]
    assert result[LOCAL_PER_TASK:] == [None] * 30
