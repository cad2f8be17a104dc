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


def test_large_plans_and_texts_are_validated_without_being_remembered() -> None:
    """The caches are keyed by plan text: 512 parsed 2 MiB plans, 8,192 megabyte templates or
    1,024 megabyte schemas from a tenant would have stayed in the API's and the workers' memory."""
    from executor.lang import expressions, json_schema, validate_cache

    big = "x" * 300_000
    plan = {
        "name": "big",
        "inputs": {"type": "object", "description": big},
        "steps": [{"id": "a", "kind": "set", "value": "${input.a} " + big + " ${'" + big + "'}"}],
    }
    before = (
        expressions._cached_spans.cache_info().currsize,
        expressions._compile.cache_info().currsize,
        json_schema._problem.cache_info().currsize,
    )
    validate_cache.validate_plan_cached(plan)
    validate_cache.validate_plan_cached(plan)
    after = (
        expressions._cached_spans.cache_info().currsize,
        expressions._compile.cache_info().currsize,
        json_schema._problem.cache_info().currsize,
    )
    assert after[0] == before[0] and after[2] == before[2], (before, after)
    assert after[1] <= before[1] + 1  # only the short expression input.a
    assert validate_cache._digest(plan) is None, "a plan this large has no cache key: it is never kept"
