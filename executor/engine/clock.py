"""The workflow clock as ISO text, worked out once per workflow time instead of at every call.

A step's record takes the time it starts and ends (``workflow.now().isoformat()``): two datetime
conversions per step, and the next step starts at the very time the one before ended (one
activation, one clock reading). Deterministic: the text is a pure function of the workflow's time,
which Temporal sets per activation; the one remembered time is shared by the runs of a worker (the
engine passes through the sandbox), as any run at that time would get the same text.
"""

from __future__ import annotations

from temporalio import workflow

__all__ = ["now_iso"]

_last: tuple[int, str] = (-1, "")


def now_iso() -> str:
    """``workflow.now().isoformat()``."""
    global _last
    ns = workflow.time_ns()
    last = _last  # one read: another workflow thread may replace it meanwhile
    if last[0] == ns:
        return last[1]
    text = workflow.now().isoformat()
    _last = (ns, text)
    return text
