"""duraplan's executor: validate plans and run them durably on Temporal, per tenant and session."""

from executor.bulk import BulkResult
from executor.client import Duraplan, RunHandle, list_runs, submit_plan
from executor.config import Settings
from executor.errors import (
    DuraplanError,
    InputsInvalid,
    PlanInvalid,
    PlanIssue,
    RunConflict,
    RunFailed,
    RunNotFound,
    RunStateError,
)
from executor.loader import load_plan
from executor.metering import UsageReport
from executor.validate import check_plan, validate_plan
from executor.worker import running_worker

__all__ = [
    "BulkResult",
    "Duraplan",
    "DuraplanError",
    "InputsInvalid",
    "PlanInvalid",
    "PlanIssue",
    "RunConflict",
    "RunFailed",
    "RunHandle",
    "RunNotFound",
    "RunStateError",
    "Settings",
    "UsageReport",
    "check_plan",
    "list_runs",
    "load_plan",
    "running_worker",
    "submit_plan",
    "validate_plan",
]
