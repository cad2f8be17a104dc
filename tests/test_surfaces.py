"""One RunStatus on every surface: a run with a switch, a foreach and a subplan shows the same nested
steps, with the same field names and values, through the Python API, HTTP, MCP and the CLI; the
subplan's child run opens on each of them; ``runs --status waiting`` lists what ``status`` calls
waiting."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from mcp import Client as McpClient

from duraplan.api import create_app
from duraplan.mcp_server import create_server
from duraplan.worker import running_worker
from executor import Duraplan, Settings
from executor.service.devserver import DevServer
from executor.service.tenants import TenantRegistry
from tests.engine.conftest import wait_for, wait_step_state

ROOT = Path(__file__).resolve().parents[1]

CHILD = {"name": "child", "steps": [{"id": "inner", "kind": "set", "value": 7}], "output": "${steps.inner.output}"}
PLAN = {
    "name": "nested",
    "steps": [
        {
            "id": "route",
            "kind": "switch",
            "cases": [{"when": "${`true`}", "steps": [{"id": "yes", "kind": "set", "value": 1}]}],
            "default": [{"id": "no", "kind": "set", "value": 0}],
        },
        {
            "id": "each",
            "kind": "foreach",
            "items": "${`[1, 2]`}",
            "steps": [{"id": "twice", "kind": "set", "value": "${item}"}],
        },
        {"id": "sub", "kind": "subplan", "plan": CHILD},
        {"id": "gate", "kind": "wait_for_event", "event": "go", "depends_on": ["route", "each", "sub"]},
    ],
}


@dataclass
class Env:
    dp: Duraplan
    tenants: TenantRegistry
    settings: Settings
    address: str


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    home = tmp_path_factory.mktemp("surfaces")
    settings = Settings(home=home, task_queue=f"surfaces-{uuid.uuid4().hex[:8]}", tenancy=True)
    tenants = TenantRegistry(home / "tenants.db")
    async with running_worker(dev_server.client, settings, tenants=tenants):
        yield Env(Duraplan(dev_server.client, settings, tenants=tenants), tenants, settings, dev_server.address)
    tenants.close()


def cli_env(address: str, settings: Settings) -> dict[str, str]:
    """The environment a ``duraplan`` command needs to reach this test's server, worker and home."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "DURAPLAN_ADDRESS": address,
        "DURAPLAN_TASK_QUEUE": settings.task_queue,
        "DURAPLAN_HOME": str(settings.home),
        "DURAPLAN_TENANCY": "1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }


async def cli(env: Env, *args: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "duraplan.cli",
        *args,
        "--json",
        cwd=ROOT,
        env=cli_env(env.address, env.settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def test_every_surface_shows_the_same_nested_status(env: Env) -> None:
    tenant = f"sf-{uuid.uuid4().hex[:8]}"
    env.tenants.create(tenant)
    key = env.tenants.issue_key(tenant, label="t")
    handle = await env.dp.submit_plan(PLAN, tenant=tenant, session="s", run_id="nested")
    await wait_step_state(handle, "gate", "waiting")
    app = create_app(env.dp, env.tenants)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        python = (await handle.status()).model_dump(mode="json")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
            over_http = (await http.get("/v1/runs/nested", headers=headers)).json()
            async with McpClient(create_server(env.dp, tenant=tenant)) as mcp:
                over_mcp = (await mcp.call_tool("get_run", {"run_id": "nested"})).structured_content
                over_cli = await cli(env, "status", "nested", "--tenant", tenant)
                assert python == over_http == over_mcp == over_cli  # one shape, field for field

                steps = {s["id"]: s for s in python["steps"]}
                assert [(s["id"], s["state"]) for s in steps["route"]["steps"]] == [
                    ("yes", "completed"),
                    ("no", "skipped"),
                ]
                assert steps["each"]["progress"] == {"done": 2, "total": 2, "counts": {"completed": 2}}
                child = steps["sub"]["child_run_id"]
                assert child == "nested~sub~0"

                # The child run opens on every surface.
                assert (await http.get(f"/v1/runs/{child}", headers=headers)).json()["parent_run_id"] == "nested"
                child_mcp = (await mcp.call_tool("get_run", {"run_id": child})).structured_content
                assert child_mcp is not None and child_mcp["state"] == "completed" and child_mcp["result"] == 7
                assert (await cli(env, "status", child, "--tenant", tenant))["plan_name"] == "child"

                # `status` says waiting; so does every listing filtered by waiting.
                async def waiting() -> bool:
                    return [r.run_id for r in await env.dp.list_runs(tenant=tenant, status="waiting")] == ["nested"]

                await wait_for(waiting, timeout=15)
                listed = (await http.get("/v1/runs?status=waiting", headers=headers)).json()["runs"]
                assert [(r["run_id"], r["state"], r["generation"]) for r in listed] == [("nested", "waiting", 0)]
                by_mcp = (await mcp.call_tool("list_runs", {"status": "waiting"})).structured_content
                assert by_mcp is not None and [r["run_id"] for r in by_mcp["runs"]] == ["nested"]
                by_cli = await cli(env, "runs", "--tenant", tenant, "--status", "waiting")
                assert [r["run_id"] for r in by_cli] == ["nested"]
    finally:
        await handle.terminate()
