"""The MCP server driven by the MCP SDK's own client: in-process, over stdio and over streamable HTTP.

A live worker on a unique task queue of the shared dev server runs the plans.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

from duraplan.mcp_server import _flatten, create_server
from duraplan.worker import running_worker
from executor import Duraplan, Settings
from executor.engine.run_status import RUN_STATES, RunStatus
from executor.service.devserver import DevServer
from planner.testing import ScriptedModel

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"validate_plan", "submit_plan", "plan_goal", "get_run", "send_event", "cancel_run", "list_runs"}
WAITS = {
    "name": "waits",
    "inputs": {"type": "object", "required": ["who"], "properties": {"who": {"type": "string"}}},
    "steps": [
        {
            "id": "approval",
            "kind": "wait_for_event",
            "event": "approval",
            "timeout": "1h",
            "payload_schema": {
                "type": "object",
                "required": ["approved"],
                "properties": {"approved": {"type": "boolean"}},
            },
        },
        {
            "id": "done",
            "kind": "set",
            "value": "${input.who}:${steps.approval.output.approved}",
            "depends_on": ["approval"],
        },
    ],
    "output": "${steps.done.output}",
}
INVALID = {
    "name": "bad",
    "steps": [
        {"id": "a", "kind": "set", "value": 1},
        {"id": "a", "kind": "set", "value": "${steps.nope.output}"},
        {"id": "c", "kind": "tool", "tool": "no.such.tool", "args": {}},
    ],
}


@dataclass
class Env:
    dp: Duraplan
    settings: Settings
    queue: str
    address: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    home = tmp_path_factory.mktemp("mcp-home")
    queue = f"mcp-{uuid.uuid4().hex[:8]}"
    settings = Settings(home=home, task_queue=queue)
    async with running_worker(dev_server.client, settings):
        yield Env(Duraplan(dev_server.client, settings), settings, queue, dev_server.address)


def _tenant() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def _text(result: CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, TextContent))


async def _ok(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    assert not result.is_error, _text(result)
    body = result.structured_content
    assert isinstance(body, dict), result
    return body


async def _error(client: Client, tool: str, args: dict[str, Any]) -> str:
    result = await client.call_tool(tool, args)
    assert result.is_error, result
    text = _text(result)
    assert "\n" not in text and "Traceback" not in text, text
    return text


async def test_tools_have_json_schemas(env: Env) -> None:
    async with Client(create_server(env.dp, tenant=_tenant())) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS
    required = {
        "validate_plan": {"plan"},
        "submit_plan": {"plan", "session"},
        "plan_goal": {"goal"},
        "get_run": {"run_id"},
        "send_event": {"run_id", "type"},
        "cancel_run": {"run_id"},
        "list_runs": set(),
    }
    for name, tool in tools.items():
        schema = tool.input_schema
        assert schema["type"] == "object" and isinstance(schema["properties"], dict), name
        assert set(schema.get("required", [])) == required[name], name
        assert tool.description and len(tool.description) > 20, name
        assert all(p.get("description") for p in schema["properties"].values()), name
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", name
        assert "tenant" not in schema["properties"], name  # fixed per server instance
    # The one vocabulary of run states (waiting included), the engine's RunStatus as output schema.
    assert tools["list_runs"].input_schema["properties"]["status"]["anyOf"][0]["enum"] == list(RUN_STATES)
    assert "waiting" in RUN_STATES
    get_run = tools["get_run"].output_schema
    assert get_run is not None and set(get_run["properties"]) == set(RunStatus.model_json_schema()["properties"])
    assert tools["validate_plan"].annotations is not None and tools["validate_plan"].annotations.read_only_hint


async def test_validate_and_invalid_submissions(env: Env) -> None:
    async with Client(create_server(env.dp, tenant=_tenant())) as client:
        assert await _ok(client, "validate_plan", {"plan": WAITS}) == {"valid": True, "issues": []}
        body = await _ok(client, "validate_plan", {"plan": INVALID})
        assert body["valid"] is False
        by_code = {i["code"]: i for i in body["issues"]}
        assert by_code["unknown_reference"]["pointer"] == "/steps/1/value"
        assert by_code["unknown_reference"]["step"] == "a"
        assert any(i["pointer"].startswith("/steps/2") and "no.such.tool" in i["message"] for i in body["issues"])
        assert any("duplicate" in i["message"] for i in body["issues"])

        text = await _error(client, "submit_plan", {"plan": INVALID, "session": "s1"})
        assert text.startswith("plan is invalid (") and "/steps/1/value (step 'a')" in text
        text = await _error(client, "submit_plan", {"plan": WAITS, "session": "s1", "inputs": {"who": 5}})
        assert "run inputs invalid" in text and "/who" in text
        text = await _error(client, "submit_plan", {"plan": WAITS, "session": "bad session!", "inputs": {"who": "x"}})
        assert "session invalid" in text
        text = await _error(client, "validate_plan", {"plan": 3})
        assert text.startswith("invalid arguments for validate_plan: plan:")
        assert "Unknown tool" in await _error(client, "no_such_tool", {})


async def test_event_flow_list_and_cancel(env: Env) -> None:
    tenant = _tenant()
    async with Client(create_server(env.dp, tenant=tenant)) as client:
        submitted = await _ok(
            client, "submit_plan", {"plan": WAITS, "session": "chat-1", "inputs": {"who": "ann"}, "run_id": "r1"}
        )
        assert submitted == {"run_id": "r1", "tenant": tenant, "session": "chat-1"}
        again = await _ok(
            client, "submit_plan", {"plan": WAITS, "session": "chat-1", "inputs": {"who": "ann"}, "run_id": "r1"}
        )
        assert again["run_id"] == "r1"  # idempotent on run_id
        conflict = await _error(
            client, "submit_plan", {"plan": WAITS, "session": "chat-1", "inputs": {"who": "bob"}, "run_id": "r1"}
        )
        assert "already exists" in conflict

        status = await _ok(client, "get_run", {"run_id": "r1"})
        assert status["state"] == "waiting" and status["result"] is None

        bad = await _error(client, "send_event", {"run_id": "r1", "type": "approval", "payload": {"approved": "y"}})
        assert "event invalid" in bad
        sent = await _ok(
            client, "send_event", {"run_id": "r1", "type": "approval", "payload": {"approved": True}, "event_id": "e1"}
        )
        assert sent["duplicate"] is False and sent["run_id"] == "r1"

        final = await _ok(client, "get_run", {"run_id": "r1", "wait_seconds": 30})
        assert final["state"] == "completed"
        assert final["result"] == "ann:true"
        late = await _error(client, "send_event", {"run_id": "r1", "type": "approval", "payload": {"approved": True}})
        assert "completed" in late

        await _ok(client, "submit_plan", {"plan": WAITS, "session": "chat-2", "inputs": {"who": "bob"}, "run_id": "r2"})
        assert await _ok(client, "cancel_run", {"run_id": "r2"}) == {"run_id": "r2", "cancel_requested": True}
        cancelled = await _ok(client, "get_run", {"run_id": "r2", "wait_seconds": 30})
        assert cancelled["state"] == "cancelled" and cancelled["result"] is None

        deadline = asyncio.get_running_loop().time() + 30
        while True:  # visibility is eventually consistent
            runs = (await _ok(client, "list_runs", {}))["runs"]
            states = {r["run_id"]: r["state"] for r in runs}
            if states == {"r1": "completed", "r2": "cancelled"}:
                break
            assert asyncio.get_running_loop().time() < deadline, states
            await asyncio.sleep(0.3)
        assert [r["run_id"] for r in (await _ok(client, "list_runs", {"session": "chat-1"}))["runs"]] == ["r1"]
        only = (await _ok(client, "list_runs", {"status": "cancelled"}))["runs"]
        assert [r["run_id"] for r in only] == ["r2"]
        assert "Input should be" in await _error(client, "list_runs", {"status": "sleeping"})

    # The same run ids are not visible to another tenant's server.
    async with Client(create_server(env.dp, tenant=_tenant())) as other:
        assert (await _ok(other, "list_runs", {}))["runs"] == []
        assert "not found" in await _error(other, "get_run", {"run_id": "r1"})


async def test_unknown_run_errors(env: Env) -> None:
    async with Client(create_server(env.dp, tenant=_tenant())) as client:
        for tool, args in (
            ("get_run", {"run_id": "nope"}),
            ("cancel_run", {"run_id": "nope"}),
            ("send_event", {"run_id": "nope", "type": "x"}),
        ):
            text = await _error(client, tool, args)
            assert "not found" in text and "'nope'" in text, text
        assert "run_id invalid" in await _error(client, "get_run", {"run_id": "../etc"})


async def test_plan_goal_with_scripted_model(env: Env) -> None:
    plan = {"name": "hello", "steps": [{"id": "hi", "kind": "set", "value": "hello"}], "output": "${steps.hi.output}"}
    model = ScriptedModel({"name": "x", "steps": [{"id": "a", "kind": "set", "value": "${steps.zz.output}"}]}, plan)
    async with Client(create_server(env.dp, tenant=_tenant(), completion=model)) as client:
        with model:
            body = await _ok(client, "plan_goal", {"goal": "say hello", "model": "openai/gpt-4o-mini"})
        assert body["plan"]["name"] == "hello"
        assert [a["ok"] for a in body["attempts"]] == [False, True]
        assert body["attempts"][0]["issues"][0]["code"] == "unknown_reference"
        assert body["tokens"]["total"] == body["tokens"]["prompt"] + body["tokens"]["completion"] > 0
        assert body["model"] == "openai/gpt-4o-mini" and body["cost_usd"] >= 0
        text = await _error(client, "plan_goal", {"goal": ""})
        assert text.startswith("invalid arguments for plan_goal: goal:")


def test_flatten_messages() -> None:
    assert _flatten("one line") == "one line"
    assert _flatten("a\n  b\n") == "a b"
    assert _flatten("Error executing tool get_run: run 'x' not found") == "run 'x' not found"
    assert _flatten("Error executing tool get_run") == "Error executing tool get_run"


def _subprocess_env(env: Env) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "DURAPLAN_ADDRESS": env.address,
        "DURAPLAN_TASK_QUEUE": env.queue,
        "DURAPLAN_HOME": str(env.settings.home),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


async def test_stdio_round_trip(env: Env) -> None:
    tenant = _tenant()
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "duraplan.mcp_server", "--tenant", tenant],
        env=_subprocess_env(env),
        cwd=str(ROOT),
    )
    async with Client(params) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        plan = {"name": "now", "steps": [{"id": "x", "kind": "set", "value": 42}], "output": "${steps.x.output}"}
        run = await _ok(client, "submit_plan", {"plan": plan, "session": "s"})
        final = await _ok(client, "get_run", {"run_id": run["run_id"], "wait_seconds": 30})
        assert final["state"] == "completed" and final["result"] == 42
        assert "not found" in await _error(client, "cancel_run", {"run_id": "missing"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_streamable_http_round_trip(env: Env) -> None:
    tenant, port = _tenant(), _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "duraplan.mcp_server",
        "--transport",
        "http",
        "--port",
        str(port),
        "--tenant",
        tenant,
        "--no-auth",  # loopback development
        cwd=ROOT,
        env=_subprocess_env(env),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                assert proc.returncode is None, "server exited early"
                assert asyncio.get_running_loop().time() < deadline, "server did not listen"
                await asyncio.sleep(0.1)
        async with Client(f"http://127.0.0.1:{port}/mcp") as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            body = await _ok(client, "validate_plan", {"plan": INVALID})
            assert body["valid"] is False
            run = await _ok(client, "submit_plan", {"plan": WAITS, "session": "h", "inputs": {"who": "eve"}})
            await _ok(
                client, "send_event", {"run_id": run["run_id"], "type": "approval", "payload": {"approved": False}}
            )
            final = await _ok(client, "get_run", {"run_id": run["run_id"], "wait_seconds": 30})
            assert final["result"] == "eve:false"
            assert "not found" in await _error(client, "get_run", {"run_id": "missing"})
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert b"Traceback" not in err, err.decode()[-2000:]


def test_bad_flags_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from duraplan.mcp_server import main

    with pytest.raises(SystemExit) as exc:
        main(["--transport", "carrier-pigeon"])
    assert exc.value.code == 2
    assert "--transport must be stdio or http" in capsys.readouterr().err


async def test_stdio_survives_temporal_being_down(env: Env) -> None:
    """Issue 11 item 12: the server used to exit before the handshake; now validate_plan works and
    the tools that need Temporal say, in one line, that it cannot be reached."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "duraplan.mcp_server", "--tenant", _tenant()],
        env=dict(_subprocess_env(env), DURAPLAN_ADDRESS="127.0.0.1:1"),
        cwd=str(ROOT),
    )
    async with Client(params) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS
        assert (await _ok(client, "validate_plan", {"plan": INVALID}))["valid"] is False
        plan = {"name": "now", "steps": [{"id": "x", "kind": "set", "value": 42}]}
        message = await _error(client, "submit_plan", {"plan": plan, "session": "s"})
        assert "\n" not in message and message


