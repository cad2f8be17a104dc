"""Retry arithmetic and failure translation: pure functions, unit-tested without a server."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, ChildWorkflowError, TimeoutError

from executor.engine.models import StepError
from schemas.plan import Retry, parse_duration

__all__ = ["DEFAULT_RETRY", "backoff_delay", "cancelled", "throttle_delay", "to_step_error"]

DEFAULT_RETRY = Retry.model_validate({})


def backoff_delay(policy: Retry, attempt: int, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: exponential from ``initial_interval``, capped at
    ``max_interval``; a server's ``retry_after`` can lengthen the wait."""
    cap = parse_duration(policy.max_interval)
    delay = min(parse_duration(policy.initial_interval) * policy.backoff ** (attempt - 1), cap)
    return max(delay, retry_after or 0.0)


def throttle_delay(times: int) -> float:
    """Seconds before the ``times``-th re-dispatch of a refused step: 1, 1.5, 2.25... capped at 5."""
    return float(min(1.5 ** max(times - 1, 0), 5.0))


def cancelled(exc: BaseException) -> bool:
    """Whether a Temporal failure chain is a cancellation (of the run, not the step's fault)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, CancelledError):
            return True
        cause = cause.cause if isinstance(cause, ActivityError | ChildWorkflowError) else None
    return False


def to_step_error(exc: BaseException) -> tuple[StepError, float | None]:
    """Translate a Temporal failure chain into the step's error and an optional retry-after."""
    cause: BaseException | None = exc
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        retry_after = None
        if cause.details and isinstance(cause.details[0], dict):
            retry_after = cause.details[0].get("retry_after")
        return StepError(cause.type or "Error", cause.message, not cause.non_retryable), retry_after
    if isinstance(cause, TimeoutError):
        return StepError("StepTimeout", f"step timed out ({cause.type.name if cause.type else 'timeout'})", True), None
    return StepError(type(cause).__name__, str(cause), True), None
