"""The small parts: the error tree across Temporal, catalogs, diffs, and the format summary."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from planner_kit import GOOD_PLAN, good_plan

from executor.errors import DuraplanError, PlanIssue
from executor.lang.validate import STEP_KINDS, check_plan
from planner.activities import registry_from_catalog, to_application_error
from planner.diff import plan_diff
from planner.errors import (
    BudgetExhausted,
    ModelNotConfigured,
    PlannerError,
    ProviderRejected,
    ProviderUnreachable,
    RateLimited,
    RepairExhausted,
    error_from_failure,
)
from planner.schema import format_summary, response_schema
from tools import ToolRegistry

ERRORS: list[PlannerError] = [
    ModelNotConfigured(),
    ModelNotConfigured("ANTHROPIC_API_KEY", "anthropic/claude-sonnet-4-5"),
    ProviderUnreachable("down", 503),
    RateLimited("slow down", retry_after=2.5),
    ProviderRejected("bad key", 401),
    RepairExhausted(3, [PlanIssue("/steps/0/tool", "unknown tool 'x'", "a", "unknown_tool")]),
    BudgetExhausted(0.02, 0.01, 2),
    PlannerError("something else"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_cross_temporal_typed(error: PlannerError) -> None:
    assert isinstance(error, DuraplanError)
    failure = to_application_error(error)
    assert failure.type == type(error).__name__
    assert failure.non_retryable is (not error.retryable)
    rebuilt = error_from_failure(failure.type, failure.message, failure.details[0])
    assert type(rebuilt) is type(error) and str(rebuilt) == str(error) and rebuilt.details() == error.details()


def test_only_provider_trouble_is_retryable_and_rate_limits_carry_the_delay() -> None:
    assert {type(e).__name__ for e in ERRORS if e.retryable} == {"ProviderUnreachable", "RateLimited"}
    assert to_application_error(RateLimited("x", 2.5)).next_retry_delay == timedelta(seconds=2.5)
    assert to_application_error(RateLimited("x")).next_retry_delay is None


def test_a_catalog_validates_like_the_registry_it_came_from(registry: ToolRegistry) -> None:
    only_echo = registry_from_catalog([t for t in registry.catalog() if t["name"] == "debug.echo"])
    assert only_echo.names() == ["debug.echo"]
    _, issues = check_plan(GOOD_PLAN, tools=only_echo)
    assert [(i.pointer, i.code) for i in issues] == [("/steps/1/tool", "unknown_tool")]
    assert check_plan(GOOD_PLAN, tools=registry_from_catalog(registry.catalog()))[1] == []


def test_diff_is_unified_over_pretty_json_in_model_order() -> None:
    new = good_plan(description="now described")
    diff = plan_diff(GOOD_PLAN, new, "v1", "v2")
    assert diff.splitlines()[:2] == ["--- v1", "+++ v2"]
    assert '+  "description": "now described",' in diff
    assert plan_diff(GOOD_PLAN, GOOD_PLAN, "v1", "v2") == ""
    sorted_keys: dict[str, Any] = {"output": GOOD_PLAN["output"], "steps": GOOD_PLAN["steps"], "name": "echo_and_count"}
    assert plan_diff(GOOD_PLAN, sorted_keys, "a", "b") == ""  # key order (Temporal sorts them) is no change


def test_the_format_summary_follows_the_schema() -> None:
    summary = format_summary()
    for kind in STEP_KINDS:
        assert f'- kind: "{kind}"' in summary
    for name in ("Retry", "Compensation", "PlanLimits", "Case"):
        assert f"\n{name}" in summary
    schema = response_schema()
    assert "discriminator" not in str(schema) and "$schema" not in schema and schema["type"] == "object"
