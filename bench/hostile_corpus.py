"""Plans built from issue 11's hostile inputs: oversized errors, outputs, inputs and fail messages,
hostile Retry-After values, and an event flood. Shared by the soak test
(tests/engine/test_soak_hostile.py) and the worker-RSS benchmark (bench/hostile_rss.py)."""

from __future__ import annotations

from typing import Any

__all__ = ["EVENT_PLAN", "FINAL_STATES", "HOSTILE_PLANS"]

FINAL_STATES = frozenset({"completed", "failed", "cancelled", "terminated"})
MIB = 1024 * 1024
QUICK_RETRY = {"max_attempts": 2, "initial_interval": "100ms", "max_interval": "1s"}


def _retry_after(value: float) -> dict[str, Any]:
    return {
        "id": "busy",
        "kind": "tool",
        "tool": "debug.fail",
        "args": {"message": "busy", "retryable": True, "retry_after": value},
        "retry": QUICK_RETRY,
    }


HOSTILE_PLANS: dict[str, dict[str, Any]] = {
    "huge_error": {
        "name": "huge-error",
        "steps": [{"id": "c", "kind": "code", "code": "raise ValueError('x' * (1024 * 1024))", "retry": QUICK_RETRY}],
    },
    "huge_output": {"name": "huge-output", "steps": [{"id": "c", "kind": "code", "code": "'x' * (2 * 1024 * 1024)"}]},
    "huge_fail_message": {
        "name": "huge-fail",
        "steps": [
            {"id": "c", "kind": "code", "code": "'x' * 1048400"},
            {"id": "f", "kind": "fail", "message": "${steps.c.output}"},
        ],
    },
    "huge_set": {
        "name": "huge-set",
        "steps": [
            {"id": "a", "kind": "code", "code": "'a' * 700000"},
            {"id": "s", "kind": "set", "value": ["${steps.a.output}", "${steps.a.output}"]},
        ],
    },
    "huge_args": {
        "name": "huge-args",
        "steps": [
            {"id": "a", "kind": "code", "code": "'a' * 700000"},
            {"id": "t", "kind": "tool", "tool": "debug.echo", "args": {"value": ["${steps.a.output}"] * 3}},
        ],
    },
    "nan_output": {"name": "nan-output", "steps": [{"id": "c", "kind": "code", "code": "float('nan')"}]},
    "long_sleep": {
        "name": "long-sleep",
        "steps": [{"id": "c", "kind": "code", "code": "import time\ntime.sleep(1e9)"}],
    },
    "retry_after_1e300": {"name": "ra-1e300", "steps": [_retry_after(1e300)]},
    "retry_after_100000": {"name": "ra-100000", "steps": [_retry_after(100000.0)]},
}

# Waits for one event after a sleep: the flood arrives while nothing consumes it.
EVENT_PLAN: dict[str, Any] = {
    "name": "event-flood",
    "steps": [
        {"id": "hold", "kind": "sleep", "duration": "2s"},
        {"id": "w", "kind": "wait_for_event", "event": "go", "timeout": "30s", "depends_on": ["hold"]},
    ],
    "output": "${steps.w.output.n}",
}
