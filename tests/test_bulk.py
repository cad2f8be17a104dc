"""Bulk operations: a dry run counts first, then only the tenant's matching runs are acted on."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from duraplan.api import create_app
from executor import Duraplan, InputsInvalid, RunHandle, Settings, running_worker
from executor.engine.models import plan_hash
from executor.service import bulk
from executor.service.devserver import DevServer
from executor.service.tenants import TenantRegistry

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(120)


def wait_plan(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [{"id": "approval", "kind": "wait_for_event", "event": "approval", "timeout": "1h"}],
        "output": "${steps.approval.output}",
    }


@pytest_asyncio.fixture(loop_scope="session")
async def dp(dev_server: DevServer, tmp_path: Path) -> AsyncIterator[Duraplan]:
    settings = Settings(home=tmp_path, task_queue=f"bulk-{uuid.uuid4().hex[:8]}")
    async with running_worker(dev_server.client, settings):
        yield Duraplan(dev_server.client, settings)


async def _state(handle: RunHandle) -> str:
    return str((await handle.status())["state"])


async def _until_count(dp: Duraplan, expected: int, **flt: Any) -> None:
    """Visibility catches up asynchronously: wait until the dry run sees what was started."""
    for _ in range(200):
        if (await dp.bulk("cancel", dry_run=True, **flt)).matched == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"dry run never counted {expected} for {flt}")


async def test_bulk_cancel_by_session_dry_run_first_and_only_that_tenant(dp: Duraplan) -> None:
    tag = uuid.uuid4().hex[:6]
    a, b = f"a-{tag}", f"b-{tag}"
    plan = wait_plan("approval")
    targets = [await dp.submit_plan(plan, tenant=a, session="s1") for _ in range(3)]
    other_session = await dp.submit_plan(plan, tenant=a, session="s2")
    other_tenant = [await dp.submit_plan(plan, tenant=b, session="s1") for _ in range(2)]
    await _until_count(dp, 3, tenant=a, session="s1")
    await _until_count(dp, 2, tenant=b, session="s1")

    dry = await dp.bulk("cancel", tenant=a, session="s1", dry_run=True)
    assert (dry.matched, dry.affected, dry.dry_run) == (3, 0, True)
    assert all([await _state(h) == "waiting" for h in targets]), "a dry run changes nothing"

    done = await dp.bulk("cancel", tenant=a, session="s1")
    assert (done.matched, done.affected, done.failed, done.state) == (3, 3, 0, "completed")
    assert done.strategy == "batch" and done.job_id, "cancel goes through a Temporal batch job"
    for handle in targets:
        for _ in range(100):
            if await _state(handle) == "cancelled":
                break
            await asyncio.sleep(0.05)
        assert await _state(handle) == "cancelled"
    assert await _state(other_session) == "waiting"
    assert [await _state(h) for h in other_tenant] == ["waiting", "waiting"], "tenant b's runs are untouched"
    metered = (await dp.usage(tenant=a)).total
    assert (metered.runs_started, metered.runs_cancelled, metered.runs_completed) == (4, 3, 0)
    assert (await dp.usage(tenant=b)).total.runs_cancelled == 0
    await _until_count(dp, 0, tenant=a, session="s1")
    for handle in [other_session, *other_tenant]:
        await handle.terminate()


async def test_bulk_pause_resume_terminate_by_plan_hash_and_state(dp: Duraplan) -> None:
    tag = uuid.uuid4().hex[:6]
    a, b = f"a-{tag}", f"b-{tag}"
    first, second = wait_plan("first"), wait_plan("second")
    digest = plan_hash(first)
    a_first = await dp.submit_plan(first, tenant=a, session="s")
    a_second = await dp.submit_plan(second, tenant=a, session="s")
    b_first = await dp.submit_plan(first, tenant=b, session="s")  # the same plan hash, another tenant
    await _until_count(dp, 1, tenant=a, plan_hash=digest)
    await _until_count(dp, 1, tenant=b, plan_hash=digest)

    paused = await dp.bulk("pause", tenant=a, plan_hash=digest)
    assert (paused.matched, paused.affected, paused.strategy) == (1, 1, "iterate")
    assert (await a_first.status())["paused"] is True
    assert (await a_second.status())["paused"] is False
    assert (await b_first.status())["paused"] is False, "tenant b's run of the same plan is untouched"

    await _until_count(dp, 1, tenant=a, state="paused")
    resumed = await dp.bulk("resume", tenant=a, state="paused")
    assert resumed.affected == 1
    assert (await a_first.status())["paused"] is False

    await _until_count(dp, 2, tenant=a)
    terminated = await dp.bulk("terminate", tenant=a)
    assert (terminated.matched, terminated.affected, terminated.strategy) == (2, 2, "batch")
    assert [await _state(h) for h in (a_first, a_second)] == ["terminated", "terminated"]
    assert await _state(b_first) == "waiting"
    await b_first.terminate()


async def test_a_bulk_pause_over_the_limit_is_refused_and_changes_nothing(
    dp: Duraplan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pause and resume are one update per run from this process: a filter matching 50,000 runs
    held one request for minutes. Over the limit the request is refused up front, naming it."""
    monkeypatch.setattr(bulk, "MAX_ITERATED_RUNS", 2)
    tenant = f"cap-{uuid.uuid4().hex[:6]}"
    handles = [await dp.submit_plan(wait_plan("w"), tenant=tenant, session="s") for _ in range(3)]
    await _until_count(dp, 3, tenant=tenant)
    with pytest.raises(InputsInvalid, match=r"3 open runs match; one bulk pause reaches at most 2 runs") as refused:
        await dp.bulk("pause", tenant=tenant)
    assert refused.value.status_code() == 422
    assert [(await h.status())["paused"] for h in handles] == [False, False, False]
    assert (await dp.bulk("pause", tenant=tenant, dry_run=True)).matched == 3, "a dry run still counts them"
    terminated = await dp.bulk("terminate", tenant=tenant)  # a server-side batch job: no such limit
    assert terminated.affected == 3


