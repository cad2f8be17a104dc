"""plan_goal through litellm against the real HTTP shapes of OpenAI and Anthropic (respx, no network)."""

from __future__ import annotations

import json

import httpx
import pytest
import respx
from planner_kit import ANTHROPIC_URL, GOOD_PLAN, OPENAI_URL, anthropic_message, good_plan, openai_completion

from planner import PlannerError, ProviderRejected, ProviderUnreachable, RateLimited, plan_goal
from tools import ToolRegistry

pytestmark = pytest.mark.usefixtures("provider_keys")


async def test_openai_chat_completions(registry: ToolRegistry) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(OPENAI_URL).respond(200, json=openai_completion(json.dumps(GOOD_PLAN)))
        result = await plan_goal("greet and count", tools=registry, model="openai/gpt-4o-mini")
    assert route.called and route.call_count == 1
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer sk-test-not-real"
    body = json.loads(request.content)
    assert body["model"] == "gpt-4o-mini"
    system, user = body["messages"]
    assert system["role"] == "system" and user["content"].startswith("Goal:\ngreet and count")
    for name in ("debug.echo", "transform", "http.request", "kv.put"):
        assert f"- {name}" in system["content"]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "duraplan_plan"
    assert fmt["json_schema"]["schema"]["required"] == ["name", "steps"]
    assert result.plan_json == GOOD_PLAN
    assert (result.prompt_tokens, result.completion_tokens) == (1200, 300)
    assert result.cost_usd > 0  # from litellm's (bundled) price list


async def test_openai_repair_continues_the_conversation(registry: ToolRegistry) -> None:
    bad = good_plan()
    bad["steps"][0]["tool"] = "email.send"
    with respx.mock as mock:
        route = mock.post(OPENAI_URL)
        route.side_effect = [
            httpx.Response(200, json=openai_completion(json.dumps(bad))),
            httpx.Response(200, json=openai_completion(json.dumps(GOOD_PLAN))),
        ]
        result = await plan_goal("greet and count", tools=registry, model="openai/gpt-4o-mini")
    assert route.call_count == 2 and len(result.attempts) == 2
    second = json.loads(route.calls[1].request.content)["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert "/steps/0/tool (step 'greet'): unknown tool 'email.send'" in second[3]["content"]


async def test_anthropic_messages(registry: ToolRegistry) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(ANTHROPIC_URL).respond(200, json=anthropic_message(GOOD_PLAN))
        result = await plan_goal("greet and count", tools=registry, model="anthropic/claude-sonnet-4-5")
    assert route.called
    request = route.calls.last.request
    assert request.headers["x-api-key"] == "sk-ant-test-not-real"
    body = json.loads(request.content)
    assert body["model"] == "claude-sonnet-4-5"
    system = "".join(block["text"] for block in body["system"])
    assert "- debug.echo" in system and "Expose parallelism" in system
    assert body["messages"][0]["role"] == "user"
    # Structured output the Anthropic way: one forced tool whose input schema is the plan's.
    assert body["tool_choice"] == {"type": "tool", "name": "json_tool_call"}
    (tool,) = body["tools"]
    assert tool["name"] == "json_tool_call" and tool["input_schema"]["required"] == ["name", "steps"]
    assert result.plan_json == GOOD_PLAN
    assert (result.prompt_tokens, result.completion_tokens) == (1500, 400)
    assert result.cost_usd > 0


@pytest.mark.parametrize(
    ("status", "error", "retryable"),
    [
        (429, RateLimited, True),
        (500, ProviderUnreachable, True),
        (503, ProviderUnreachable, True),
        (400, ProviderRejected, False),
        (401, ProviderRejected, False),
        (403, ProviderRejected, False),
    ],
)
async def test_provider_errors_map_to_retry_semantics(
    status: int, error: type[PlannerError], retryable: bool, registry: ToolRegistry
) -> None:
    headers = {"retry-after": "7"} if status == 429 else {}
    with respx.mock as mock:
        route = mock.post(OPENAI_URL).respond(status, json={"error": {"message": "nope", "type": "x"}}, headers=headers)
        with pytest.raises(PlannerError) as caught:
            await plan_goal("x", tools=registry, model="openai/gpt-4o-mini")
    assert type(caught.value) is error and caught.value.retryable is retryable
    assert route.call_count == 1  # litellm's own retries are off
    if status == 429:
        assert isinstance(caught.value, RateLimited) and caught.value.retry_after == 7.0


async def test_anthropic_overloaded_and_bad_key(registry: ToolRegistry) -> None:
    with respx.mock as mock:
        route = mock.post(ANTHROPIC_URL)
        route.side_effect = [
            httpx.Response(529, json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
            httpx.Response(401, json={"type": "error", "error": {"type": "authentication_error", "message": "bad"}}),
        ]
        with pytest.raises(ProviderUnreachable):
            await plan_goal("x", tools=registry, model="anthropic/claude-sonnet-4-5")
        with pytest.raises(ProviderRejected):
            await plan_goal("x", tools=registry, model="anthropic/claude-sonnet-4-5")
    assert route.call_count == 2


async def test_connection_failure_is_retryable(registry: ToolRegistry) -> None:
    with respx.mock as mock:
        mock.post(OPENAI_URL).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(ProviderUnreachable) as caught:
            await plan_goal("x", tools=registry, model="openai/gpt-4o-mini")
    assert caught.value.retryable


async def test_local_openai_compatible_server(registry: ToolRegistry) -> None:
    with respx.mock as mock:
        route = mock.post("http://localhost:8000/v1/chat/completions").respond(
            200, json=openai_completion(json.dumps(GOOD_PLAN), model="llama-3-8b")
        )
        result = await plan_goal("x", tools=registry, model="openai/llama-3-8b", api_base="http://localhost:8000/v1")
    body = json.loads(route.calls.last.request.content)
    assert body["model"] == "llama-3-8b" and body["response_format"] == {"type": "json_object"}
    assert result.plan_json == GOOD_PLAN and result.cost_usd == 0.0  # no price for a local model
