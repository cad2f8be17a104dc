"""The ``duraplan.start_run`` activity: workflows (a chat session's ``submit``) start runs through
the one start path (``executor.service.start``), so such runs meet every quota a direct submit does.

Refusals travel as the error's own ``ApplicationError`` (``executor.errors.to_failure``): the
caller's client turns them back into the same typed error a direct submit raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from temporalio import activity
from temporalio.client import Client

from executor.engine.contract import START_RUN
from executor.engine.models import StartRunRequest, StartRunResult
from executor.errors import DuraplanError, to_failure
from executor.service.client import Duraplan
from executor.service.config import Settings
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
        self._clients: dict[str | None, Duraplan] = {}

    def all(self) -> list[Callable[..., Any]]:
        return [self.start]

    @activity.defn(name=START_RUN)
    async def start(self, request: StartRunRequest) -> StartRunResult:
        try:
            handle = await self._duraplan(request.task_queue).submit_plan(
                request.plan,
                tenant=request.tenant,
                session=request.session,
                inputs=request.inputs,
                run_id=request.run_id,
                tool_pins=request.tool_pins,
            )
        except DuraplanError as exc:
            # A refusal is an answer, as for a direct submit (a 429 included): the caller retries.
            raise to_failure(exc, final=True) from None
        return StartRunResult(handle.run_id, handle._started is not None)

    def _duraplan(self, task_queue: str | None) -> Duraplan:
        """The client side of the start path (``Duraplan.submit_plan`` -> ``start_run``), one per
        task queue runs go to: it keeps the tenants' tool sources between calls."""
        if task_queue not in self._clients:
            settings = self.settings if task_queue is None else replace(self.settings, task_queue=task_queue)
            self._clients[task_queue] = Duraplan(self.client, settings, self.registry, self.tenants)
        return self._clients[task_queue]
