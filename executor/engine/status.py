"""Status assembly and record compaction: pure functions over step records."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from executor.engine.models import StepError, StepRecord
from executor.engine.run_status import (
    FINAL_RUN_STATES,
    FINAL_STEP_STATES,
    ForeachItemView,
    ForeachProgress,
    RunStatus,
    StepErrorView,
    StepState,
    StepView,
)
from schemas.plan import ForeachStep, Plan, ScriptStep, Step, SubplanStep, SwitchStep

__all__ = ["assemble", "compact", "error_dict", "preview", "public_detail", "record_dict", "script_calls", "step_view"]


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


# ---- the run status: assembled from the plan and the records (pure) -----------------------------


def step_view(step: Step, path: str, records: Mapping[str, StepRecord], *, items: bool = False) -> StepView:
    """A step's view with its nested steps: a switch's branches (untaken ones ``skipped``), a
    foreach's item counts by state (and each item's steps when ``items``), a subplan's child run."""
    rec = records.get(path) or StepRecord()
    view = StepView(
        id=step.id,
        kind=step.kind,
        path=path,
        state=rec.state,
        attempts=rec.attempts,
        started_at=rec.started_at,
        ended_at=rec.ended_at,
        error=None if rec.error is None else StepErrorView(type=rec.error.type, message=rec.error.message),
        output_preview=preview(rec.output),
        detail=public_detail(rec.detail),
    )
    if isinstance(step, SwitchStep):
        chosen = rec.detail.get("branch") if rec.detail else None
        view.branch = chosen
        branches = [*(case.steps for case in step.cases), step.default]
        for number, branch in enumerate(branches):
            taken = chosen is not None and (chosen == number or (chosen == -1 and number == len(step.cases)))
            for inner in branch:
                child = step_view(inner, f"{path}.{inner.id}", records, items=items)
                if chosen is not None and not taken:
                    child = child.model_copy(update={"state": "skipped"})
                view.steps.append(child)
    elif isinstance(step, ForeachStep) and rec.detail and "items" in rec.detail:
        total = int(rec.detail["items"])
        item_views = [_item_view(step, path, i, records, items=items) for i in range(total)]
        counts: dict[str, int] = {}
        for item in item_views:
            counts[item.state] = counts.get(item.state, 0) + 1
        done = total if rec.state == "completed" else counts.get("completed", 0)
        view.progress = ForeachProgress(done=done, total=total, counts=counts)
        if items:
            view.items = item_views
    elif isinstance(step, SubplanStep) and rec.detail:
        view.child_run_id = rec.detail.get("child_run_id")
    elif isinstance(step, ScriptStep):
        view.calls = [StepView.model_validate({**c, "path": f"{path}{c['id']}"}) for c in script_calls(rec)]
    return view


def script_calls(rec: StepRecord) -> list[dict[str, Any]]:
    """The script step's host calls as nested step views (the newest ``SCRIPT_LOG_KEPT``)."""
    log = (rec.detail or {}).get("_log") or []
    pending = (rec.detail or {}).get("_pending")
    entries = [*log, pending["entry"]] if pending else log
    return [
        {
            "id": f"#{e['i']}",
            "name": e["name"],
            "kind": e["fn"],
            "state": e["s"],
            "attempts": e.get("a", 1),
            "started_at": e.get("t0"),
            "ended_at": e.get("t1"),
            "error": None if "e" not in e else {"type": e["e"][0], "message": e["e"][1]},
            "output_preview": e.get("o"),
        }
        for e in entries
    ]


def _item_view(
    step: ForeachStep, path: str, index: int, records: Mapping[str, StepRecord], *, items: bool
) -> ForeachItemView:
    item_path = f"{path}[{index}]"
    own = records.get(item_path)
    steps = [step_view(s, f"{item_path}.{s.id}", records, items=items) for s in step.steps] if items else []
    if own is not None and own.state in FINAL_STEP_STATES:
        state: StepState = own.state
    else:
        inner = [records.get(f"{item_path}.{s.id}") for s in step.steps]
        states = {r.state for r in inner if r is not None}
        if "failed" in states:
            state = "failed"
        elif states - {"pending"}:
            state = "running"
        else:
            state = "pending"
    return ForeachItemView(index=index, state=state, steps=steps)


def assemble(
    *,
    run: Mapping[str, Any],
    plan: Plan,
    records: Mapping[str, StepRecord],
    state: str,
    items: bool = False,
) -> RunStatus:
    """The run's status from its plan and records; ``run`` holds the run-level fields. In a final
    state no step is left open (``RunStatus.settled``)."""
    status = RunStatus.model_validate(
        {
            **run,
            "state": state,
            "plan_name": plan.name,
            "plan_version": plan.version,
            "steps": [step_view(s, s.id, records, items=items) for s in plan.steps],
        }
    )
    return status.settled(state) if state in FINAL_RUN_STATES else status
