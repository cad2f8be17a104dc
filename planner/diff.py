"""Readable plans and differences between revisions (pure, deterministic: used in workflow code).

Plans that crossed Temporal have their keys sorted (its JSON converter sorts them); ``canonical``
restores the plan model's field order (``id`` and ``kind`` first), so diffs read naturally.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from pydantic import ValidationError

from schemas.plan import Plan

__all__ = ["canonical", "plan_diff", "pretty"]


def canonical(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan with its fields in the model's order (as given if it does not parse)."""
    try:
        return Plan.model_validate(plan).model_dump(mode="json", by_alias=True, exclude_unset=True)
    except ValidationError:
        return plan


def pretty(plan: dict[str, Any] | None) -> str:
    return "" if plan is None else json.dumps(canonical(plan), indent=2, ensure_ascii=False)


def plan_diff(old: dict[str, Any] | None, new: dict[str, Any], old_label: str, new_label: str) -> str:
    """``--- v1`` / ``+++ v2`` and hunks; every line added when there is no ``old`` plan."""
    lines = difflib.unified_diff(
        pretty(old).splitlines(), pretty(new).splitlines(), fromfile=old_label, tofile=new_label, lineterm=""
    )
    return "\n".join(lines)
