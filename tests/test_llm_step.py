"""llm steps through litellm against the provider's real HTTP shape, mocked with respx only."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import litellm
import pytest
import pytest_asyncio
import respx

from executor import Duraplan, RunFailed, Settings, running_worker
from executor.service.devserver import DevServer

OPENAI = "https://api.openai.com/v1/chat/completions"


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


@pytest.fixture(autouse=True)
def offline_litellm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # litellm's aiohttp transport would bypass respx; the key is fake and never leaves the process.
    monkeypatch.setattr(litellm, "disable_aiohttp_transport", True)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    yield


@pytest_asyncio.fixture(loop_scope="session")
async def dp(dev_server: DevServer, tmp_path: Path) -> AsyncIterator[Duraplan]:
    settings = Settings(home=tmp_path, task_queue=f"llm-{uuid.uuid4().hex[:8]}", default_model="openai/gpt-4o-mini")
    async with running_worker(dev_server.client, settings):
        yield Duraplan(dev_server.client, settings)


def llm_plan(**step: Any) -> dict[str, Any]:
    base = {"id": "ask", "kind": "llm", "prompt": "Summarise ${input.topic}", "retry": {"initial_interval": "100ms"}}
    return {"name": "llm", "steps": [{**base, **step}], "output": "${steps.ask.output}"}


async def test_structured_output_through_the_provider_http(dp: Duraplan) -> None:
    schema = {"type": "object", "required": ["points"], "properties": {"points": {"type": "array"}}}
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(OPENAI).mock(return_value=httpx.Response(200, json=completion('{"points": ["a", "b"]}')))
        handle = await dp.submit_plan(
            llm_plan(output_schema=schema, system="Be brief."), tenant="t", session="s", inputs={"topic": "otters"}
        )
        assert await handle.result() == {"points": ["a", "b"]}
    assert route.called
    body = json.loads(route.calls.last.request.content)
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarise otters"},
    ]
    assert body["response_format"]["json_schema"]["schema"] == schema
    status = await handle.status()
    assert status["steps"][0]["detail"]["usage"] == {"prompt_tokens": 11, "completion_tokens": 7}


async def test_rate_limit_and_server_errors_are_retried(dp: Duraplan) -> None:
    with respx.mock() as mock:
        route = mock.post(OPENAI).mock(
            side_effect=[
                httpx.Response(429, json={"error": {"message": "slow down", "type": "rate_limit"}}),
                httpx.Response(503, json={"error": {"message": "busy", "type": "server_error"}}),
                httpx.Response(200, json=completion("plain text answer")),
            ]
        )
        handle = await dp.submit_plan(llm_plan(), tenant="t", session="s", inputs={"topic": "x"})
        assert await handle.result() == "plain text answer"
    assert route.call_count == 3
    assert (await handle.status())["steps"][0]["attempts"] == 3


@pytest.mark.parametrize("status_code", [400, 401])
async def test_client_errors_are_not_retried(dp: Duraplan, status_code: int) -> None:
    with respx.mock() as mock:
        route = mock.post(OPENAI).mock(
            return_value=httpx.Response(status_code, json={"error": {"message": "no", "type": "invalid_request_error"}})
        )
        handle = await dp.submit_plan(llm_plan(), tenant="t", session="s", inputs={"topic": "x"})
        with pytest.raises(RunFailed, match=f"LlmHttp{status_code}"):
            await handle.result()
    assert route.call_count == 1
    assert (await handle.status())["steps"][0]["attempts"] == 1


async def test_answer_breaking_the_schema_is_retried_then_fails(dp: Duraplan) -> None:
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    with respx.mock() as mock:
        route = mock.post(OPENAI).mock(return_value=httpx.Response(200, json=completion('{"n": "seven"}')))
        handle = await dp.submit_plan(
            llm_plan(output_schema=schema, retry={"max_attempts": 2, "initial_interval": "100ms"}),
            tenant="t",
            session="s",
            inputs={"topic": "x"},
        )
        with pytest.raises(RunFailed, match="LlmOutputInvalid"):
            await handle.result()
    assert route.call_count == 2


async def test_an_answer_too_deep_for_the_parser_fails_the_step_plainly(dp: Duraplan) -> None:
    """JSON nested past the parser's stack raised RecursionError out of the activity (a traceback
    in history) instead of the step's own LlmOutputInvalid."""
    deep = '{"n": ' + "[" * 5000 + "]" * 5000 + "}"
    with respx.mock() as mock:
        route = mock.post(OPENAI).mock(return_value=httpx.Response(200, json=completion(deep)))
        handle = await dp.submit_plan(
            llm_plan(output_schema={"type": "object"}, retry={"max_attempts": 1}),
            tenant="t",
            session="s",
            inputs={"topic": "x"},
        )
        with pytest.raises(RunFailed, match="LlmOutputInvalid: model answer is JSON nested too deep"):
            await handle.result()
    assert route.call_count == 1
