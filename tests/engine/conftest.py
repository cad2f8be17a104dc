"""One worker per test session on the shared dev server; tests submit plans through ``dp``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client

from executor import Duraplan, RunFailed, RunHandle, Settings, running_worker
from executor.worker.runner import WorkerDeps
from tools import default_registry


@pytest_asyncio.fixture(scope="session")
async def worker_deps(client: Client, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[WorkerDeps]:
    home = tmp_path_factory.mktemp("duraplan-home")
    settings = Settings(home=home, task_queue=f"tests-{uuid.uuid4().hex[:8]}")
    registry = default_registry()
    async with running_worker(client, settings, registry=registry) as deps:
        yield deps


@pytest.fixture(scope="session")
def dp(client: Client, worker_deps: WorkerDeps) -> Duraplan:
    return Duraplan(client, worker_deps.settings, worker_deps.registry)


@pytest.fixture
def tenant() -> str:
    """A fresh tenant per test, so listings and key-value data never mix between tests."""
    return f"t-{uuid.uuid4().hex[:10]}"


async def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll an async or sync predicate until it returns something truthy (an observable state)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def step_state(handle: RunHandle, step_id: str) -> str:
    status = await handle.status()
    return next(s["state"] for s in status["steps"] if s["id"] == step_id)


# ---- helpers added for the engine suite ---------------------------------------------------------


def ts(value: str) -> datetime:
    """A workflow timestamp (ISO-8601, as status() reports it) as a datetime."""
    return datetime.fromisoformat(value)


def steps_by_id(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """status()["steps"] keyed by step id."""
    return {s["id"]: s for s in status["steps"]}


async def step_records(handle: RunHandle) -> dict[str, dict[str, Any]]:
    """Every step record by path, nested steps included (the workflow's ``step_records`` query)."""
    records: dict[str, dict[str, Any]] = await handle._handle.query("step_records")
    return records


async def run_failure(handle: RunHandle, timeout: float = 30.0) -> RunFailed:
    """The ``RunFailed`` that ``result()`` raises; fails the test if the run completes instead."""
    try:
        value = await asyncio.wait_for(handle.result(), timeout)
    except RunFailed as exc:
        return exc
    raise AssertionError(f"run {handle.run_id} completed with {value!r}; expected it to fail")


async def wait_step_state(handle: RunHandle, step_id: str, *states: str, timeout: float = 20.0) -> None:
    """Wait until a top-level step is in one of ``states``."""

    async def check() -> bool:
        return await step_state(handle, step_id) in states

    await wait_for(check, timeout=timeout)


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """Most intervals [start, end) open at once; an end and a start at the same instant don't overlap."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    best = now = 0
    for _, delta in points:
        now += delta
        best = max(best, now)
    return best
