"""One worker per test session on the shared dev server; tests submit plans through ``dp``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client

from executor import Duraplan, RunHandle, Settings, running_worker
from executor.worker import WorkerDeps
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
