"""The ``duraplan.start_run`` activity: workflows (a chat session's ``submit``) start runs through
the one start path (``executor.service.start``), so such runs meet every quota a direct submit does.

Refusals travel as the error's own ``ApplicationError`` (``executor.errors.to_failure``): the
caller's client turns them back into the same typed error a direct submit raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.client import Client

from executor.engine.contract import START_RUN
from executor.engine.models import StartRunRequest, StartRunResult
from executor.errors import DuraplanError, to_failure
from executor.service.config import Settings
from executor.service.start import load_context, start_run
from executor.service.tenants import TenantRegistry
from tools import ToolRegistry

__all__ = ["RunStarter"]


class RunStarter:
    def __init__(
        self, client: Client, settings: Settings, registry: ToolRegistry, tenants: TenantRegistry | None
    ) -> None:
        self.client = client
        self.settings = settings
        self.registry = registry
        self.tenants = tenants

    def all(self) -> list[Callable[..., Any]]:
        return [self.start]

    @activity.defn(name=START_RUN)
    async def start(self, request: StartRunRequest) -> StartRunResult:
        try:
            context = await load_context(self.tenants, request.tenant)
            started = await start_run(
                self.client,
                self.settings,
                self.registry,
                context,
                request.plan,
                session=request.session,
                inputs=request.inputs,
                run_id=request.run_id,
                task_queue=request.task_queue,
            )
        except DuraplanError as exc:
            # A refusal is an answer, as for a direct submit (a 429 included): the caller retries.
            raise to_failure(exc, final=True) from None
        return StartRunResult(started.run_id, started.created)
