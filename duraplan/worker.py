"""The product's worker: the executor's worker plus the planner's parts (planning sessions, replanning)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from temporalio.client import Client

from executor.service.config import Settings
from executor.worker.runner import WorkerDeps, WorkerParts
from executor.worker.runner import running_worker as _executor_worker
from planner.worker import worker_parts

__all__ = ["running_worker"]


@contextlib.asynccontextmanager
async def running_worker(
    client: Client, settings: Settings, *, parts: tuple[WorkerParts, ...] = (), **options: Any
) -> AsyncIterator[WorkerDeps]:
    """``executor.running_worker`` with the planner registered: what ``duraplan worker`` runs."""
    async with _executor_worker(client, settings, parts=(worker_parts, *parts), **options) as deps:
        yield deps
