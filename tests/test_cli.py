"""The duraplan CLI as a user runs it: a subprocess against the dev server and a live worker."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from duraplan.worker import running_worker
from executor import Settings
from executor.service.devserver import DevServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


@dataclass
class Cli:
    env: dict[str, str]

    async def __call__(self, *args: str, timeout: float = 60) -> Result:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "duraplan.cli",
            *args,
            cwd=ROOT,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        assert proc.returncode is not None
        return Result(proc.returncode, out.decode(), err.decode())


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def cli(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cli]:
    home = tmp_path_factory.mktemp("cli-home")
    queue = f"cli-{uuid.uuid4().hex[:8]}"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "DURAPLAN_ADDRESS": dev_server.address,
        "DURAPLAN_TASK_QUEUE": queue,
        "DURAPLAN_HOME": str(home),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "COLUMNS": "200",
    }
    async with running_worker(dev_server.client, Settings(home=home, task_queue=queue)):
        yield Cli(env)


def _no_traceback(result: Result) -> None:
    assert "Traceback" not in result.err + result.out


async def test_validate_valid_and_invalid(cli: Cli, tmp_path: Path) -> None:
    ok = await cli("validate", str(EXAMPLES / "approval.yaml"))
    assert ok.code == 0 and "valid" in ok.out
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nsteps:\n"
        "  - {id: a, kind: tool, tool: transform, args: {data: 1}}\n"
        "  - {id: b, kind: set, value: '${steps.nope.output}'}\n"
    )
    result = await cli("validate", str(bad))
    assert result.code == 2
    _no_traceback(result)
    assert "/steps/0/args" in result.err and "'expression' is a required property" in result.err
    assert "/steps/1/value" in result.err and "unknown step 'nope'" in result.err
    as_json = await cli("validate", str(bad), "--json")
    assert as_json.code == 2
    issues = as_json.json()["issues"]  # type: ignore[index]
    assert {i["code"] for i in issues} == {"tool_args", "unknown_reference"}


async def test_missing_plan_file_is_one_line(cli: Cli) -> None:
    result = await cli("run", "no-such-plan.yaml")
    assert result.code == 2
    _no_traceback(result)
    assert "cannot read plan file" in result.err


async def test_run_with_inputs_json_output(cli: Cli) -> None:
    result = await cli("run", str(EXAMPLES / "quickstart.yaml"), "--input", 'customers=["x", "yy"]', "--json")
    assert result.code == 0, result.err
    body = result.json()
    assert body["status"]["state"] == "completed"  # type: ignore[index]
    assert [s["name"] for s in body["result"]["scores"]] == ["x", "yy"]  # type: ignore[index]


async def test_bad_inputs_rejected_before_start(cli: Cli) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    result = await cli("run", str(EXAMPLES / "approval.yaml"), "--input", "amount=-3", "--tenant", tenant)
    assert result.code == 1
    _no_traceback(result)
    assert "order_id" in result.err and "run inputs invalid" in result.err
    runs = await cli("runs", "--tenant", tenant, "--json")
    assert runs.code == 0, runs.err
    assert runs.json() == [], "nothing half-started"


async def test_events_status_runs_and_failure(cli: Cli) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    started = await cli(
        "run",
        str(EXAMPLES / "approval.yaml"),
        "-i",
        "order_id=o-7",
        "-i",
        "amount=5",
        "--tenant",
        tenant,
        "--run-id",
        "order-7",
        "--no-wait",
        "--json",
    )
    assert started.code == 0, started.err
    bad = await cli("events", "send", "order-7", "approval", "--payload", "{not json", "--tenant", tenant)
    assert bad.code == 1 and "--payload is not JSON" in bad.err
    invalid = await cli("events", "send", "order-7", "approval", "--payload", '{"approved": "yes"}', "--tenant", tenant)
    assert invalid.code == 1 and "approval" in invalid.err
    _no_traceback(invalid)
    sent = await cli(
        "events", "send", "order-7", "approval", "--payload", '{"approved": false, "by": "ann"}', "--tenant", tenant
    )
    assert sent.code == 0 and "accepted" in sent.out
    status = await cli("status", "order-7", "--tenant", tenant, "--json")
    deadline = asyncio.get_running_loop().time() + 30
    while status.json()["state"] not in ("failed", "completed"):  # type: ignore[index]
        assert asyncio.get_running_loop().time() < deadline
        status = await cli("status", "order-7", "--tenant", tenant, "--json")
    body = status.json()
    assert body["state"] == "failed"  # type: ignore[index]
    assert body["error"]["type"] == "Rejected"  # type: ignore[index]
    states = {s["id"]: s["state"] for s in body["steps"]}  # type: ignore[index]
    assert states["reserve"] == states["charge"] == "compensated"
    runs = await cli("runs", "--tenant", tenant, "--json")
    assert [(r["run_id"], r["state"]) for r in runs.json()] == [("order-7", "failed")]  # type: ignore[union-attr]


async def test_unknown_run_and_other_tenant(cli: Cli) -> None:
    for args in (("status", "nope"), ("cancel", "nope"), ("events", "send", "nope", "x")):
        result = await cli(*args, "--tenant", "someone")
        assert result.code == 1
        _no_traceback(result)
        assert "not found" in result.err


async def test_pause_resume_cancel(cli: Cli, tmp_path: Path) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    plan = tmp_path / "wait.yaml"
    plan.write_text(
        "name: waits\nsteps:\n"
        "  - {id: go, kind: wait_for_event, event: go, timeout: 1h}\n"
        "  - {id: after, kind: set, value: 1, depends_on: [go]}\n"
    )
    assert (await cli("run", str(plan), "--run-id", "w1", "--tenant", tenant, "--no-wait")).code == 0
    assert (await cli("pause", "w1", "--tenant", tenant)).code == 0
    assert (await cli("status", "w1", "--tenant", tenant, "--json")).json()["state"] == "paused"  # type: ignore[index]
    assert (await cli("resume", "w1", "--tenant", tenant)).code == 0
    assert (await cli("cancel", "w1", "--tenant", tenant)).code == 0
    status = await cli("status", "w1", "--tenant", tenant, "--json")
    deadline = asyncio.get_running_loop().time() + 30
    while status.json()["state"] != "cancelled":  # type: ignore[index]
        assert asyncio.get_running_loop().time() < deadline
        status = await cli("status", "w1", "--tenant", tenant, "--json")


async def test_unreachable_server_is_one_line(cli: Cli) -> None:
    env = dict(cli.env, DURAPLAN_ADDRESS="127.0.0.1:1")
    result = await Cli(env)("status", "x")
    assert result.code == 1
    _no_traceback(result)
    assert "cannot reach Temporal" in result.err
