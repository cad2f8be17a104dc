"""Planner test fixtures: no real provider is ever called.

Model HTTP goes through httpx (litellm's aiohttp transport off) so respx intercepts it; the cost map
is the bundled one (tests/conftest.py sets LITELLM_LOCAL_MODEL_COST_MAP before litellm loads).
Durable tests share one planner worker (``PlanningSession`` + ``duraplan.plan``) and one run worker
(``DuraplanRun``), each on its own task queue; each test puts its model double into ``env.slot``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import litellm
import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.worker import Worker

from executor import Duraplan, Settings, running_worker
from executor.worker.runner import workflow_runner
from planner import worker_parts
from planner.provider import Completion
from tools import ToolRegistry, default_registry

litellm.disable_aiohttp_transport = True
litellm.suppress_debug_info = True


@pytest.fixture(scope="session")
def registry() -> ToolRegistry:
    return default_registry()


@pytest.fixture
def provider_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake keys: litellm sends them to respx, never to a provider."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-real")
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


class CompletionSlot:
    """The worker's ``completion``: the test's model double, or litellm itself (with respx) when empty."""

    def __init__(self) -> None:
        self.target: Completion | None = None

    async def __call__(self, **kwargs: Any) -> Any:
        return await (self.target or litellm.acompletion)(**kwargs)


@dataclass
class PlannerEnv:
    dp: Duraplan
    slot: CompletionSlot
    run_queue: str
    plan_queue: str
    address: str


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def planner_workers(
    client: Client, dev_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[PlannerEnv]:
    home = tmp_path_factory.mktemp("planner-home")
    suffix = uuid.uuid4().hex[:8]
    run_settings = Settings(home=home, task_queue=f"planner-runs-{suffix}")
    plan_settings = Settings(home=home, task_queue=f"planner-{suffix}")
    registry = default_registry()
    slot = CompletionSlot()
    workflows, activities = worker_parts(plan_settings, registry=registry, completion=slot)
    planner_worker = Worker(
        client,
        task_queue=plan_settings.task_queue,
        workflows=workflows,
        activities=activities,
        workflow_runner=workflow_runner(),
    )
    async with running_worker(client, run_settings, registry=registry), planner_worker:
        yield PlannerEnv(
            Duraplan(client, plan_settings, registry),
            slot,
            run_settings.task_queue,
            plan_settings.task_queue,
            dev_server.address,
        )


@pytest.fixture
def env(planner_workers: PlannerEnv) -> Iterator[PlannerEnv]:
    """The shared workers, with an empty model slot before and after each test."""
    planner_workers.slot.target = None
    yield planner_workers
    planner_workers.slot.target = None


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"
