"""Errors of the executor package.

    DuraplanError                 root: catch this to catch everything duraplan raises on purpose
    ├── PlanInvalid               a plan failed validation; ``.issues`` lists every problem found
    ├── InputsInvalid             run inputs or an event payload broke their JSON Schema
    ├── RunNotFound               no run with that id for that tenant
    ├── RunConflict               an existing run id was reused with a different plan or inputs
    ├── RunStateError             the operation does not fit the run's state (e.g. event to a finished run)
    ├── RunFailed                 ``result()`` of a run that failed, was cancelled or terminated
    └── SettingsInvalid           (also a ValueError) a DURAPLAN_* setting duraplan cannot use

Every class describes itself: ``type_name`` (the ``ApplicationError`` type it travels as),
``http_status``, ``problem`` and ``title`` (its RFC 7807 problem), ``retryable`` and ``details()``.
``to_failure`` / ``from_failure`` are the one codec to and from Temporal's ``ApplicationError``; the
HTTP problem mapping, the client and the MCP tools look classes up here instead of comparing names.
Every subclass anywhere (tenancy, planner) registers itself by ``type_name`` when it is defined.

Step failures travel inside Temporal as ``ApplicationError`` with ``type`` set to the error type a
plan can name in ``retry.non_retryable``; ``executor.worker.activities`` is the one place that translates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # imported where a failure is built or read: `duraplan validate` never loads temporalio
    from temporalio.exceptions import ApplicationError

__all__ = [
    "DuraplanError",
    "EventPayloadInvalid",
    "InputsInvalid",
    "PlanInvalid",
    "PlanIssue",
    "RunConflict",
    "RunFailed",
    "RunNotFound",
    "RunStateError",
    "SettingsInvalid",
    "UnknownEventType",
    "error_type",
    "from_failure",
    "register_failure_type",
    "to_failure",
]

FailureFactory = Callable[[str, dict[str, Any]], "DuraplanError"]
_TYPES: dict[str, FailureFactory] = {}


def register_failure_type(name: str, factory: FailureFactory) -> None:
    """Decode ``ApplicationError``s of type ``name`` with ``factory(message, details)`` (an alias for
    failures raised under another name, e.g. a workflow's update validator)."""
    _TYPES[name] = factory


def error_type(name: str | None) -> FailureFactory | None:
    """The decoder registered for a failure type name, if any."""
    return _TYPES.get(name or "")


class DuraplanError(Exception):
    """Root of every error duraplan raises on purpose."""

    type_name: ClassVar[str] = "DuraplanError"
    http_status: ClassVar[int] = 400
    problem: ClassVar[str] = "bad-request"  # the RFC 7807 type is PROBLEMS + problem
    title: ClassVar[str] = "Bad request"
    retryable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type_name" not in cls.__dict__:
            cls.type_name = cls.__name__
        register_failure_type(cls.type_name, cls.from_details)

    def failure_details(self) -> dict[str, Any]:
        """What crosses Temporal besides the message: JSON that ``from_details`` reads back."""
        return {}

    def problem_title(self) -> str:
        return self.title

    def problem_kind(self) -> str:
        """The problem type's last path segment (a class may depend on the instance)."""
        return self.problem

    def status_code(self) -> int:
        """The HTTP status (a class may depend on the instance, e.g. which quota)."""
        return self.http_status

    def retry_after_seconds(self) -> float | None:
        """Seconds until a retry may succeed, when known."""
        return None

    def problem_extra(self) -> dict[str, Any]:
        """Extension members of the problem detail."""
        return {}

    @classmethod
    def from_details(cls, message: str, details: dict[str, Any]) -> DuraplanError:
        """Rebuild from a failure: the message as is, ``details`` as attributes."""
        error = cls.__new__(cls)
        Exception.__init__(error, message)
        # plain data only: a detail never shadows what the class defines (status_code(), ...)
        error.__dict__.update({k: v for k, v in details.items() if not hasattr(cls, k)})
        return error


def to_failure(exc: DuraplanError, *, final: bool = False) -> ApplicationError:
    """``exc`` as the ``ApplicationError`` it travels as inside Temporal; ``final``: not retried by
    Temporal even when the error is retryable (the caller decides, e.g. a refused start)."""
    from temporalio.exceptions import ApplicationError

    delay = exc.retry_after_seconds()
    return ApplicationError(
        str(exc),
        exc.failure_details(),
        type=exc.type_name,
        non_retryable=final or not exc.retryable,
        next_retry_delay=timedelta(seconds=delay) if delay else None,
    )


def from_failure(failure: BaseException | None) -> DuraplanError | None:
    """The typed error inside a Temporal failure chain (activity, child, update...), if it is one."""
    from temporalio.exceptions import ApplicationError, FailureError

    cause: BaseException | None = failure
    while cause is not None:
        if isinstance(cause, ApplicationError):
            factory = _TYPES.get(cause.type or "")
            if factory is not None:
                first = cause.details[0] if cause.details else None
                return factory(cause.message, first if isinstance(first, dict) else {})
        cause = cause.cause if isinstance(cause, FailureError) else cause.__cause__
    return None


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
    http_status, problem, title = 422, "validation", "Plan invalid"

    def __init__(self, issues: list[PlanIssue]) -> None:
        self.issues = issues
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"plan is invalid ({len(issues)} problem(s)):\n{lines}")

    def failure_details(self) -> dict[str, Any]:
        return {"issues": [i.to_dict() for i in self.issues]}

    def problem_extra(self) -> dict[str, Any]:
        return self.failure_details()

    @classmethod
    def from_details(cls, message: str, details: dict[str, Any]) -> DuraplanError:
        return cls([PlanIssue(**i) for i in details.get("issues", [])])


