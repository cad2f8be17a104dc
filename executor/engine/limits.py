"""The one size guard for everything that can reach workflow history, and the retry-delay clamp.

Temporal refuses a payload over 2 MiB by failing the *workflow task*, which it then retries for
ever: the run stays ``running``, nothing compensates. So every value that enters history passes
here first and is either within its limit, cut to it (error text), or refused as the step's own
failure, which the run handles like any other (compensation, ``on_error``, a final state).

Pure and deterministic: used by the workflow (set outputs, fail messages, activity inputs, the
event buffer, the run's output) and by the worker (activity outputs and errors) alike.
"""

from __future__ import annotations

import json
import math
from typing import Any

from executor.lang.depth import MAX_JSON_DEPTH, deepest

__all__ = [
    "MAX_ACTIVITY_INPUT_BYTES",
    "MAX_BUFFERED_EVENTS",
    "MAX_BUFFERED_EVENT_BYTES",
    "MAX_ERROR_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_STEP_OUTPUT_BYTES",
    "bounded_text",
    "clamp_retry_after",
    "deepest",
    "json_size",
    "oversize",
]

MIB = 1024 * 1024
# The reference product's per-step result limit; a tenant quota can lower it, never raise it.
MAX_STEP_OUTPUT_BYTES = 1 * MIB
# An error message is for people and logs; 16 KiB keeps the failure (which carries it twice:
# message and details) and every retry's record far below Temporal's 2 MiB payload limit.
MAX_ERROR_BYTES = 16 * 1024
# What a workflow may hand one activity (tool arguments, code inputs, a prompt).
MAX_ACTIVITY_INPUT_BYTES = int(1.5 * MIB)
# Events accepted before a wait consumes them: each travels in history and in every
# continue-as-new carry, so the buffer as a whole has to stay far below 2 MiB too.
MAX_BUFFERED_EVENTS = 100
MAX_BUFFERED_EVENT_BYTES = 1 * MIB


# What ``json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)`` builds on every
# call, built once: the guard runs for every activity a workflow schedules.
_SIZER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def json_size(value: Any) -> int:
    """Bytes of ``value`` as history stores it: UTF-8 JSON, non-ASCII characters not escaped.
    NaN and infinities count as their JSON-ish spelling (they are refused elsewhere)."""
    text = _SIZER.encode(value)
    return len(text) if text.isascii() else len(text.encode())  # (isascii: a flag CPython keeps)


def oversize(value: Any, limit: int) -> int | None:
    """The size of ``value`` when it is over ``limit``, else None."""
    size = json_size(value)
    return size if size > limit else None


def bounded_text(text: str, limit: int = MAX_ERROR_BYTES) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, saying how much was cut. A lone surrogate
    (JSON's "\\ud800" parses to one) becomes U+FFFD: it has no UTF-8 form, so encoding the message
    raised UnicodeEncodeError in the activity's error handling (the step failed as that, retried)."""
    try:
        raw = text.encode()
    except UnicodeEncodeError:
        text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
        raw = text.encode()
    if len(raw) <= limit:
        return text
    keep = raw[: limit - 64].decode(errors="ignore")
    return f"{keep}... [{len(raw) - len(keep.encode())} more bytes cut]"


def clamp_retry_after(retry_after: Any, cap: float) -> float | None:
    """A server's Retry-After as a finite delay within ``cap`` (the policy's max_interval), or
    None when it is not a usable number (negative, NaN, not a number at all)."""
    if isinstance(retry_after, bool) or not isinstance(retry_after, int | float):
        return None
    value = float(retry_after)
    if math.isnan(value) or value < 0:
        return None
    return min(value, cap)
