"""duraplan's executor: validate plans and run them durably on Temporal, per tenant and session.

Layers, lowest first (imports only go down; `make test` checks it with import-linter):

    executor.errors    the error tree every layer raises from
    executor.lang      the plan language: expressions, loading, validation, traversal
    executor.engine    the deterministic workflow (the only code that runs in Temporal's sandbox)
    executor.service   the client, the one start path, tenancy, configuration, the dev server
    executor.worker    activities, the code sandbox, fairness, llm calls: the side effects; it
                       reads tenancy and configuration from the service, which never imports it

The public names below load lazily, so ``import executor.engine`` imports no service code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from executor.lang.loader import load_plan
    from executor.lang.validate import check_plan, validate_plan
    from executor.service.bulk import BulkResult
    from executor.service.client import Duraplan, RunHandle, list_runs, submit_plan
    from executor.service.config import Settings
    from executor.service.usage import UsageReport
    from executor.worker.runner import running_worker

_WHERE = {
    "BulkResult": "executor.service.bulk",
    "UsageReport": "executor.service.usage",
    "Duraplan": "executor.service.client",
    "RunHandle": "executor.service.client",
    "list_runs": "executor.service.client",
    "submit_plan": "executor.service.client",
    "Settings": "executor.service.config",
    "DuraplanError": "executor.errors",
    "InputsInvalid": "executor.errors",
    "PlanInvalid": "executor.errors",
    "PlanIssue": "executor.errors",
    "RunConflict": "executor.errors",
    "RunFailed": "executor.errors",
    "RunNotFound": "executor.errors",
    "RunStateError": "executor.errors",
    "load_plan": "executor.lang.loader",
    "check_plan": "executor.lang.validate",
    "validate_plan": "executor.lang.validate",
    "running_worker": "executor.worker.runner",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'executor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
