"""Status assembly and record compaction: pure functions over step records."""

from __future__ import annotations

import json
from typing import Any

from executor.engine.models import StepError, StepRecord

__all__ = ["compact", "error_dict", "preview", "public_detail", "record_dict"]


def compact(records: dict[str, StepRecord]) -> dict[str, StepRecord]:
    """Records the next run needs: a finished foreach or foreach item stands for what is inside."""
    finished_loops = {k for k, r in records.items() if r.state == "completed" and r.detail and "items" in r.detail}
    finished_items = {k for k, r in records.items() if k.endswith("]") and r.state == "completed"}
    out: dict[str, StepRecord] = {}
    for key, rec in records.items():
        if rec.state == "pending" or inside(key, finished_loops, finished_items):
            continue
        out[key] = rec
    return out


def inside(key: str, loops: set[str], items: set[str]) -> bool:
    for i, ch in enumerate(key):
        if ch == "[" and key[:i] in loops:
            return True
        if ch == "." and i > 0 and key[i - 1] == "]" and key[:i] in items:
            return True
    return False


def error_dict(error: StepError | None) -> dict[str, Any] | None:
    return None if error is None else {"type": error.type, "message": error.message}


def record_dict(rec: StepRecord) -> dict[str, Any]:
    return {
        "state": rec.state,
        "attempts": rec.attempts,
        "started_at": rec.started_at,
        "ended_at": rec.ended_at,
        "error": error_dict(rec.error),
        "output_preview": preview(rec.output),
        "detail": public_detail(rec.detail),
    }


def public_detail(detail: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record's detail without the engine's private state (keys starting with ``_``: a script's
    snapshot and call log), which status shows in its own form or not at all."""
    if detail is None or not any(k.startswith("_") for k in detail):
        return detail
    return {k: v for k, v in detail.items() if not k.startswith("_")}


def preview(value: Any, limit: int = 200) -> str | None:
    if value is None:
        return None
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"
