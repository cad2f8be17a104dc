"""One start path: the same oversized plan is refused by the tenant's ``max_steps_per_run`` quota on
every way a run starts (Python, HTTP, MCP, CLI, submit_goal, chat submit over Python and HTTP,
restart, subplan children, replanning), with the same error and nothing started."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import litellm
import pytest
import pytest_asyncio
from mcp import Client as McpClient
from mcp.types import TextContent
from test_surfaces import cli_env

from duraplan.api import create_app
from duraplan.mcp_server import create_server
from duraplan.worker import running_worker
from executor import Duraplan, RunFailed, Settings, submit_plan
from executor.service.devserver import DevServer
from executor.service.tenants import QuotaExceeded, TenantRegistry
from planner import ChatSession, submit_goal
from planner.testing import ScriptedModel

litellm.disable_aiohttp_transport = True
ROOT = Path(__file__).resolve().parents[1]
CAP = 10
MODEL = "openai/scripted"


def oversized(name: str = "big") -> dict[str, Any]:
    return {"name": name, "limits": {"max_steps": 50}, "steps": [{"id": "a", "kind": "set", "value": 1}]}


class Slot:
    """The worker's and the app's model: the test's ScriptedModel."""

    def __init__(self) -> None:
        self.model = ScriptedModel()

    async def __call__(self, **kwargs: Any) -> Any:
        return await self.model(**kwargs)


@dataclass
class Env:
    dp: Duraplan
    tenants: TenantRegistry
    settings: Settings
    slot: Slot
    address: str

    def tenant(self) -> str:
        name = f"sp-{uuid.uuid4().hex[:8]}"
        self.tenants.create(name)
        self.tenants.grant_tools(name, ["debug.*"])
        self.tenants.set_quotas(name, max_steps_per_run=CAP)
        return name

    async def nothing_started(self, tenant: str) -> None:
        assert await self.dp.list_runs(tenant=tenant) == []


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    home = tmp_path_factory.mktemp("start-path")
    settings = Settings(home=home, task_queue=f"start-{uuid.uuid4().hex[:8]}", default_model=MODEL, tenancy=True)
    tenants = TenantRegistry(home / "tenants.db")
    slot = Slot()
    async with running_worker(dev_server.client, settings, tenants=tenants, completion=slot):
        yield Env(Duraplan(dev_server.client, settings, tenants=tenants), tenants, settings, slot, dev_server.address)
    tenants.close()


def assert_quota(exc: BaseException) -> None:
    assert isinstance(exc, QuotaExceeded), repr(exc)
    assert exc.limit == "max_steps_per_run" and "limits.max_steps=50" in str(exc)


async def test_python_submit_plan_and_duraplan_submit_plan(env: Env) -> None:
    tenant = env.tenant()
    with pytest.raises(QuotaExceeded) as method:
        await env.dp.submit_plan(oversized(), tenant=tenant, session="s")
    assert_quota(method.value)
    with pytest.raises(QuotaExceeded) as function:
        await submit_plan(oversized(), tenant=tenant, session="s", duraplan=env.dp)
    assert_quota(function.value)
    await env.nothing_started(tenant)


async def test_http_submit(env: Env) -> None:
    tenant = env.tenant()
    key = env.tenants.issue_key(tenant, label="t")
    app = create_app(env.dp, env.tenants, completion=env.slot, model=MODEL, run_task_queue=env.settings.task_queue)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        response = await http.post(
            "/v1/runs", json={"plan": oversized(), "session": "s"}, headers={"Authorization": f"Bearer {key}"}
        )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["type"].endswith("/quota") and body["limit"] == "max_steps_per_run"
    await env.nothing_started(tenant)


async def test_mcp_submit(env: Env) -> None:
    tenant = env.tenant()
    async with McpClient(create_server(env.dp, tenant=tenant)) as client:
        result = await client.call_tool("submit_plan", {"plan": oversized(), "session": "s"})
    text = " ".join(c.text for c in result.content if isinstance(c, TextContent))
    assert result.is_error and "exceeded quota max_steps_per_run" in text, text
    await env.nothing_started(tenant)


