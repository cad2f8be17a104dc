"""llm() from a script: inline (in the segment's activity) and in parallel(), through litellm
against the provider's real HTTP shape, mocked with respx only."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import litellm
import pytest
import pytest_asyncio
import respx
from test_llm_step import OPENAI, completion

from executor import Duraplan, RunFailed, Settings, running_worker
from executor.service.devserver import DevServer

CODE = """
verdict = llm('Is ' + topic + ' cute?', output_schema={'type': 'object', 'required': ['cute']})
more = parallel([call('llm', 'one word for ' + topic), call('llm', 'another word for ' + topic)])
{'cute': verdict['cute'], 'words': more}
"""


@pytest.fixture(autouse=True)
def offline_litellm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(litellm, "disable_aiohttp_transport", True)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    yield


@pytest_asyncio.fixture(loop_scope="session")
async def dp(dev_server: DevServer, tmp_path: Path) -> AsyncIterator[Duraplan]:
    settings = Settings(home=tmp_path, task_queue=f"sllm-{uuid.uuid4().hex[:8]}", default_model="openai/gpt-4o-mini")
    async with running_worker(dev_server.client, settings):
        yield Duraplan(dev_server.client, settings)


async def test_llm_inline_and_in_parallel(dp: Duraplan) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][-1]["content"]
        content = '{"cute": true}' if prompt.startswith("Is ") else prompt.split()[0]
        return httpx.Response(200, json=completion(content))

    plan = {
        "name": "script-llm",
        "steps": [{"id": "s", "kind": "script", "code": CODE, "inputs": {"topic": "otters"}}],
        "output": "${steps.s.output}",
    }
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(OPENAI).mock(side_effect=answer)
        handle = await dp.submit_plan(plan, tenant="t", session="s")
        assert await handle.result(timeout=60) == {"cute": True, "words": ["one", "another"]}
    assert route.call_count == 3
    calls = (await handle.status())["steps"][0]["calls"]
    assert [(c["kind"], c["state"]) for c in calls] == [("llm", "completed"), ("parallel", "completed")]


async def test_a_computed_output_schema_that_cannot_be_used_fails_before_the_model_is_called(dp: Duraplan) -> None:
    """A script's output_schema known only at run time is checked like a plan's: a self-referencing
    one recursed until RecursionError after the model was paid for, and was retried."""
    plan = {
        "name": "script-llm-schema",
        "steps": [
            {
                "id": "s",
                "kind": "script",
                "code": "llm('anything', output_schema=schema)",
                "inputs": {"schema": {"$ref": "#"}},
            }
        ],
    }
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(OPENAI).mock(return_value=httpx.Response(200, json=completion("{}")))
        handle = await dp.submit_plan(plan, tenant="t", session="s")
        with pytest.raises(RunFailed) as failed:
            await handle.result(timeout=60)
    assert route.call_count == 0
    step = (await handle.status())["steps"][0]
    assert step["error"]["type"] == "InvalidSchema" and "cycle" in step["error"]["message"], step["error"]
    assert step["calls"][0]["attempts"] == 1, "refused once, not retried"
    assert "InvalidSchema" in str(failed.value)


async def test_a_computed_model_that_names_an_endpoint_is_refused_before_any_call(dp: Duraplan) -> None:
    plan = {
        "name": "script-llm-model",
        "steps": [{"id": "s", "kind": "script", "code": "llm('anything', model=m)", "inputs": {"m": "ollama/llama3"}}],
    }
    with respx.mock(assert_all_called=False) as mock:
        route = mock.route().mock(return_value=httpx.Response(500))  # any request at all
        handle = await dp.submit_plan(plan, tenant="t", session="s")
        with pytest.raises(RunFailed):
            await handle.result(timeout=60)
    assert route.call_count == 0
    step = (await handle.status())["steps"][0]
    assert step["error"]["type"] == "ModelRefused" and "own host" in step["error"]["message"], step["error"]