async def test_bulk_rejects_bad_filters_and_actions(dp: Duraplan) -> None:
    with pytest.raises(InputsInvalid, match="plan_hash"):
        await dp.bulk("cancel", tenant="a", plan_hash="md5:abc", dry_run=True)
    with pytest.raises(InputsInvalid, match="state"):
        await dp.bulk("cancel", tenant="a", state="completed", dry_run=True)
    with pytest.raises(InputsInvalid, match="session"):
        await dp.bulk("cancel", tenant="a", session="x' OR DuraplanTenant != 'a", dry_run=True)
    with pytest.raises(InputsInvalid, match="action"):
        await dp.bulk("delete", tenant="a", dry_run=True)


async def test_bulk_through_the_api_and_the_cli(dp: Duraplan, dev_server: DevServer, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:6]
    a, b = f"a-{tag}", f"b-{tag}"
    tenants = TenantRegistry(tmp_path / "tenants.db")
    try:
        keys = {}
        for name in (a, b):
            tenants.create(name)
            keys[name] = tenants.issue_key(name, label="test")
        runs = [await dp.submit_plan(wait_plan("p"), tenant=t, session="s") for t in (a, a, b)]
        await _until_count(dp, 2, tenant=a)
        await _until_count(dp, 1, tenant=b)
        app = create_app(dp, tenants)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
            headers = {"Authorization": f"Bearer {keys[a]}"}
            dry = await http.post("/v1/runs:bulk", headers=headers, json={"action": "pause", "dry_run": True})
            assert (dry.status_code, dry.json()["matched"], dry.json()["affected"]) == (200, 2, 0)
            bad = await http.post("/v1/runs:bulk", headers=headers, json={"action": "pause", "tenant": b})
            assert bad.status_code == 400, "no tenant field to forge: the key decides"
            done = await http.post("/v1/runs:bulk", headers=headers, json={"action": "pause", "session": "s"})
            assert done.json()["affected"] == 2
        assert [(await h.status())["paused"] for h in runs] == [True, True, False]
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "DURAPLAN_ADDRESS": dev_server.address,
            "DURAPLAN_HOME": str(tmp_path),
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        args = [sys.executable, "-m", "duraplan.cli", "bulk", "terminate", "--tenant", b, "--dry-run", "--json"]
        proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["matched"] == 1
        bad_args = [sys.executable, "-m", "duraplan.cli", "bulk", "terminate", "--tenant", b, "--status", "done"]
        proc = subprocess.run(bad_args, cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)
        assert proc.returncode == 1 and b"state" in proc.stderr and b"Traceback" not in proc.stderr
    finally:
        tenants.close()
        for handle in runs:
            await handle.terminate()
