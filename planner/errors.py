"""Errors of the planner: one tree, with retry semantics in the types.

    DuraplanError                  (executor.errors) the root of everything duraplan raises on purpose
    └── PlannerError               planning failed; ``retryable`` says whether another try may help
        ├── ModelNotConfigured     no model, or its provider key is missing; ``variable`` names the env var
        ├── ProviderUnreachable    5xx, timeouts, lost connections                           retryable
        ├── RateLimited            429; ``retry_after`` seconds when the provider said        retryable
        ├── ProviderRejected       other 4xx (400 bad request, 401/403 credentials, 404 model)
        ├── RepairExhausted        no valid plan within ``attempts``; ``last_issues`` says why
        └── BudgetExhausted        the attempts so far cost ``spent_usd`` of ``budget_usd``

Only ``ProviderUnreachable`` and ``RateLimited`` are retryable. Across Temporal every error travels
as an ``ApplicationError`` whose ``type`` is the class name and whose first detail is
``details()``; ``error_from_failure`` rebuilds the typed error on the client side.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from executor.errors import DuraplanError, PlanIssue

if TYPE_CHECKING:
    from planner.core import Attempt

__all__ = [
    "BudgetExhausted",
    "ModelNotConfigured",
    "PlannerError",
    "ProviderRejected",
    "ProviderUnreachable",
    "RateLimited",
    "RepairExhausted",
    "error_from_failure",
]

EXAMPLE_MODELS = "e.g. openai/gpt-4o-mini or anthropic/claude-sonnet-4-5"


class PlannerError(DuraplanError):
    """Root of the planner's errors. Not retryable unless a subclass says so."""

    retryable: ClassVar[bool] = False
    http_status, problem, title = 503, "planner-unavailable", "Planner unavailable"

    def details(self) -> dict[str, Any]:
        """What crosses Temporal besides the message (JSON)."""
        return {}

    def failure_details(self) -> dict[str, Any]:
        return self.details()

    def problem_extra(self) -> dict[str, Any]:
        return {"error": type(self).__name__}

    @classmethod
    def from_details(cls, message: str, details: dict[str, Any]) -> DuraplanError:
        return error_from_failure(cls.type_name, message, details)


class ModelNotConfigured(PlannerError):
    """No model is configured, or the configured model's provider key is missing."""

    def __init__(self, variable: str = "DURAPLAN_MODEL", model: str | None = None) -> None:
        self.variable = variable
        self.model = model
        if model is None:
            message = f"no model configured: set {variable} ({EXAMPLE_MODELS}) or pass a model"
        else:
            message = f"model {model!r} needs {variable}: set it in the environment (of the worker, when durable)"
        super().__init__(message)

    def details(self) -> dict[str, Any]:
        return {"variable": self.variable, "model": self.model}


class ProviderUnreachable(PlannerError):
    """The provider failed on its side (5xx), timed out or could not be reached."""

    retryable = True

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)

    def details(self) -> dict[str, Any]:
        return {"status": self.status}


class RateLimited(PlannerError):
    """The provider answered 429; ``retry_after`` is its hint in seconds, if any."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)

    def retry_after_seconds(self) -> float | None:
        return self.retry_after

    def details(self) -> dict[str, Any]:
        return {"retry_after": self.retry_after}


class ProviderRejected(PlannerError):
    """The provider refused the request (400, 401, 403, 404...): another try gets the same answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)

    def details(self) -> dict[str, Any]:
        return {"status": self.status}

    def _clients_choice(self) -> bool:
        # an unknown model, a request the provider cannot take: the client's choice, not an outage
        return self.status in (400, 404, 422)

    def status_code(self) -> int:
        return 422 if self._clients_choice() else self.http_status

    def problem_kind(self) -> str:
        return "model-rejected" if self._clients_choice() else self.problem

    def problem_title(self) -> str:
        return "Model rejected the request" if self._clients_choice() else self.title

    def problem_extra(self) -> dict[str, Any]:
        if self._clients_choice():
            return {"provider_status": self.status}
        return super().problem_extra()


class RepairExhausted(PlannerError):
    """Every attempt produced an invalid plan; ``last_issues`` are the validator's last findings."""

    http_status, problem, title = 422, "planning-failed", "No valid plan"

    def problem_extra(self) -> dict[str, Any]:
        return self.details()

    def __init__(self, attempts: int, last_issues: list[PlanIssue], history: Sequence[Attempt] = ()) -> None:
        self.attempts = attempts
        self.last_issues = list(last_issues)
        self.history = list(history)  # every attempt with its findings, tokens and cost
        lines = "".join(f"\n  {issue}" for issue in self.last_issues)
        super().__init__(
            f"no valid plan after {attempts} attempt(s); last problem(s) ({len(self.last_issues)}):{lines}"
        )

    def details(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "last_issues": [i.to_dict() for i in self.last_issues]}


class BudgetExhausted(PlannerError):
    """The attempts so far cost the whole budget before a valid plan came back."""

    http_status, problem, title = 422, "planning-failed", "No valid plan"

    def problem_extra(self) -> dict[str, Any]:
        return self.details()

    def __init__(self, spent_usd: float, budget_usd: float, attempts: int = 0) -> None:
        self.spent_usd = spent_usd
        self.budget_usd = budget_usd
        self.attempts = attempts
        super().__init__(
            f"planning budget exhausted: spent ${spent_usd:.6f} of ${budget_usd:.6f} in {attempts} attempt(s)"
        )

    def details(self) -> dict[str, Any]:
        return {"spent_usd": self.spent_usd, "budget_usd": self.budget_usd, "attempts": self.attempts}


def error_from_failure(error_type: str | None, message: str, details: dict[str, Any] | None = None) -> PlannerError:
    """The typed error for an ``ApplicationError`` raised by the planning activity."""
    d = details or {}
    match error_type:
        case "ModelNotConfigured":
            return ModelNotConfigured(d.get("variable") or "DURAPLAN_MODEL", d.get("model"))
        case "ProviderUnreachable":
            return ProviderUnreachable(message, d.get("status"))
        case "RateLimited":
            return RateLimited(message, d.get("retry_after"))
        case "ProviderRejected":
            return ProviderRejected(message, d.get("status"))
        case "RepairExhausted":
            issues = [
                PlanIssue(i.get("pointer", ""), i.get("message", ""), i.get("step"), i.get("code", "invalid"))
                for i in d.get("last_issues", [])
            ]
            return RepairExhausted(int(d.get("attempts", 0)), issues)
        case "BudgetExhausted":
            return BudgetExhausted(
                float(d.get("spent_usd", 0.0)), float(d.get("budget_usd", 0.0)), int(d.get("attempts", 0))
            )
        case _:
            return PlannerError(message)
