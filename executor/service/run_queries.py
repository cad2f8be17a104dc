"""What reading a run and sending it an event mean, apart from how Temporal is reached.

Two transports read runs: the Temporal SDK (``executor.service.client``) and Temporal's HTTP API
(``executor.service.http_runs``, which the CLI uses to start without importing the SDK). Both build
their listing query, run summaries, status and event checks here, so they cannot drift apart.
Nothing here imports the Temporal SDK.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from executor.engine.limits import json_size
from executor.engine.names import (
    ATTR_PLAN_HASH,
    ATTR_PLAN_NAME,
    ATTR_SESSION,
    ATTR_STATUS,
    ATTR_TENANT,
    WORKFLOW_NAME,
)
from executor.engine.run_status import RUN_STATES, RunState, RunStatus, RunSummary, parent_of
from executor.errors import InputsInvalid
from executor.lang.depth import LONE_SURROGATE, json_problem
from executor.service.names import check_depth, check_name

if TYPE_CHECKING:
    from executor.service.tenants import TenantRegistry

__all__ = [
    "CLOSED_FILTER",
    "CLOSED_STATES",
    "MAX_EVENT_BYTES",
    "MAX_EVENT_NAME_CHARS",
    "VERIFY_BATCH",
    "check_event",
    "current_runs_query",
    "describe_only_status",
    "list_query",
    "run_summary",
    "status_clause",
]

MAX_EVENT_BYTES = 1024 * 1024  # the reference product's event payload limit
# An event's type and id, in characters (the HTTP API's own limit): an id is kept in history and
# in every continued run's carry (the last 10,000), outside the payload's byte quota.
MAX_EVENT_NAME_CHARS = 200
# Temporal's execution status (its enum member name) of a closed run -> the run's state.
CLOSED_STATES: dict[str, RunState] = {
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CANCELED": "cancelled",
    "TERMINATED": "terminated",
    "TIMED_OUT": "failed",
}
# Closed runs are listed by Temporal's own execution status (always true, terminate included);
# open ones by DuraplanStatus, which the workflow keeps equal to its open state once it leaves
# `running` (a run starts without it: unset means running).
CLOSED_FILTER = {
    "completed": "ExecutionStatus = 'Completed'",
    "failed": "(ExecutionStatus = 'Failed' OR ExecutionStatus = 'TimedOut')",
    "cancelled": "ExecutionStatus = 'Canceled'",
    "terminated": "ExecutionStatus = 'Terminated'",
}
VERIFY_BATCH = 100  # listed runs checked at once for being their run id's current generation


def status_clause(status: str) -> str:
    if status not in RUN_STATES:
        raise InputsInvalid("status filter", [f"{status!r} is not one of {', '.join(RUN_STATES)}"])
    if status in CLOSED_FILTER:
        return CLOSED_FILTER[status]
    if status == "running":  # a run starts without DuraplanStatus: unset means running
        return f"ExecutionStatus = 'Running' AND ({ATTR_STATUS} = 'running' OR {ATTR_STATUS} IS NULL)"
    return f"ExecutionStatus = 'Running' AND {ATTR_STATUS} = '{status}'"


def list_query(tenant: str, session: str | None, status: str | None) -> str:
    """The visibility query of one tenant's runs (every generation but continued ones)."""
    clauses = [
        f"{ATTR_TENANT} = {json.dumps(check_name('tenant', tenant))}",
        f"WorkflowType = '{WORKFLOW_NAME}'",
        "ExecutionStatus != 'ContinuedAsNew'",
    ]
    if session is not None:
        clauses.append(f"{ATTR_SESSION} = {json.dumps(check_name('session', session))}")
    if status is not None:
        clauses.append(status_clause(status))
    return " AND ".join(clauses)


def current_runs_query(workflow_ids: list[str]) -> str:
    """The newest execution of each workflow id: its current generation."""
    ids = ", ".join(json.dumps(i) for i in workflow_ids)
    return f"WorkflowId IN ({ids}) AND ExecutionStatus != 'ContinuedAsNew'"


def run_summary(
    workflow_id: str,
    status: str | None,
    attributes: dict[str, Any],
    memo_generation: Any,
    started_at: str,
    closed_at: str | None,
) -> RunSummary:
    """One listing row. ``status``: Temporal's execution status name (``RUNNING``, ``COMPLETED``...);
    ``attributes``: search attribute name -> value; ``memo_generation``: the memo's ``generation``."""
    run_id = workflow_id.split("/", 1)[1] if "/" in workflow_id else workflow_id
    state: str = CLOSED_STATES.get(status or "", "running")
    if state == "running":
        state = _keyword(attributes.get(ATTR_STATUS)) or "running"
    return RunSummary(
        run_id=run_id,
        tenant=_keyword(attributes.get(ATTR_TENANT)),
        session=_keyword(attributes.get(ATTR_SESSION)),
        plan_name=_keyword(attributes.get(ATTR_PLAN_NAME)),
        plan_hash=_keyword(attributes.get(ATTR_PLAN_HASH)),
        state=state if state in RUN_STATES else "running",  # type: ignore[arg-type]
        generation=int(memo_generation or 0) if "~" not in run_id else int(run_id.rsplit("~", 1)[1]),
        parent_run_id=parent_of(run_id),
        started_at=started_at,
        closed_at=closed_at,
    )


def _keyword(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def describe_only_status(run_id: str, tenant: str, attributes: dict[str, Any]) -> RunStatus:
    """A run's status when no worker answers its ``status`` query: what describe alone tells."""
    return RunStatus(
        run_id=run_id,
        tenant=tenant,
        session=_keyword(attributes.get(ATTR_SESSION)),
        plan_hash=_keyword(attributes.get(ATTR_PLAN_HASH)),
        plan_name=_keyword(attributes.get(ATTR_PLAN_NAME)),
        state="running",
        parent_run_id=parent_of(run_id),
    )


def check_event(
    type: str, payload: Any, tenant: str, tenants: TenantRegistry | None, event_id: str | None = None
) -> None:
    """Refuse an event whose type or id is empty or too long, or whose payload is too deep or too
    large (the tenant's ``max_event_bytes`` under tenancy, else ``MAX_EVENT_BYTES``) before it
    reaches Temporal. Reads the registry: call it off the event loop."""
    names = (("type", type), ("event_id", event_id))
    problems = [
        f"{field}: must be 1 to {MAX_EVENT_NAME_CHARS} characters, not {len(value)}"
        for field, value in names
        if value is not None and not 0 < len(value) <= MAX_EVENT_NAME_CHARS
    ]
    problems += [f"{field}: {LONE_SURROGATE}" for field, value in names if value is not None and json_problem(value)]
    if problems:
        raise InputsInvalid("event", problems)
    check_depth("event payload", payload)
    size = json_size(payload)  # UTF-8 bytes, as history stores it (not \\u escapes)
    if tenants is not None:
        cap = tenants.quotas(tenant).max_event_bytes
        if size > cap:
            from executor.service.tenants import QuotaExceeded

            detail = f"event {type!r} payload is {size} bytes; the cap is {cap}"
            raise QuotaExceeded("max_event_bytes", None, tenant=tenant, detail=detail)
    elif size > MAX_EVENT_BYTES:
        raise InputsInvalid("event payload", [f"{size} bytes; the limit is {MAX_EVENT_BYTES}"])
