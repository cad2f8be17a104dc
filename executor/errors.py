"""Errors of the executor package.

    DuraplanError                 root: catch this to catch everything duraplan raises on purpose
    ├── PlanInvalid               a plan failed validation; ``.issues`` lists every problem found
    ├── InputsInvalid             run inputs or an event payload broke their JSON Schema
    ├── RunNotFound               no run with that id for that tenant
    ├── RunConflict               an existing run id was reused with a different plan or inputs
    ├── RunStateError             the operation does not fit the run's state (e.g. event to a finished run)
    ├── RunFailed                 ``result()`` of a run that failed, was cancelled or terminated
    └── SettingsInvalid           (also a ValueError) a DURAPLAN_* setting duraplan cannot use

Step failures travel inside Temporal as ``ApplicationError`` with ``type`` set to the error type a
plan can name in ``retry.non_retryable``; ``executor.worker.activities`` is the one place that translates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "DuraplanError",
    "InputsInvalid",
    "PlanInvalid",
    "PlanIssue",
    "RunConflict",
    "RunFailed",
    "RunNotFound",
    "RunStateError",
    "SettingsInvalid",
]


class DuraplanError(Exception):
    """Root of every error duraplan raises on purpose."""


@dataclass(frozen=True)
class PlanIssue:
    """One problem in a plan: where (JSON pointer), which step, and what."""

    pointer: str
    message: str
    step: str | None = None
    code: str = "invalid"

    def __str__(self) -> str:
        where = self.pointer or "/"
        step = f" (step {self.step!r})" if self.step else ""
        return f"{where}{step}: {self.message} [{self.code}]"

    def to_dict(self) -> dict[str, Any]:
        return {"pointer": self.pointer, "step": self.step, "code": self.code, "message": self.message}


class PlanInvalid(DuraplanError):
    def __init__(self, issues: list[PlanIssue]) -> None:
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"plan is invalid ({len(issues)} problem(s)):\n{lines}")


class InputsInvalid(DuraplanError):
    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{what} invalid: " + "; ".join(problems))


class RunNotFound(DuraplanError):
    def __init__(self, tenant: str, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found for tenant {tenant!r}")


class RunConflict(DuraplanError):
    pass


class RunStateError(DuraplanError):
    pass


class RunFailed(DuraplanError):
    def __init__(self, run_id: str, status: str, message: str, details: Any = None) -> None:
        self.run_id = run_id
        self.status = status
        self.details = details
        super().__init__(f"run {run_id!r} {status}: {message}")


class SettingsInvalid(DuraplanError, ValueError):
    """A setting (environment variable) has a value duraplan cannot use; the message names it."""
