"""Validation remembered by plan content: a repeat costs no check, a revoked grant is still seen."""

from __future__ import annotations

import pytest

from executor.errors import PlanInvalid
from executor.lang.validate_cache import validate_plan_cached
from tools import default_registry

PLAN = {"name": "cached", "steps": [{"id": "a", "kind": "tool", "tool": "debug.echo", "args": {"value": 1}}]}


def test_a_repeat_is_the_remembered_plan() -> None:
    tools = default_registry()
    first = validate_plan_cached(dict(PLAN), tools=tools)
    assert validate_plan_cached(dict(PLAN), tools=tools) is first
    other = {**PLAN, "name": "cached-2"}
    assert validate_plan_cached(other, tools=tools) is not first


def test_grants_are_asked_again_on_a_hit() -> None:
    tools = default_registry()
    grants = {"debug.echo": True}
    assert validate_plan_cached(dict(PLAN), tools=tools, granted=grants.__getitem__).name == "cached"
    grants["debug.echo"] = False
    with pytest.raises(PlanInvalid) as info:
        validate_plan_cached(dict(PLAN), tools=tools, granted=grants.__getitem__)
    assert [i.code for i in info.value.issues] == ["tool_not_granted"]


def test_a_plan_checked_without_grants_is_checked_with_them() -> None:
    tools = default_registry()
    validate_plan_cached(dict(PLAN), tools=tools)
    with pytest.raises(PlanInvalid):
        validate_plan_cached(dict(PLAN), tools=tools, granted=lambda name: False)


def test_an_invalid_plan_is_reported_every_time() -> None:
    tools = default_registry()
    bad = {"name": "bad", "steps": [{"id": "a", "kind": "tool", "tool": "no.such", "args": {}}]}
    for _ in range(2):
        with pytest.raises(PlanInvalid) as info:
            validate_plan_cached(bad, tools=tools)
        assert info.value.issues
