"""Multi-day plans under the time-skipping test server: a day's sleep and a 3-day wait in seconds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from executor import Duraplan, Settings, running_worker
from executor.worker.runner import WorkerDeps

ONBOARDING = Path(__file__).resolve().parents[1] / "examples" / "onboarding.yaml"


@pytest_asyncio.fixture(loop_scope="session")
async def skipping(
    time_skipping_env: WorkflowEnvironment, tmp_path: Path
) -> AsyncIterator[tuple[Duraplan, WorkerDeps]]:
    # The test server has no custom search attributes.
    settings = Settings(home=tmp_path, task_queue=f"ts-{uuid.uuid4().hex[:8]}", search_attributes=False)
    async with running_worker(time_skipping_env.client, settings) as deps:
        yield Duraplan(time_skipping_env.client, settings, deps.registry), deps


async def test_days_of_waiting_then_nudge(skipping: tuple[Duraplan, WorkerDeps]) -> None:
    dp, deps = skipping
    handle = await dp.submit_plan(ONBOARDING, tenant="acme", session="s", inputs={"email": "ann@example.com"})
    assert await handle.result() == {"activated": False, "follow_up": "email"}
    status = await handle.status()
    states = {s["id"]: s["state"] for s in status["steps"]}
    assert states == {
        "welcome": "completed",
        "wait_a_day": "completed",
        "activated": "completed",
        "follow_up": "completed",
    }
    messages = [m["message"] for m in await deps.store.outbox_list("acme", channel="email")]
    assert messages == ["Welcome aboard, ann@example.com!", "Need a hand getting started, ann@example.com?"]


async def test_event_sent_during_the_sleep_is_kept(skipping: tuple[Duraplan, WorkerDeps]) -> None:
    dp, deps = skipping
    handle = await dp.submit_plan(ONBOARDING, tenant="beta", session="s", inputs={"email": "bo@example.com"})
    # Sent while the run sleeps for a day, before its wait starts: kept until the wait takes it.
    await handle.send_event("activated", {"plan": "pro"}, event_id="act-1")
    assert await handle.result() == {"activated": True, "follow_up": "email"}
    messages = [m["message"] for m in await deps.store.outbox_list("beta", channel="email")]
    assert messages[-1] == "Thanks for activating the pro plan!"
