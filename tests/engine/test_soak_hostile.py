"""Soak (lean): every hostile plan of bench/hostile_corpus.py, all at once, plus an event flood:
every run ends in a final state within its limits, none stays `running` (issue 11)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bench.hostile_corpus import EVENT_PLAN, FINAL_STATES, HOSTILE_PLANS
from executor import Duraplan, RunFailed, RunHandle
from executor.errors import DuraplanError


async def _final(handle: RunHandle) -> str:
    with contextlib.suppress(RunFailed):
        await asyncio.wait_for(handle.result(), 60)
    state: str = (await handle.status())["state"]
    return state


async def _flood(handle: RunHandle) -> list[Any]:
    big = {"n": 0, "pad": "é" * (200 * 1024)}
    answers: list[Any] = []
    for i in range(12):  # far more bytes than the buffer holds, and more events than steps
        try:
            answers.append(await handle.send_event("go", {**big, "n": i}))
        except DuraplanError as exc:
            answers.append(type(exc).__name__)
    return answers


async def test_hostile_runs_all_end_in_a_final_state(dp: Duraplan, tenant: str) -> None:
    handles = {name: await dp.submit_plan(plan, tenant=tenant, session="soak") for name, plan in HOSTILE_PLANS.items()}
    waiting = await dp.submit_plan(EVENT_PLAN, tenant=tenant, session="soak")
    answers = await _flood(waiting)
    states = dict(zip(handles, await asyncio.gather(*(_final(h) for h in handles.values())), strict=True))
    assert all(s in FINAL_STATES for s in states.values()), states
    assert states == dict.fromkeys(HOSTILE_PLANS, "failed"), states
    assert answers[0]["accepted"] is True and "RunStateError" in answers, answers
    assert await asyncio.wait_for(waiting.result(), 60) == 0