async def test_cli_run(env: Env, tmp_path: Path) -> None:
    tenant = env.tenant()
    plan = tmp_path / "big.json"
    plan.write_text(json.dumps(oversized()))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "duraplan.cli",
        "run",
        str(plan),
        "--tenant",
        tenant,
        "--no-wait",
        cwd=ROOT,
        env=cli_env(env.address, env.settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, err
    assert b"exceeded quota max_steps_per_run" in err and b"Traceback" not in err
    await env.nothing_started(tenant)


async def test_chat_submit_is_refused_exactly_like_a_direct_submit(env: Env) -> None:
    tenant = env.tenant()
    env.slot.model = ScriptedModel(oversized("chat"), oversized("goal"), oversized("http"))
    chat = ChatSession(env.dp, tenant=tenant, session="chat", run_task_queue=env.settings.task_queue)
    await chat.send("plan it")
    with pytest.raises(QuotaExceeded) as chat_refusal:
        await chat.submit()
    assert_quota(chat_refusal.value)
    with pytest.raises(QuotaExceeded) as direct:
        await env.dp.submit_plan(oversized("chat"), tenant=tenant, session="chat")
    assert str(chat_refusal.value) == str(direct.value)

    with pytest.raises(QuotaExceeded) as goal:
        await submit_goal(
            "plan it", tenant=tenant, session="goal", duraplan=env.dp, run_task_queue=env.settings.task_queue
        )
    assert_quota(goal.value)

    key = env.tenants.issue_key(tenant, label="t")
    app = create_app(env.dp, env.tenants, completion=env.slot, model=MODEL, run_task_queue=env.settings.task_queue)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        planned = await http.post("/v1/chats/web/messages", json={"text": "plan it"}, headers=headers)
        assert planned.status_code == 200, planned.text
        refused = await http.post("/v1/chats/web/submit", json={}, headers=headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["limit"] == "max_steps_per_run"
    assert env.slot.model.remaining == 0
    await env.nothing_started(tenant)


async def test_restart_meets_the_tenants_current_quota(env: Env) -> None:
    tenant = env.tenant()
    plan = {**oversized(), "limits": {"max_steps": 8}}
    handle = await env.dp.submit_plan(plan, tenant=tenant, session="s")
    await handle.result()
    env.tenants.set_quotas(tenant, max_steps_per_run=5)
    with pytest.raises(QuotaExceeded) as refused:
        await handle.restart()
    assert refused.value.limit == "max_steps_per_run"
    assert (await handle.status()).generation == 0  # the run is untouched


async def test_a_subplan_child_is_checked_with_its_parent(env: Env) -> None:
    tenant = env.tenant()
    parent = {"name": "parent", "steps": [{"id": "child", "kind": "subplan", "plan": oversized("child")}]}
    with pytest.raises(QuotaExceeded) as refused:
        await env.dp.submit_plan(parent, tenant=tenant, session="s")
    assert_quota(refused.value)
    await env.nothing_started(tenant)


async def test_a_revision_meets_the_runs_pinned_quota(env: Env) -> None:
    tenant = env.tenant()

    def plan(ship: dict[str, Any], **limits: int) -> dict[str, Any]:
        return {
            "name": "ship",
            "replan": {"max_revisions": 1},
            "limits": limits,
            "steps": [{"id": "ship", "kind": "tool", "tool": "debug.fail", "args": {"message": "down"}} | ship],
        }

    env.slot.model = ScriptedModel(plan({"tool": "debug.echo", "args": {"value": 1}}, max_steps=50))
    handle = await env.dp.submit_plan(plan({}), tenant=tenant, session="s")
    with pytest.raises(RunFailed, match="down"):
        await handle.result()
    status = await handle.status()
    assert [e["type"] for e in status.replan_errors] == ["QuotaExceeded"]
    assert "max_steps_per_run" in status.replan_errors[0]["message"]
    assert status.revision == 1  # the revision over the quota was not adopted
    assert env.slot.model.remaining == 0


async def test_a_revision_names_no_secret_its_run_did_not(env: Env) -> None:
    """The replanner reads step outputs and errors (data a third party may write): a revision it
    wrote could name any secret of the tenant, and revisions' references are the plan's own."""
    tenant = env.tenant()
    env.tenants.set_secret(tenant, "api_token", "tok-r3vision")

    def plan(ship: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": "ship",
            "replan": {"max_revisions": 1},
            "steps": [{"id": "ship", "kind": "tool", "tool": "debug.fail", "args": {"message": "down"}} | ship],
        }

    env.slot.model = ScriptedModel(plan({"tool": "debug.echo", "args": {"value": {"$secret": "api_token"}}}))
    handle = await env.dp.submit_plan(plan({}), tenant=tenant, session="s")
    with pytest.raises(RunFailed, match="down"):
        await handle.result()
    status = await handle.status()
    assert [e["type"] for e in status.replan_errors] == ["PlanInvalid"]
    assert "names secret(s) ['api_token'] that the run's plan did not" in status.replan_errors[0]["message"]
    assert status.revision == 1 and env.slot.model.remaining == 0


async def test_chat_submit_takes_the_rate_token_like_a_direct_submit(env: Env) -> None:
    tenant = env.tenant()
    env.tenants.set_quotas(tenant, runs_per_second=0.01, runs_burst=1)
    small = {"name": "small", "steps": [{"id": "a", "kind": "set", "value": 1}]}
    await env.dp.submit_plan(small, tenant=tenant, session="s")  # the one token
    env.slot.model = ScriptedModel(small)
    chat = ChatSession(env.dp, tenant=tenant, session="chat", run_task_queue=env.settings.task_queue)
    await chat.send("plan it")
    with pytest.raises(QuotaExceeded) as refused:  # at once, not after Temporal's retries
        await asyncio.wait_for(chat.submit(), 10)
    assert refused.value.limit == "runs_per_second" and refused.value.retry_after_s is not None
    with pytest.raises(QuotaExceeded) as direct:
        await env.dp.submit_plan(small, tenant=tenant, session="s")
    assert direct.value.limit == "runs_per_second"


@pytest.mark.parametrize("value", ["run-1\n", "acme\n"])
def test_a_name_with_a_trailing_newline_is_refused(value: str) -> None:
    """``$`` in a Python regex also matches before a final newline: ``run-1\\n`` passed as a run id
    (Python API, CLI) and became a run apart from ``run-1``."""
    from executor.errors import InputsInvalid
    from executor.service.bulk import RunFilter, bulk_query
    from executor.service.names import check_name, check_run_id

    with pytest.raises(InputsInvalid):
        check_name("run_id", value)
    with pytest.raises(InputsInvalid):
        check_run_id(value)
    with pytest.raises(InputsInvalid):
        bulk_query("acme", RunFilter(session=value))


async def test_a_start_input_over_temporals_payload_limit_is_refused_naming_plan_or_inputs(env: Env) -> None:
    """Temporal refuses a start input over 2 MB with an error of its own (through the Python API
    and MCP: "Blob data size exceeds limit"); the start path says which part is too large, and
    nothing starts."""
    from executor.errors import InputsInvalid, PlanInvalid
    from executor.service.start import MAX_START_INPUT_BYTES

    tenant = env.tenant()
    big = "x" * (MAX_START_INPUT_BYTES + 1)
    with pytest.raises(PlanInvalid) as plan_refused:
        await env.dp.submit_plan(
            {"name": "big", "steps": [{"id": "a", "kind": "set", "value": big}]}, tenant=tenant, session="s"
        )
    assert plan_refused.value.issues[0].code == "too_large" and "the plan is" in str(plan_refused.value)
    small = {"name": "small", "inputs": {"type": "object"}, "steps": [{"id": "a", "kind": "set", "value": 1}]}
    with pytest.raises(InputsInvalid, match=r"start input is \d+ bytes with these inputs"):
        await env.dp.submit_plan(small, tenant=tenant, session="s", inputs={"blob": big})
    await env.nothing_started(tenant)
