"""Tenant tool sources end to end: a real MCP server (streamable HTTP and stdio) and a real HTTP
service with an OpenAPI document, registered for a tenant, planned over (scripted model) and run
on the dev server: retries, failures, a schema change after planning, tenant isolation."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from duraplan.api import create_app
from duraplan.worker import running_worker
from executor import Duraplan, PlanInvalid, RunFailed, Settings
from executor.service.devserver import DevServer
from executor.service.tenants import TenantRegistry
from planner import ChatSession
from planner.testing import ScriptedModel
from tools import ToolRegistry, default_registry
from tools.registry import Tool
from tools.sources import SourceSpec

SUPPORT = Path(__file__).resolve().parent / "support"
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

from source_servers import Seen, Served, build_mcp, build_openapi  # noqa: E402

pytestmark = pytest.mark.timeout(180)
MODEL = "openai/gpt-4o-mini"
TOKEN = "s3cret-shop-token"

SHOP_PLAN = {
    "name": "shop",
    "steps": [
        {"id": "sum", "kind": "tool", "tool": "shop.add", "args": {"a": 2, "b": 3}},
        {"id": "ticket", "kind": "tool", "tool": "shop.create_ticket", "args": {"title": "restock"}},
        {
            "id": "retry",
            "kind": "tool",
            "tool": "shop.flaky",
            "args": {},
            "retry": {"max_attempts": 3, "initial_interval": "100ms"},
        },
    ],
    "output": {"sum": "${steps.sum.output.sum}", "ticket": "${steps.ticket.output}", "flaky": "${steps.retry.output}"},
}


@dataclass
class Env:
    dp: Duraplan
    tenants: TenantRegistry
    settings: Settings
    model: ScriptedModel
    seen: Seen
    mcp: Served
    api: Served


@pytest.fixture
def servers() -> Iterator[tuple[Seen, Served, Served, Any]]:
    seen = Seen()
    mcp = build_mcp(seen)
    with Served(mcp.streamable_http_app()) as m, Served(build_openapi(seen)) as o:
        yield seen, m, o, mcp


@pytest_asyncio.fixture(loop_scope="session")
async def env(dev_server: DevServer, tmp_path: Path, servers: tuple[Seen, Served, Served, Any]) -> AsyncIterator[Env]:
    seen, mcp, api, _ = servers
    tenants = TenantRegistry(tmp_path / "tenants.db")
    for tenant in ("acme", "globex"):
        tenants.create(tenant)
        # Off by default: an administrator names the local servers these tests reach.
        tenants.set_private_egress(tenant, [f"127.0.0.1:{mcp.port}", f"127.0.0.1:{api.port}"])
        tenants.grant_tools(tenant, ["shop.*", "billing.*"])
    tenants.set_secret("acme", "SHOP_TOKEN", TOKEN)
    settings = Settings(home=tmp_path, task_queue=f"sources-{uuid.uuid4().hex[:8]}", mcp_stdio=True)
    model = ScriptedModel()
    async with running_worker(dev_server.client, settings, tenants=tenants, completion=model):
        dp = Duraplan(dev_server.client, settings, tenants=tenants)
        yield Env(dp, tenants, settings, model, seen, mcp, api)
    tenants.close()


def shop_spec(served: Served) -> SourceSpec:
    return SourceSpec("shop", "mcp", f"{served.origin}/mcp", headers={"Authorization": "Bearer {$secret: SHOP_TOKEN}"})


async def history_text(dp: Duraplan, tenant: str, run_id: str) -> str:
    handle = dp.client.get_workflow_handle(f"{tenant}/{run_id}")
    return json.dumps((await handle.fetch_history()).to_json_dict())


def step(status: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in status["steps"] if s["id"] == step_id)


async def test_mcp_tools_are_planned_and_run_like_builtins(env: Env) -> None:
    catalog = await env.dp.sources.add("acme", shop_spec(env.mcp))
    entries = {e["name"]: e for e in env.dp.catalog_for("acme")}
    # Hints decide side effects: read-only add has none; the rest have (MCP's defaults are pessimistic).
    assert entries["shop.add"]["side_effects"] is False and entries["shop.add"]["source"] == "shop"
    assert entries["shop.create_ticket"]["side_effects"] is True
    assert entries["shop.create_ticket"]["annotations"] == {"destructiveHint": False, "idempotentHint": True}
    assert entries["shop.add"]["args_schema"]["required"] == ["a", "b"]
    assert entries["shop.add"]["schema_hash"] == catalog.get("shop.add").schema_hash  # type: ignore[union-attr]

    env.model.add(SHOP_PLAN)
    chat = ChatSession(env.dp, tenant="acme", session="s1", model=MODEL, run_task_queue=env.settings.task_queue)
    with env.model:
        revision = await chat.send("add 2 and 3, open a ticket, then poke the flaky tool")
    assert revision.plan == SHOP_PLAN
    system = env.model.calls[0].messages[0]["content"]
    assert "shop.add: Add two integers." in system and "shop.create_ticket (side effects)" in system

    run = await chat.submit()
    result = await run.result(timeout=60)
    assert result == {"sum": 5, "ticket": {"ticket": "T-1", "title": "restock"}, "flaky": {"text": "done"}}
    status = await run.status()
    assert step(status, "retry")["attempts"] == 3, "isError with _meta retryable was retried"
    # The idempotency key went along in the request's _meta; the secret only in the header.
    [key] = env.seen.keys["create_ticket"]
    assert run.run_id in key
    assert f"Bearer {TOKEN}" in env.seen.auth
    assert TOKEN not in await history_text(env.dp, "acme", run.run_id)
    assert TOKEN not in json.dumps(env.dp.sources.list("acme"))

    # A tool error without "retryable" is final: one call, the run fails naming the error type.
    broken = {
        "name": "broken",
        "steps": [{"id": "b", "kind": "tool", "tool": "shop.broken", "args": {}, "retry": {"max_attempts": 3}}],
    }
    handle = await env.dp.submit_plan(broken, tenant="acme", session="s1")
    with pytest.raises(RunFailed, match="McpToolError"):
        await handle.result(timeout=60)
    assert env.seen.calls["broken"] == 1
    assert step(await handle.status(), "b")["attempts"] == 1

    # A server that echoes the credentials in its error: redacted before the error is recorded.
    leak = {"name": "leak", "steps": [{"id": "l", "kind": "tool", "tool": "shop.leak", "args": {}}]}
    handle = await env.dp.submit_plan(leak, tenant="acme", session="s1")
    with pytest.raises(RunFailed, match=r"denied for Bearer \*\*\*") as leaked:
        await handle.result(timeout=60)
    assert TOKEN not in str(leaked.value) and TOKEN not in await history_text(env.dp, "acme", handle.run_id)


async def test_another_tenant_cannot_see_or_call_a_source(env: Env) -> None:
    await env.dp.sources.add("acme", shop_spec(env.mcp))
    assert "shop.add" not in env.dp.tools_for("globex").names()  # granted "shop.*", but no such source
    with pytest.raises(PlanInvalid) as invalid:
        await env.dp.submit_plan(SHOP_PLAN, tenant="globex", session="s")
    assert {i.code for i in invalid.value.issues} == {"unknown_tool"}

    # Past validation (a client that believes shop.add exists), the worker still refuses it.
    fake = Tool("shop.add", "x", {"type": "object"}, handler=lambda a, c: None, local=False)  # type: ignore[arg-type,return-value]
    base = default_registry()
    believer = Duraplan(env.dp.client, env.settings, ToolRegistry([*(base.get(n) for n in base.names()), fake]))
    handle = await believer.submit_plan(
        {"name": "sneak", "steps": [{"id": "s", "kind": "tool", "tool": "shop.add", "args": {"a": 1, "b": 1}}]},
        tenant="globex",
        session="s",
    )
    with pytest.raises(RunFailed, match="UnknownToolError"):
        await handle.result(timeout=60)
    assert env.seen.calls["add"] == 0

    # The HTTP API: each tenant sees its own catalog and sources; stdio cannot be added there.
    keys = {t: env.tenants.issue_key(t, label="t") for t in ("acme", "globex")}
    app = create_app(env.dp, env.tenants)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:

        def auth(tenant: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {keys[tenant]}"}

        acme_tools = (await http.get("/v1/tools", headers=auth("acme"))).json()
        globex_tools = (await http.get("/v1/tools", headers=auth("globex"))).json()
        assert {t["name"]: t.get("source") for t in acme_tools}["shop.add"] == "shop"
        assert not [t for t in globex_tools if t["name"].startswith("shop.")]
        assert (await http.get("/v1/sources", headers=auth("globex"))).json() == []
        stdio = {"name": "local", "mcp_command": "python server.py"}
        refused = await http.post("/v1/sources", json=stdio, headers=auth("globex"))
        assert refused.status_code == 400 and "mcp_command" in refused.json()["detail"]
        added = await http.post(
            "/v1/sources",
            json={"name": "billing", "openapi_url": f"{env.api.origin}/openapi.json"},
            headers=auth("globex"),
        )
        assert added.status_code == 201, added.text
        assert "billing.create_order" in added.json()["tools"]
        assert (await http.delete("/v1/sources/billing", headers=auth("acme"))).status_code == 404
        assert (await http.delete("/v1/sources/billing", headers=auth("globex"))).status_code == 204


async def test_a_failed_run_is_replanned_onto_the_tenants_source_tools(env: Env) -> None:
    """Replanning shows the model, and validates the revision against, the tenant's own tools:
    its sources included (not only the worker's), and not another tenant's."""
    await env.dp.sources.add("acme", shop_spec(env.mcp))
    failing = {
        "name": "sum-it",
        "replan": {"max_revisions": 1, "model": MODEL},
        "steps": [{"id": "sum", "kind": "tool", "tool": "shop.broken", "args": {}}],
        "output": "${steps.sum.output}",
    }
    revision = {**failing, "steps": [{"id": "sum", "kind": "tool", "tool": "shop.add", "args": {"a": 2, "b": 3}}]}
    env.model.add(revision)
    with env.model:
        handle = await env.dp.submit_plan(failing, tenant="acme", session="s", run_id=f"rp-{uuid.uuid4().hex[:6]}")
        assert await handle.result(timeout=60) == {"sum": 5}
    assert "shop.add: Add two integers." in env.model.calls[-1].messages[0]["content"]

    # globex has a source of its own (billing), not acme's shop: a revision using shop.add is
    # refused there (the model is not shown it either), so the run fails.
    await env.dp.sources.add("globex", SourceSpec("billing", "openapi", f"{env.api.origin}/openapi.json"))
    rejected = {**failing, "steps": [{"id": "sum", "kind": "tool", "tool": "billing.reject", "args": {}}]}
    env.model.add(revision, revision, revision)  # the planner's repair loop asks three times
    with env.model:
        handle = await env.dp.submit_plan(rejected, tenant="globex", session="s", run_id=f"rp-{uuid.uuid4().hex[:6]}")
        with pytest.raises(RunFailed):
            await handle.result(timeout=60)
    prompt = env.model.calls[-1].messages[0]["content"]
    assert "billing.reject" in prompt and "shop.add" not in prompt
    assert "unknown_tool" in env.model.calls[-1].last_user_message, "the revision was refused for naming shop.add"
    assert env.seen.calls["add"] == 1


async def test_openapi_operations_run_with_keys_retries_and_status_mapping(env: Env) -> None:
    await env.dp.sources.add("acme", SourceSpec("billing", "openapi", f"{env.api.origin}/openapi.json"))
    tools = {e["name"]: e for e in env.dp.sources.entries("acme")}
    assert tools["billing.get_item"]["side_effects"] is False and tools["billing.create_order"]["side_effects"]
    assert tools["billing.create_order"]["args_schema"]["required"] == ["body"]
    plan = {
        "name": "order",
        "steps": [
            {"id": "item", "kind": "tool", "tool": "billing.get_item", "args": {"item_id": "a-1", "verbose": True}},
            {"id": "order", "kind": "tool", "tool": "billing.create_order", "args": {"body": {"sku": "a-1", "qty": 2}}},
            {
                "id": "wobbly",
                "kind": "tool",
                "tool": "billing.unstable",
                "args": {},
                "retry": {"max_attempts": 3, "initial_interval": "100ms"},
            },
        ],
        "output": {"item": "${steps.item.output.body}", "order": "${steps.order.output.body}"},
    }
    handle = await env.dp.submit_plan(plan, tenant="acme", session="s")
    result = await handle.result(timeout=60)
    assert result == {
        "item": {"id": "a-1", "price": 7, "verbose": True},
        "order": {"order": "O-1", "sku": "a-1", "qty": 2},
    }
    assert step(await handle.status(), "wobbly")["attempts"] == 2, "503 was retried"
    [key] = env.seen.keys["createOrder"]
    assert handle.run_id in key and "getItem" not in env.seen.keys, "Idempotency-Key on side effects only"

    rejected = {
        "name": "reject",
        "steps": [{"id": "r", "kind": "tool", "tool": "billing.reject", "args": {}, "retry": {"max_attempts": 3}}],
    }
    handle = await env.dp.submit_plan(rejected, tenant="acme", session="s")
    with pytest.raises(RunFailed, match="HttpStatus400"):
        await handle.result(timeout=60)
    assert env.seen.calls["reject"] == 1


async def test_a_tool_whose_schema_changed_after_planning_fails_clearly(
    env: Env, servers: tuple[Seen, Served, Served, Any]
) -> None:
    mcp = servers[3]
    await env.dp.sources.add("acme", shop_spec(env.mcp))
    plan = {"name": "sum", "steps": [{"id": "sum", "kind": "tool", "tool": "shop.add", "args": {"a": 1, "b": 2}}]}
    env.model.add(plan)
    chat = ChatSession(env.dp, tenant="acme", session="s2", model=MODEL, run_task_queue=env.settings.task_queue)
    with env.model:
        await chat.send("add 1 and 2")

    # The server changes add's schema; nobody refreshed the catalog: the worker sees it live.
    mcp.remove_tool("add")

    @mcp.tool(name="add")
    def add3(a: int, b: int, c: int) -> int:
        return a + b + c

    stale = await chat.submit()
    with pytest.raises(RunFailed, match="ToolSchemaChanged") as failed:
        await stale.result(timeout=60)
    assert "shop.add" in str(failed.value) and "plan again" in str(failed.value)
    assert step(await stale.status(), "sum")["attempts"] == 1, "not retried"

    # After a refresh the catalog has the new schema: the chat submit goes through the start path,
    # which validates the old plan against it and refuses it before anything starts (as a direct
    # submit of that plan would be refused).
    refreshed = await env.dp.sources.refresh("acme", "shop")
    assert refreshed.get("shop.add").args_schema["required"] == ["a", "b", "c"]  # type: ignore[union-attr]
    with pytest.raises(PlanInvalid, match="'c' is a required property"):
        await chat.submit()
    assert env.seen.calls["add"] == 0, "the changed tool was never called with the old arguments"

    # Planned against the current catalog, the same tool runs.
    fresh = {
        "name": "sum3",
        "steps": [{"id": "s", "kind": "tool", "tool": "shop.add", "args": {"a": 1, "b": 2, "c": 3}}],
        "output": "${steps.s.output}",
    }
    handle = await env.dp.submit_plan(fresh, tenant="acme", session="s")
    assert await handle.result(timeout=60) == {"result": 6}


async def test_stdio_servers_only_where_the_operator_allows(env: Env) -> None:
    command = (sys.executable, str(SUPPORT / "stdio_mcp_server.py"))
    strict = Duraplan(env.dp.client, Settings(home=env.settings.home), tenants=env.tenants)
    with pytest.raises(ValueError, match="DURAPLAN_MCP_STDIO"):
        await strict.sources.add("acme", SourceSpec("local", "mcp_stdio", command=command))

    await env.dp.sources.add("acme", SourceSpec("local", "mcp_stdio", command=command))
    env.tenants.grant_tools("acme", ["local.*"])
    plan = {
        "name": "shout",
        "steps": [{"id": "s", "kind": "tool", "tool": "local.shout", "args": {"text": "hi"}}],
        "output": "${steps.s.output.text}",
    }
    handle = await env.dp.submit_plan(plan, tenant="acme", session="s")
    assert await handle.result(timeout=60) == "HI"


async def test_a_worker_killed_during_a_call_repeats_it_once_with_the_same_key(
    dev_server: DevServer, tmp_path: Path
) -> None:
    import asyncio
    import os
    import signal
    import subprocess

    release = tmp_path / "release"
    seen = Seen()
    with Served(build_mcp(seen, release).streamable_http_app()) as served:
        tenants = TenantRegistry(tmp_path / "tenants.db")
        tenants.create("acme")
        tenants.set_private_egress("acme", [f"127.0.0.1:{served.port}"])
        tenants.grant_tools("acme", ["shop.*"])
        tenants.set_secret("acme", "SHOP_TOKEN", TOKEN)
        queue = f"sources-kill-{uuid.uuid4().hex[:8]}"
        dp = Duraplan(dev_server.client, Settings(home=tmp_path, task_queue=queue), tenants=tenants)
        await dp.sources.add("acme", shop_spec(served))
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "DURAPLAN_ADDRESS": dev_server.address,
            "DURAPLAN_TASK_QUEUE": queue,
            "DURAPLAN_HOME": str(tmp_path),
            "DURAPLAN_TENANCY": "1",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }

        def worker() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "duraplan.cli", "worker"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )

        plan = {
            "name": "hold",
            "steps": [
                {"id": "h", "kind": "tool", "tool": "shop.hold", "args": {}, "retry": {"initial_interval": "100ms"}}
            ],
            "output": "${steps.h.output}",
        }
        first, second = worker(), None
        try:
            handle = await dp.submit_plan(plan, tenant="acme", session="s")
            deadline = asyncio.get_running_loop().time() + 60
            while seen.calls["hold"] < 1:  # the call reached the server and is held there
                assert asyncio.get_running_loop().time() < deadline, "the call never arrived"
                await asyncio.sleep(0.05)
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
            release.touch()
            second = worker()
            assert await handle.result(timeout=120) == {"held": 2}
            first_key, second_key = seen.keys["hold"]
            assert first_key == second_key and handle.run_id in first_key
            # re-dispatched on the new worker; a killed worker is not an attempt (issue 11 item 3)
            assert step(await handle.status(), "h")["attempts"] == 1
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=15)
            tenants.close()
