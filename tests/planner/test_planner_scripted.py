"""ScriptedModel, the test double for ``completion``: replays, records, and fails loudly."""

from __future__ import annotations

import json

import litellm
import pytest
from planner_kit import GOOD_PLAN

from planner import ProviderUnreachable, plan_goal
from planner.testing import ScriptedModel, ScriptError
from tools import ToolRegistry


async def test_replays_answers_as_litellm_responses_and_records_calls() -> None:
    model = ScriptedModel("plain text", {"a": 1}, usage=(10, 5))
    first = await model(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], temperature=0)
    second = await model(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "again"}])
    assert isinstance(first, litellm.ModelResponse)
    assert first.choices[0].message.content == "plain text"
    assert json.loads(second.choices[0].message.content) == {"a": 1}
    assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (10, 5)
    assert litellm.completion_cost(completion_response=first) > 0
    assert [c.last_user_message for c in model.calls] == ["hi", "again"]
    assert model.calls[0].kwargs == {"model": "openai/gpt-4o-mini", "temperature": 0}
    model.assert_all_consumed()


async def test_an_unexpected_extra_call_fails_loudly() -> None:
    model = ScriptedModel("only one")
    await model(model="m", messages=[])
    with pytest.raises(ScriptError, match="unexpected call #2"):
        await model(model="m", messages=[{"role": "user", "content": "one more?"}])
    # Even if the code under test had swallowed it, the check still fails.
    with pytest.raises(ScriptError, match="1 unexpected call"):
        model.assert_all_consumed()


async def test_unexpected_call_is_not_masked_as_a_provider_error(registry: ToolRegistry) -> None:
    model = ScriptedModel("{")  # one invalid answer, but plan_goal will want a second
    with pytest.raises(ScriptError):
        await plan_goal("x", tools=registry, model="openai/gpt-4o-mini", completion=model, max_attempts=2)


def test_unconsumed_answers_fail_the_context_manager() -> None:
    with pytest.raises(ScriptError, match="1 scripted answer"), ScriptedModel("never asked for"):
        pass
    with pytest.raises(ScriptError, match="2 scripted answer"):
        ScriptedModel("a", "b").assert_all_consumed()


async def test_async_context_manager_and_scripted_exceptions(registry: ToolRegistry) -> None:
    error = litellm.InternalServerError("boom", llm_provider="openai", model="gpt-4o-mini")
    async with ScriptedModel(error) as model:
        with pytest.raises(ProviderUnreachable, match="boom"):
            await plan_goal("x", tools=registry, model="openai/gpt-4o-mini", completion=model)
    with pytest.raises(ScriptError):
        async with ScriptedModel(GOOD_PLAN):
            pass
