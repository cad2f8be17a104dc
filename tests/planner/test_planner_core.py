"""plan_goal's repair loop with a scripted model: every kind of invalid answer is fed back precisely."""

from __future__ import annotations

import json
from typing import Any

import pytest
from planner_kit import GOOD_PLAN, good_plan

from executor.lang.validate import check_plan
from planner import BudgetExhausted, ModelNotConfigured, RepairExhausted, plan_goal
from planner.core import parse_answer
from planner.testing import ScriptedModel
from tools import ToolRegistry

MODEL = "openai/gpt-4o-mini"


def issues_of(plan: dict[str, Any], registry: ToolRegistry) -> list[str]:
    """The validator's findings, as the repair prompt must quote them."""
    _, issues = check_plan(plan, tools=registry)
    assert issues, "the test plan was meant to be invalid"
    return [str(i) for i in issues]


def unknown_tool(registry: ToolRegistry) -> dict[str, Any]:
    plan = good_plan()
    plan["steps"][0] = {"id": "greet", "kind": "tool", "tool": "email.send", "args": {"to": "a@b.c"}}
    return plan


def schema_violation() -> dict[str, Any]:
    plan = good_plan()
    plan["steps"][1] = {"id": "count", "kind": "tool", "args": {}}  # no `tool`
    return plan


