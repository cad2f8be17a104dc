"""Everyday commands import what they use (bench/cli_startup.py reports the times).

`duraplan validate` loads no Temporal SDK, no event loop, no HTTP client, no MCP SDK, no litellm,
and neither typer nor rich (duraplan.quick answers it); `status`, `runs` and `events send` load no
Temporal SDK and no event loop when Temporal's HTTP API is known (DURAPLAN_HTTP_ADDRESS, or the dev
server's record), and otherwise the Temporal client but not the start path, the workflow
definition, tenancy, plan validation or the tool registry. What a command imports is what its
start-up costs, so these sets are the regression test for start-up time."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from duraplan.worker import running_worker
from executor import Settings
from executor.service.client import Duraplan
from executor.service.devserver import DevServer

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("mcp", "litellm", "evals", "planner", "httpx")
# What `validate` never needs (typer and rich: duraplan.quick answers it and prints plain lines
# when rich would print them unchanged, as here where the output is a pipe).
NOT_FOR_VALIDATE = (*HEAVY, "temporalio", "asyncio", "executor.service.client", "typer", "rich", "sqlite3")
# What reading a run or sending it an event never needs.
NOT_FOR_CLIENT = (
    *HEAVY,
    "executor.engine.workflow",
    "executor.service.start",
    "executor.service.tenants",
    "executor.lang.validate",
    "schemas.plan",
    "jsonschema",
    "tools",
    "temporalio.worker",
)
# What the same commands never need over Temporal's HTTP API.
NOT_OVER_HTTP = (*NOT_FOR_CLIENT, "temporalio", "asyncio", "opentelemetry", "executor.service.client")

PROBE = """
import os, runpy, sys
sys.argv = ["duraplan", *sys.argv[1:]]
try:
    runpy.run_module("duraplan.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print()
print("loaded:" + ",".join(m for m in {watch!r} if m in sys.modules))
sys.stdout.flush()
os._exit(0)  # a live Temporal client under a finalizing interpreter can crash it
"""


def _loaded_after(
    *args: str, watch: tuple[str, ...] = NOT_FOR_VALIDATE, env: dict[str, str] | None = None
) -> tuple[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(watch=watch), *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        # exit_process raises instead of ending the process, so the probe can list the modules
        env={**os.environ, **(env or {}), "DURAPLAN_CLI_IN_PROCESS": "1"},
    )
    output, _, loaded = done.stdout.rpartition("\nloaded:")
    return output, [m for m in loaded.strip().split(",") if m]


def test_validate_imports_no_heavy_module(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(
        json.dumps({"name": "x", "steps": [{"id": "a", "kind": "tool", "tool": "debug.echo", "args": {"value": 1}}]})
    )
    # wide enough for the line naming a deep temp path (xdist's adds a level): a line that would
    # wrap is printed by rich, to wrap it as the typer command does
    output, loaded = _loaded_after("validate", str(plan), watch=(*NOT_FOR_VALIDATE, "yaml"), env={"COLUMNS": "250"})
    assert output.startswith("valid:"), output
    assert loaded == []  # and no YAML parser for a JSON plan


def test_validate_yaml_plan_with_schemas_and_notify_imports_no_heavy_module() -> None:
    output, loaded = _loaded_after("validate", str(ROOT / "examples" / "approval.yaml"))
    assert output.startswith("valid:"), output
    assert loaded == []


def test_help_lists_the_lazy_commands() -> None:
    output, _ = _loaded_after("--help")
    for name in ("validate", "status", "runs", "events", "plan", "chat", "eval", "eval-compare", "tenants", "mcp"):
        assert f" {name} " in output, name


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def waiting_run(
    ui_dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, str]]:
    """A run waiting for an event, and the environment that points the CLI at its server (over the
    SDK: the CLI's home holds no dev-server record)."""
    dev_server = ui_dev_server
    home = tmp_path_factory.mktemp("startup-home")
    queue = f"startup-{uuid.uuid4().hex[:8]}"
    settings = Settings(home=home, task_queue=queue)
    env = {"DURAPLAN_ADDRESS": dev_server.address, "DURAPLAN_TASK_QUEUE": queue, "DURAPLAN_HOME": str(home)}
    steps = [
        {"id": "go", "kind": "wait_for_event", "event": "go", "timeout": "1h"},
        {"id": "hold", "kind": "wait_for_event", "event": "never", "timeout": "1h", "depends_on": ["go"]},
        {"id": "last", "kind": "wait_for_event", "event": "last", "timeout": "1h", "depends_on": ["hold"]},
    ]
    plan = {"name": "startup", "steps": steps}
    async with running_worker(dev_server.client, settings):
        dp = Duraplan(dev_server.client, settings)
        handle = await dp.submit_plan(plan, tenant="default", session="s", run_id=f"startup-{uuid.uuid4().hex[:8]}")
        yield {**env, "RUN_ID": handle.run_id, "HTTP": dev_server.ui_url or ""}
        await handle.terminate()


async def test_status_runs_and_events_send_import_no_start_path(waiting_run: dict[str, str]) -> None:
    # In a thread: the worker that answers the query and the update runs on this event loop.
    run_id = waiting_run["RUN_ID"]
    output, loaded = await asyncio.to_thread(
        _loaded_after, "status", run_id, "--json", watch=NOT_FOR_CLIENT, env=waiting_run
    )
    assert json.loads(output)["run_id"] == run_id
    assert loaded == []
    output, loaded = await asyncio.to_thread(_loaded_after, "runs", "--json", watch=NOT_FOR_CLIENT, env=waiting_run)
    assert run_id in [r["run_id"] for r in json.loads(output)]
    assert loaded == []
    output, loaded = await asyncio.to_thread(
        _loaded_after, "events", "send", run_id, "go", "--payload", "{}", watch=NOT_FOR_CLIENT, env=waiting_run
    )
    assert output.strip() == "event 'go' accepted"
    assert loaded == []


async def test_status_runs_and_events_send_over_http_import_no_temporal_sdk(waiting_run: dict[str, str]) -> None:
    env = {**waiting_run, "DURAPLAN_HTTP_ADDRESS": waiting_run["HTTP"]}
    run_id = waiting_run["RUN_ID"]
    output, loaded = await asyncio.to_thread(_loaded_after, "status", run_id, "--json", watch=NOT_OVER_HTTP, env=env)
    assert json.loads(output)["run_id"] == run_id
    assert loaded == []
    output, loaded = await asyncio.to_thread(_loaded_after, "status", run_id, watch=NOT_OVER_HTTP, env=env)
    assert run_id in output
    assert loaded == []
    output, loaded = await asyncio.to_thread(_loaded_after, "runs", watch=NOT_OVER_HTTP, env=env)
    assert run_id in output
    assert loaded == []
    output, loaded = await asyncio.to_thread(
        _loaded_after, "events", "send", run_id, "never", "--event-id", "over-http", watch=NOT_OVER_HTTP, env=env
    )
    assert output.strip() == "event 'never' accepted"
    assert loaded == []
