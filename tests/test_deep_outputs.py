"""A step output nested deeper than a step can hold is never a retried RecursionError.

Found by probing: a service answering a POST with JSON nested ~950 deep (or 5,000) made the tool
activity raise RecursionError (parsing, or encoding the output), which was retryable: the POST was
sent three times. Now http.request keeps such a body as text, and any tool output nested deeper
than MAX_JSON_DEPTH fails its step at once (OutputTooDeep)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from executor import Duraplan, RunFailed, Settings, running_worker
from executor.lang.depth import MAX_JSON_DEPTH
from executor.service.devserver import DevServer
from executor.service.tenants import TenantRegistry
from tests.support.source_servers import Served
from tools import Tool, ToolContext, default_registry

pytestmark = pytest.mark.timeout(120)
RETRY = {"max_attempts": 3, "initial_interval": "100ms"}


async def _deep(args: dict[str, Any], ctx: ToolContext) -> Any:
    value: Any = 1
    for _ in range(int(args["depth"])):
        value = [value]
    return value


async def test_a_deep_answer_is_kept_as_text_and_the_post_sent_once(dev_server: DevServer, tmp_path: Path) -> None:
    posts: list[str] = []

    async def order(request: Request) -> Response:
        depth = int(request.query_params["depth"])
        posts.append(request.query_params["depth"])
        return Response("[" * depth + "]" * depth, media_type="application/json")

    tenants = TenantRegistry(tmp_path / "tenants.db")
    tenants.create("acme")
    tenants.grant_tools("acme", ["http.request", "deep.value"])
    registry = default_registry()
    registry.register(Tool("deep.value", "returns a list nested depth deep", {"type": "object"}, _deep))
    settings = Settings(home=tmp_path, task_queue=f"deep-{uuid.uuid4().hex[:8]}")
    with Served(Starlette(routes=[Route("/order", order, methods=["POST"])])) as served:
        tenants.set_private_egress("acme", [f"127.0.0.1:{served.port}"])

        def post(depth: int) -> dict[str, Any]:
            url = f"{served.origin}/order?depth={depth}"
            args = {"method": "POST", "url": url, "json": {}}
            return {"id": f"post{depth}", "kind": "tool", "tool": "http.request", "args": args, "retry": RETRY}

        output_of = {f"post{d}": f"${{steps.post{d}.output}}" for d in (950, 5000)}
        plan = {"name": "deep", "steps": [post(950), post(5000)], "output": output_of}
        deep_tool = {"id": "d", "kind": "tool", "tool": "deep.value", "args": {"depth": 300}, "retry": RETRY}
        async with running_worker(dev_server.client, settings, registry=registry, tenants=tenants):
            dp = Duraplan(dev_server.client, settings, registry, tenants=tenants)
            output = await (await dp.submit_plan(plan, tenant="acme", session="s")).result()
            failing = await dp.submit_plan({"name": "d", "steps": [deep_tool]}, tenant="acme", session="s")
            with pytest.raises(RunFailed, match="OutputTooDeep"):
                await failing.result()
            status = await failing.status()
    tenants.close()
    assert sorted(posts) == ["5000", "950"], "each POST sent once"
    for depth in (950, 5000):
        answer = output[f"post{depth}"]
        assert answer["json"] is None and answer["text"] == "[" * depth + "]" * depth
    [step] = status.steps
    assert step.attempts == 1 and f"nests more than {MAX_JSON_DEPTH} levels deep" in step.error.message
