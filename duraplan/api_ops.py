"""Operator endpoints of the HTTP API: the tenant's usage and bulk operations on its runs.

Both are scoped to the tenant of the request's API key: there is no tenant parameter to forge.
"""

# No `from __future__ import annotations`: FastAPI must see the tenant dependency passed in as an
# evaluated annotation, not as the name of a local variable it cannot resolve.
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field

from duraplan.api_models import NAME_REGEX
from executor.service.bulk import BulkResult
from executor.service.client import Duraplan
from executor.service.usage import UsageReport

__all__ = ["BulkRequest", "add_ops_routes"]

DAY_REGEX = r"^\d{4}-\d{2}-\d{2}$"


class BulkRequest(BaseModel):
    model_config = {"extra": "forbid"}

    action: Literal["cancel", "terminate", "pause", "resume"]
    session: str | None = Field(default=None, pattern=NAME_REGEX, description="only runs of this agent session")
    plan_hash: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$", description="only runs of this plan")
    state: Literal["running", "paused"] | None = Field(
        default=None, description="running: every open run (the default); paused: paused runs only"
    )
    dry_run: bool = Field(default=False, description="only count the runs the operation would reach")


def add_ops_routes(app: FastAPI, dp: Duraplan, tenant_dep: Any, responses: Any) -> None:
    """``tenant_dep``: the API's authenticated-tenant dependency; ``responses``: its problem docs builder."""

    @app.get("/v1/usage", response_model=UsageReport, tags=["usage"], responses=responses(422))
    async def usage(
        tenant: tenant_dep,
        day: Annotated[str | None, Query(pattern=DAY_REGEX, description="one UTC day (default: today)")] = None,
        first: Annotated[str | None, Query(alias="from", pattern=DAY_REGEX, description="first UTC day")] = None,
        last: Annotated[
            str | None, Query(alias="to", pattern=DAY_REGEX, description="last UTC day (inclusive)")
        ] = None,
    ) -> UsageReport:
        """The tenant's usage per UTC day: steps by kind (a retried step counts once), attempts,
        activity and code CPU seconds, LLM tokens and cost, runs started / completed / failed."""
        return await dp.usage(tenant=tenant.tenant_id, day=day, first=first, last=last)

    @app.post("/v1/runs:bulk", response_model=BulkResult, tags=["runs"], responses=responses(422))
    async def bulk(tenant: tenant_dep, body: BulkRequest) -> BulkResult:
        """Cancel, terminate, pause or resume every open run of the tenant matching the filter;
        ``dry_run`` returns the count first. Runs of other tenants are never matched."""
        return await dp.bulk(
            body.action,
            tenant=tenant.tenant_id,
            session=body.session,
            plan_hash=body.plan_hash,
            state=body.state,
            dry_run=body.dry_run,
        )