def cycle() -> dict[str, Any]:
    plan = good_plan()
    plan["steps"][0]["depends_on"] = ["join"]  # join uses greet's output: greet -> join -> greet
    return plan


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("invalid_json", "the answer is not valid JSON"),
        ("schema", "/steps/1/tool (step 'count'): Field required [schema]"),
        ("unknown_tool", "/steps/0/tool (step 'greet'): unknown tool 'email.send'"),
        ("cycle", "dependency cycle: greet -> join -> greet"),
    ],
)
async def test_invalid_answer_is_repaired_with_the_precise_issue(
    case: str, expected: str, registry: ToolRegistry
) -> None:
    bad: str | dict[str, Any] = {
        "invalid_json": '{"name": "x", "steps": [',
        "schema": schema_violation(),
        "unknown_tool": unknown_tool(registry),
        "cycle": cycle(),
    }[case]
    model = ScriptedModel(bad, GOOD_PLAN)
    with model:
        result = await plan_goal("greet and count", tools=registry, model=MODEL, completion=model)

    assert result.plan_json == GOOD_PLAN
    assert [a.ok for a in result.attempts] == [False, True]
    repair = model.calls[1].last_user_message
    assert expected in repair
    if isinstance(bad, dict):
        for line in issues_of(bad, registry):  # every finding, verbatim: pointer, step, message, code
            assert line in repair
    assert [str(i) for i in result.attempts[0].issues] == [line.removeprefix("- ") for line in _listed(repair)]
    # The conversation goes on: system, goal, the bad answer, the repair request.
    roles = [m["role"] for m in model.calls[1].messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert model.calls[1].messages[2]["content"] == (bad if isinstance(bad, str) else json.dumps(bad))


def _listed(repair: str) -> list[str]:
    return [line for line in repair.splitlines() if line.startswith("- ")]


async def test_several_repairs_then_success_records_every_attempt(registry: ToolRegistry) -> None:
    model = ScriptedModel("not json at all", unknown_tool(registry), cycle(), GOOD_PLAN, usage=(1000, 200))
    with model:
        result = await plan_goal("greet and count", tools=registry, model=MODEL, completion=model, max_attempts=4)
    assert len(result.attempts) == 4
    assert [a.number for a in result.attempts] == [1, 2, 3, 4]
    assert [len(a.issues) > 0 for a in result.attempts] == [True, True, True, False]
    assert result.prompt_tokens == 4000 and result.completion_tokens == 800 and result.total_tokens == 4800
    assert result.cost_usd == pytest.approx(sum(a.cost_usd for a in result.attempts))
    assert result.cost_usd > 0  # litellm knows gpt-4o-mini's price
    assert result.model == MODEL
    assert "unknown tool 'email.send'" in model.calls[2].last_user_message
    assert "dependency cycle" in model.calls[3].last_user_message
    assert "4 attempt(s)" in result.summary()


async def test_exhaustion_raises_with_the_last_issues(registry: ToolRegistry) -> None:
    model = ScriptedModel("{", schema_violation(), unknown_tool(registry))
    with model, pytest.raises(RepairExhausted) as caught:
        await plan_goal("greet and count", tools=registry, model=MODEL, completion=model, max_attempts=3)
    err = caught.value
    assert err.attempts == 3
    assert [str(i) for i in err.last_issues] == issues_of(unknown_tool(registry), registry)
    assert "unknown tool 'email.send'" in str(err) and "3 attempt(s)" in str(err)
    assert not err.retryable
    assert len(model.calls) == 3


async def test_budget_stops_before_another_attempt(registry: ToolRegistry) -> None:
    model = ScriptedModel("{", GOOD_PLAN, usage=(100_000, 10_000))
    with pytest.raises(BudgetExhausted) as caught:
        await plan_goal("x", tools=registry, model=MODEL, completion=model, budget_usd=0.0001)
    assert caught.value.attempts == 1 and caught.value.spent_usd >= 0.0001
    assert model.remaining == 1  # the second answer was never asked for


async def test_fenced_json_and_prose_are_tolerated(registry: ToolRegistry) -> None:
    fenced = f"Here is the plan:\n```json\n{json.dumps(GOOD_PLAN, indent=2)}\n```\nEnjoy."
    with ScriptedModel(fenced) as model:
        result = await plan_goal("x", tools=registry, model=MODEL, completion=model)
    assert result.plan_json == GOOD_PLAN and len(result.attempts) == 1
    assert parse_answer("[1, 2]")[1][0].message.startswith("the answer is JSON but not an object")


async def test_the_request_carries_prompt_tools_and_structured_output(registry: ToolRegistry) -> None:
    with ScriptedModel(GOOD_PLAN) as model:
        await plan_goal("greet and count", tools=registry, model=MODEL, completion=model)
    call = model.calls[0]
    system = call.messages[0]["content"]
    for tool in registry.catalog():
        assert f"- {tool['name']}" in system
        assert json.dumps(tool["args_schema"], separators=(",", ":")) in system
    assert "${steps.<id>.output" in system and "Expose parallelism" in system and "depends_on" in system
    assert 'kind: "foreach"' in system and "max_concurrency" in system  # the format, from the schema
    assert call.messages[1]["content"].startswith("Goal:\ngreet and count")
    assert call.kwargs["model"] == MODEL and call.kwargs["num_retries"] == 0
    assert call.kwargs["response_format"]["type"] == "json_schema"
    schema = call.kwargs["response_format"]["json_schema"]["schema"]
    assert schema["type"] == "object" and "steps" in schema["properties"] and "ToolStep" in schema["$defs"]


async def test_json_mode_for_models_without_schema_support(registry: ToolRegistry) -> None:
    with ScriptedModel(GOOD_PLAN) as model:
        await plan_goal("x", tools=registry, model="openai/my-local-model", completion=model)
    assert model.calls[0].kwargs["response_format"] == {"type": "json_object"}


async def test_revision_sends_the_previous_plan_and_the_request(registry: ToolRegistry) -> None:
    revised = good_plan(name="renamed")
    with ScriptedModel(revised) as model:
        result = await plan_goal("call it renamed", tools=registry, model=MODEL, completion=model, previous=GOOD_PLAN)
    request = model.calls[0].messages[1]["content"]
    assert json.dumps(GOOD_PLAN, indent=2) in request and request.endswith("Request:\ncall it renamed")
    assert result.plan_json["name"] == "renamed"


async def test_no_model_names_the_variable(registry: ToolRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURAPLAN_MODEL", raising=False)
    with pytest.raises(ModelNotConfigured) as caught:
        await plan_goal("x", tools=registry, completion=ScriptedModel())
    assert caught.value.variable == "DURAPLAN_MODEL" and "DURAPLAN_MODEL" in str(caught.value)


@pytest.mark.parametrize(
    ("model", "variable"),
    [("openai/gpt-4o-mini", "OPENAI_API_KEY"), ("anthropic/claude-sonnet-4-5", "ANTHROPIC_API_KEY")],
)
async def test_missing_provider_key_names_it(
    model: str, variable: str, registry: ToolRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(ModelNotConfigured) as caught:
        await plan_goal("x", tools=registry, model=model)  # litellm itself: the key is checked first
    assert caught.value.variable == variable and variable in str(caught.value) and model in str(caught.value)


def test_the_prompt_example_is_a_valid_plan(registry: ToolRegistry) -> None:
    from planner.prompt import _EXAMPLE

    _, issues = check_plan(_EXAMPLE, tools=registry)
    assert issues == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ('{"name": "x", "steps": ' + "[" * 5000 + "]" * 5000 + "}", "it nests more than 100 levels deep"),
        ('{"name": "x", "steps": [], "n": ' + "9" * 5000 + "}", "Exceeds the limit (4300 digits)"),
    ],
)
async def test_an_answer_the_json_parser_cannot_hold_is_repaired(
    answer: str, reason: str, registry: ToolRegistry
) -> None:
    """A hostile or broken model nesting past the parser's stack, or writing a 5,000-digit number,
    raised RecursionError / ValueError out of plan_goal: a 500 from POST /v1/plan."""
    model = ScriptedModel(answer, GOOD_PLAN)
    with model:
        result = await plan_goal("greet and count", tools=registry, model=MODEL, completion=model)
    assert [a.ok for a in result.attempts] == [False, True]
    assert f"the answer is not valid JSON: {reason}" in model.calls[1].last_user_message