class InputsInvalid(DuraplanError):
    http_status, problem, title = 422, "validation", "Input invalid"

    def __init__(self, what: str, problems: list[str]) -> None:
        self.what = what
        self.problems = problems
        super().__init__(f"{what} invalid: " + "; ".join(problems))

    def failure_details(self) -> dict[str, Any]:
        return {"what": self.what, "problems": self.problems}

    def problem_extra(self) -> dict[str, Any]:
        return {"issues": [{"pointer": "", "step": None, "code": "inputs", "message": p} for p in self.problems]}

    @classmethod
    def from_details(cls, message: str, details: dict[str, Any]) -> DuraplanError:
        problems = details.get("problems")
        return cls(str(details.get("what", "input")), [str(p) for p in problems] if problems else [message])


class EventPayloadInvalid(InputsInvalid):
    """An event's payload broke the waiting step's ``payload_schema`` (raised by the workflow)."""

    @classmethod
    def from_details(cls, message: str, details: dict[str, Any]) -> DuraplanError:
        return InputsInvalid("event", [message])


class UnknownEventType(InputsInvalid):
    """No ``wait_for_event`` step of the run waits for that event type (raised by the workflow)."""

    @classmethod
    def from_details(cls, message: str, details: dict[str, Any]) -> DuraplanError:
        return InputsInvalid("event", [message])


class RunNotFound(DuraplanError):
    http_status, problem, title = 404, "not-found", "Not found"

    def __init__(self, tenant: str, run_id: str) -> None:
        super().__init__(f"run {run_id!r} not found for tenant {tenant!r}")


class RunConflict(DuraplanError):
    http_status, problem, title = 409, "conflict", "Conflict"


class RunStateError(DuraplanError):
    http_status, problem, title = 409, "run-state", "Operation does not fit the run's state"


class RunFailed(DuraplanError):
    http_status, problem, title = 409, "run-failed", "Run did not complete"

    def __init__(self, run_id: str, status: str, message: str, details: Any = None) -> None:
        self.run_id = run_id
        self.status = status
        self.details = details  # the failure's own details (step, type, message)
        super().__init__(f"run {run_id!r} {status}: {message}")

    def problem_title(self) -> str:
        return f"Run {self.status}"

    def problem_extra(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "state": self.status, "details": self.details}


# A planning session's update validators refuse with these names.
for _name in ("SessionClosed", "NothingToSubmit"):
    register_failure_type(_name, lambda message, details: RunStateError(message))
register_failure_type("EmptyMessage", lambda message, details: InputsInvalid("message", [message]))


class SettingsInvalid(DuraplanError, ValueError):
    """A setting (environment variable) has a value duraplan cannot use; the message names it."""