async def _serve_http(env: Env, *flags: str, extra_env: dict[str, str] | None = None) -> tuple[Any, int]:
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "duraplan.mcp_server",
        "--transport",
        "http",
        "--port",
        str(port),
        *flags,
        cwd=ROOT,
        env={**_subprocess_env(env), **(extra_env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return proc, port


async def test_http_requires_an_api_key_of_the_served_tenant(env: Env, tmp_path: Path) -> None:
    from executor.service.tenants import TenantRegistry

    home = tmp_path / "home"
    home.mkdir()
    registry = TenantRegistry(home / "tenants.db")
    registry.create("acme")
    registry.create("other")
    key, other_key = registry.issue_key("acme", label="mcp"), registry.issue_key("other", label="mcp")
    registry.close()
    proc, port = await _serve_http(
        env, "--tenant", "acme", extra_env={"DURAPLAN_TENANCY": "1", "DURAPLAN_HOME": str(home)}
    )
    try:
        import httpx

        url = f"http://127.0.0.1:{port}/mcp"
        deadline = asyncio.get_running_loop().time() + 30
        async with httpx.AsyncClient() as http:
            while True:
                try:
                    anonymous = await http.post(url, json={})
                    break
                except httpx.ConnectError:
                    assert proc.returncode is None, "server exited early"
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.1)
            assert anonymous.status_code == 401
            wrong = await http.post(url, json={}, headers={"Authorization": f"Bearer {other_key}"})
            assert wrong.status_code == 401, "another tenant's key"
        from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client

        authed = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        async with authed, Client(streamable_http_client(url, http_client=authed)) as client:
            assert (await _ok(client, "validate_plan", {"plan": INVALID}))["valid"] is False
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.communicate(), 15)


async def test_http_without_auth_only_on_loopback(env: Env) -> None:
    proc, _ = await _serve_http(env, "--tenant", "acme", "--host", "0.0.0.0", "--no-auth")
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and "loopback" in err.decode()
    proc, _ = await _serve_http(env, "--tenant", "acme")  # no registry, no --no-auth
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1 and "DURAPLAN_TENANCY" in err.decode()
