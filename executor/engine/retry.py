"""Retry arithmetic and failure translation: pure functions, unit-tested without a server."""

from __future__ import annotations

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    TimeoutError,
    TimeoutType,
)

from executor.engine.limits import MAX_ERROR_BYTES, bounded_text, clamp_retry_after
from executor.engine.models import StepError
from schemas.plan import Retry, parse_duration

__all__ = [
    "DEFAULT_RETRY",
    "LOST_WORKER_ENGINE",
    "MAX_WORKER_LOSSES",
    "backoff_delay",
    "cancelled",
    "throttle_delay",
    "to_step_error",
    "worker_lost",
]

DEFAULT_RETRY = Retry.model_validate({})
# Worker losses re-dispatched without spending an attempt, per step: enough for a rolling restart
# or a server outage, few enough that a step which itself kills its worker still ends.
MAX_WORKER_LOSSES = 3
# Runs started at this engine version (models.ENGINE_VERSION) or later count a lost worker as no
# attempt in scripts and compensations too; earlier ones replay as they ran (a lost worker: an attempt).
LOST_WORKER_ENGINE = 6


def backoff_delay(policy: Retry, attempt: int, retry_after: float | None = None, *, clamp: bool = True) -> float:
    """Seconds before attempt ``attempt + 1``: exponential from ``initial_interval``, capped at
    ``max_interval``; a server's ``retry_after`` can lengthen the wait, up to ``max_interval``
    (``clamp=False``: unbounded, as runs recorded before the clamp waited)."""
    cap = parse_duration(policy.max_interval)
    delay = min(parse_duration(policy.initial_interval) * policy.backoff ** (attempt - 1), cap)
    if clamp:
        return max(delay, clamp_retry_after(retry_after, cap) or 0.0)
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


def worker_lost(exc: BaseException) -> bool:
    """Whether an activity failed because its worker stopped heartbeating (killed, or cut off by
    a server outage): the infrastructure's failure, not the step's."""
    cause: BaseException | None = exc
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    return isinstance(cause, TimeoutError) and cause.type == TimeoutType.HEARTBEAT


def to_step_error(exc: BaseException) -> tuple[StepError, float | None]:
    """Translate a Temporal failure chain into the step's error and an optional retry-after."""
    cause: BaseException | None = exc
    while isinstance(cause, ActivityError | ChildWorkflowError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        retry_after = None
        if cause.details and isinstance(cause.details[0], dict):
            retry_after = cause.details[0].get("retry_after")
        # Bounded here too: an activity not of ours (or of an older worker) may send any size.
        message = bounded_text(cause.message, MAX_ERROR_BYTES)
        return StepError(cause.type or "Error", message, not cause.non_retryable), retry_after
    if isinstance(cause, TimeoutError):
        return StepError("StepTimeout", f"step timed out ({cause.type.name if cause.type else 'timeout'})", True), None
    return StepError(type(cause).__name__, bounded_text(str(cause), MAX_ERROR_BYTES), True), None
