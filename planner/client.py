"""Plan durably from a client: a chat about a plan (``ChatSession``), or goal-to-run (``submit_goal``).

A session is the ``PlanningSession`` workflow ``<tenant>/planning/<session>``: the first message
plans, later ones revise, ``submit`` runs the latest revision. Planning errors come back typed
(``planner.errors``); run errors as the executor's (``InputsInvalid``, ``RunConflict``...).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import ApplicationError

from executor.errors import DuraplanError, InputsInvalid, from_failure
from executor.service.client import NAME_PATTERN, Duraplan, RunHandle
from executor.service.config import SA_SESSION, SA_TENANT
from planner.errors import PlannerError
from planner.models import SessionInput, SubmitRequest
from planner.workflows import PlanningSession, session_workflow_id

__all__ = ["ChatSession", "Revision", "submit_goal"]


@dataclass(frozen=True)
class Revision:
    """One recorded revision of a session's plan."""

    revision: int
    plan: dict[str, Any]
    diff: str
    plan_hash: str
    message: str = ""
    model: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    runs: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Revision:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


def _name(kind: str, value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise InputsInvalid(kind, [f"{value!r} must match {NAME_PATTERN.pattern}"])
    return value


class ChatSession:
    """A conversation that plans, revises and runs. Options apply when the session workflow starts."""

    def __init__(
        self,
        dp: Duraplan,
        *,
        tenant: str,
        session: str,
        model: str | None = None,
        max_attempts: int = 3,
        budget_usd: float | None = None,
        catalog: list[dict[str, Any]] | None = None,
        run_task_queue: str | None = None,
        retry_initial_s: float = 1.0,
        retry_max_attempts: int = 6,
        idle_timeout_s: float = SessionInput.idle_timeout_s,
        empty_timeout_s: float = SessionInput.empty_timeout_s,
        history_limit: int | None = None,
    ) -> None:
        self.dp = dp
        self.tenant = _name("tenant", tenant)
        self.session = _name("session", session)
        self.workflow_id = session_workflow_id(tenant, session)
        self._input = SessionInput(
            tenant=tenant,
            session=session,
            model=model,
            # With tenancy, the model is shown (and may use) the tenant's granted tools only: read
            # in start(), off the event loop.
            catalog=catalog,
            local_tools=[n for n in dp.registry.names() if dp.registry.get(n).local],
            max_attempts=max_attempts,
            budget_usd=budget_usd,
            search_attributes=dp.settings.search_attributes,
            run_task_queue=run_task_queue,
            retry_initial_s=retry_initial_s,
            retry_max_attempts=retry_max_attempts,
            idle_timeout_s=idle_timeout_s,
            empty_timeout_s=empty_timeout_s,
            history_limit=history_limit,
        )
        self._started = False
        self._granted_catalog = catalog is None and dp.tenants is not None

    def __repr__(self) -> str:
        return f"ChatSession(tenant={self.tenant!r}, session={self.session!r})"

    @property
    def _handle(self) -> WorkflowHandle[Any, Any]:
        return self.dp.client.get_workflow_handle(self.workflow_id)  # the latest run of the chain

    async def start(self) -> ChatSession:
        """Start the session workflow, or join it if it is running (idempotent)."""
        if not self._started:
            if self._granted_catalog:  # source tools carry their schema hash: the run pins them
                self._input.catalog = await asyncio.to_thread(self.dp.catalog_for, self.tenant)
            attrs = [SearchAttributePair(SA_TENANT, self.tenant), SearchAttributePair(SA_SESSION, self.session)]
            await self.dp.client.start_workflow(
                PlanningSession.run,
                self._input,
                id=self.workflow_id,
                task_queue=self.dp.settings.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                search_attributes=TypedSearchAttributes(attrs) if self.dp.settings.search_attributes else None,
                task_timeout=timedelta(seconds=self.dp.settings.workflow_task_timeout),
            )
            self._started = True
        return self

    async def send(self, text: str) -> Revision:
        """Plan (first message) or revise: the new revision, with its diff against the previous one."""
        await self.start()
        result = await self._update(PlanningSession.message, text)
        return Revision.from_dict(result)

    async def revisions(self) -> list[Revision]:
        await self.start()
        rows: list[dict[str, Any]] = await self._handle.query(PlanningSession.revisions)
        return [Revision.from_dict(r) for r in rows]

    async def submit(self, inputs: Mapping[str, Any] | None = None, *, run_id: str | None = None) -> RunHandle:
        """Run the latest revision; the run's handle (the same ``run_id`` again: the same run)."""
        await self.start()
        if run_id is not None:
            _name("run_id", run_id)
        started: str = await self._update(PlanningSession.submit, SubmitRequest(dict(inputs or {}), run_id))
        return self.dp.get_run(started, tenant=self.tenant)

    async def close(self) -> int:
        """End the session; its runs go on. The number of revisions."""
        await self.start()
        count: int = await self._update(PlanningSession.close)
        return count

    async def _update(self, update: Any, *args: Any) -> Any:
        try:
            return await self._handle.execute_update(update, *args)
        except WorkflowUpdateFailedError as exc:
            raise _error(exc) from None


def _error(exc: WorkflowUpdateFailedError) -> DuraplanError:
    """The typed error of a refused update: a lookup by failure type (executor.errors.from_failure)."""
    error = from_failure(exc.cause)
    if error is not None:
        return error
    cause = exc.cause
    if isinstance(cause, ApplicationError):
        return PlannerError(cause.message)
    return PlannerError(f"planning session update failed: {cause or exc}")


async def submit_goal(
    goal: str,
    *,
    tenant: str,
    session: str,
    inputs: Mapping[str, Any] | None = None,
    duraplan: Duraplan | None = None,
    model: str | None = None,
    run_id: str | None = None,
    **options: Any,
) -> RunHandle:
    """Plan ``goal`` durably (session ``<tenant>/planning/<session>``), then run the plan.

    In a session that already has a plan, ``goal`` revises it. ``options`` are ``ChatSession``'s
    (``max_attempts``, ``budget_usd``, ``catalog``, ``run_task_queue``...). Connects with
    ``Settings.from_env()`` unless a ``Duraplan`` is given."""
    dp = duraplan or await Duraplan.connect()
    chat = ChatSession(dp, tenant=tenant, session=session, model=model, **options)
    await chat.send(goal)
    return await chat.submit(inputs, run_id=run_id)
