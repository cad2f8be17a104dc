"""The bound on a run's buffered events: accepted events wait in workflow state (and in every
continue-as-new carry) until a wait consumes them, so their count and bytes are capped and an
event over the cap is refused at the door, before it is accepted, with a reason naming the cap."""

from __future__ import annotations

from collections.abc import Mapping

from temporalio.exceptions import ApplicationError

from executor.engine.limits import MAX_BUFFERED_EVENT_BYTES, MAX_BUFFERED_EVENTS, json_size
from executor.engine.models import TERMINAL_STATES, EventRecord, StepRecord
from schemas.plan import ForeachStep, ScriptStep, Step, SwitchStep, WaitForEventStep

__all__ = ["EVENT_BUFFER_FULL", "NO_CONSUMER", "check_buffer", "check_consumer", "waiters_left"]

EVENT_BUFFER_FULL = "EventBufferFull"
NO_CONSUMER = "RunStateError"  # the run can no longer use the event: a state conflict (HTTP 409)


def check_buffer(buffered: list[EventRecord], event: EventRecord, size: int) -> None:
    """Raise (an update validator's refusal) when ``event`` (``size`` bytes of JSON) would overflow
    the buffer."""
    if len(buffered) >= MAX_BUFFERED_EVENTS:
        raise ApplicationError(
            f"run already holds {len(buffered)} events no step has consumed (the limit is "
            f"{MAX_BUFFERED_EVENTS}); event {event.type!r} not accepted",
            type=EVENT_BUFFER_FULL,
        )
    held = sum(json_size(e.payload) for e in buffered)
    if held + size > MAX_BUFFERED_EVENT_BYTES:
        raise ApplicationError(
            f"event {event.type!r} is {size} bytes and the run already holds {held} bytes of events no "
            f"step has consumed; the limit is {MAX_BUFFERED_EVENT_BYTES}",
            type=EVENT_BUFFER_FULL,
        )


def waiters_left(steps: list[Step], records: Mapping[str, StepRecord], event_type: str, prefix: str = "") -> int | None:
    """How many ``wait_for_event`` steps for ``event_type`` have not finished yet; None when a
    foreach holds one (it may wait once per item: no fixed count)."""
    left = 0
    for step in steps:
        path = prefix + step.id
        rec = records.get(path)
        if rec is not None and rec.state in TERMINAL_STATES:
            continue
        if isinstance(step, WaitForEventStep) and step.event == event_type:
            left += 1
        elif isinstance(step, ScriptStep):
            return None  # a script waits for events as its code decides: no fixed count
        elif isinstance(step, ForeachStep):
            if waiters_left(step.steps, {}, event_type) != 0:
                return None
        elif isinstance(step, SwitchStep):
            for block in [*(c.steps for c in step.cases), step.default]:
                inner = waiters_left(block, records, event_type, f"{path}.")
                if inner is None:
                    return None
                left += inner
    return left


def check_consumer(
    steps: list[Step], records: Mapping[str, StepRecord], buffered: list[EventRecord], event: EventRecord
) -> None:
    """Refuse an event no step is left to consume: accepted, it would sit in the buffer unread
    (three events sent at once to a run whose only step waits for one)."""
    left = waiters_left(steps, records, event.type)
    if left is None:
        return
    queued = sum(1 for e in buffered if e.type == event.type)
    if queued >= left:
        raise ApplicationError(
            f"no step is left to consume event {event.type!r} ({queued} already buffered for "
            f"{left} waiting step(s)); not accepted",
            type=NO_CONSUMER,
        )
