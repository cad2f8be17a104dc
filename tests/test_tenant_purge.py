"""Deleting a tenant ends its runs and deletes its tool data, and touches no other tenant's."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus
from typer.testing import CliRunner

from duraplan.tenants_cli import app
from duraplan.worker import running_worker
from executor import Duraplan, RunHandle, Settings
from executor.service import tenant_purge
from executor.service.devserver import DevServer
from executor.service.tenant_purge import purge_tenant
from executor.service.tenants import TenantError, TenantRegistry
from planner import ChatSession

pytestmark = pytest.mark.timeout(120)

WAIT = {
    "name": "hold",
    "steps": [
        {"id": "count", "kind": "tool", "tool": "kv.incr", "args": {"key": "seen"}},
        {"id": "go", "kind": "wait_for_event", "event": "go", "timeout": "1h"},
    ],
}


async def _state(handle: RunHandle) -> str:
    return str((await handle.status())["state"])


async def _until(handle: RunHandle, state: str) -> None:
    for _ in range(200):
        if await _state(handle) == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{handle.run_id} never reached {state}: {await _state(handle)}")


@pytest.mark.parametrize("indexed", [True, False], ids=["search-attributes", "workflow-id-prefix"])
async def test_purge_ends_runs_and_deletes_data_of_that_tenant_only(
    dev_server: DevServer, tmp_path: Path, indexed: bool
) -> None:
    tag = uuid.uuid4().hex[:6]
    # Names that differ only in case: Temporal's SQLite visibility matches STARTS_WITH without
    # regard to case, so the prefix path must check ids exactly.
    gone, kept = f"Acme-{tag}", f"acme-{tag}"
    settings = Settings(home=tmp_path, task_queue=f"purge-{tag}", search_attributes=indexed)
    tenants = TenantRegistry(settings.registry_location())
    for name in (gone, kept):
        tenants.create(name)
    async with running_worker(dev_server.client, settings, tenants=tenants) as deps:
        dp = Duraplan(dev_server.client, settings, tenants=tenants)
        doomed = [await dp.submit_plan(WAIT, tenant=gone, session="s") for _ in range(2)]
        spared = await dp.submit_plan(WAIT, tenant=kept, session="s")
        for handle in (*doomed, spared):
            await _until(handle, "waiting")
        chat = await ChatSession(dp, tenant=gone, session="talk").start()  # a planning session: ended too
        await deps.store.kv_put(gone, "profile", {"email": "a@example.com"})
        await deps.store.kv_put(kept, "profile", {"email": "b@example.com"})

        with pytest.raises(TenantError, match="not deleted"):
            await purge_tenant(dev_server.client, settings, tenants, gone, settle_s=0.2)
        assert await _state(doomed[0]) == "waiting", "a live tenant is never purged"

        tenants.delete(gone)
        report = await purge_tenant(dev_server.client, settings, tenants, gone, settle_s=0.5)
        assert report.terminated == 3  # two runs and the planning session
        described = await dev_server.client.get_workflow_handle(chat.workflow_id).describe()
        assert described.status == WorkflowExecutionStatus.TERMINATED
        assert report.rows_deleted["kv"] == 2  # its profile and the runs' counter
        assert report.rows_deleted["effects"] >= 2  # the counter's ledger rows, one per run
        for handle in doomed:
            await _until(handle, "terminated")
        assert await _state(spared) == "waiting"
        assert await deps.store.kv_get(gone, "profile") is None
        assert await deps.store.kv_list(gone) == []
        assert await deps.store.kv_get(kept, "profile") == {"email": "b@example.com"}
        assert await deps.store.kv_get(kept, "seen") == 1

        again = await purge_tenant(dev_server.client, settings, tenants, gone, settle_s=0.2)
        assert again.terminated == 0 and set(again.rows_deleted.values()) == {0}, "repeatable"
        await spared.send_event("go", {"ok": True})
        await spared.result()
        assert await _state(spared) == "completed"
    tenants.close()


@pytest.mark.parametrize("indexed", [True, False], ids=["search-attributes", "workflow-id-prefix"])
async def test_purge_ends_a_run_its_parent_abandoned(dev_server: DevServer, tmp_path: Path, indexed: bool) -> None:
    """A run started as an abandoned child (planning sessions' submits before the one start path)
    has a parent but does not end with it: the purge ends it too."""
    from temporalio.worker import Worker

    from tests.support.abandoning_parent import AbandoningParent

    tag = uuid.uuid4().hex[:6]
    tenant = f"orphan-{tag}"
    settings = Settings(home=tmp_path, task_queue=f"purge-{tag}", search_attributes=indexed)
    tenants = TenantRegistry(settings.registry_location())
    tenants.create(tenant)
    parents = f"parents-{tag}"
    async with (
        running_worker(dev_server.client, settings, tenants=tenants),
        Worker(dev_server.client, task_queue=parents, workflows=[AbandoningParent]),
    ):
        dp = Duraplan(dev_server.client, settings, tenants=tenants)
        wait = {"name": "hold", "steps": [{"id": "go", "kind": "wait_for_event", "event": "go", "timeout": "1h"}]}
        run_id = await dev_server.client.execute_workflow(
            "TestAbandoningParent",
            args=[tenant, "orphan", wait, settings.task_queue, indexed],
            id=f"parent-{tag}",
            task_queue=parents,
        )
        orphan = dp.get_run(run_id, tenant=tenant)
        await _until(orphan, "waiting")  # its parent has completed; it goes on

        tenants.delete(tenant)
        report = await purge_tenant(dev_server.client, settings, tenants, tenant, settle_s=0.5)
        assert report.terminated == 1
        await _until(orphan, "terminated")
    tenants.close()


async def test_purge_gives_up_on_runs_that_keep_starting(
    dev_server: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client without the registry is not refused the deleted tenant: the purge says so instead
    of running for ever, and a purge after it stopped finishes."""
    monkeypatch.setattr(tenant_purge, "MAX_PURGE_S", 1.5)
    tenant = f"loop-{uuid.uuid4().hex[:6]}"
    settings = Settings(home=tmp_path, task_queue=f"purge-{tenant}")
    tenants = TenantRegistry(settings.registry_location())
    tenants.create(tenant)
    tenants.delete(tenant)
    unchecked = Duraplan(dev_server.client, settings)  # no registry: nothing refuses the name
    stop = asyncio.Event()

    async def keep_starting() -> None:
        while not stop.is_set():
            await unchecked.submit_plan(WAIT, tenant=tenant, session="s")
            await asyncio.sleep(0.05)

    starter = asyncio.create_task(keep_starting())
    try:
        with pytest.raises(TenantError, match="kept starting"):
            await purge_tenant(dev_server.client, settings, tenants, tenant, settle_s=1.0)
    finally:
        stop.set()
        await starter
    report = await purge_tenant(dev_server.client, settings, tenants, tenant, settle_s=0.5)
    assert report.terminated >= 1  # what started after the last pass
    tenants.close()


def test_cli_delete_without_temporal_says_how_to_finish(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURAPLAN_HOME", str(tmp_path))
    monkeypatch.setenv("DURAPLAN_ADDRESS", "127.0.0.1:1")  # nothing listens
    runner = CliRunner()
    assert runner.invoke(app, ["create", "acme"]).exit_code == 0

    live = runner.invoke(app, ["purge", "acme", "--yes"])
    assert live.exit_code == 1 and "is not deleted" in live.stderr, live.output

    r = runner.invoke(app, ["delete", "acme", "--yes"])
    assert r.exit_code == 1, r.output
    assert "deleted tenant acme" in r.stdout  # the registry part is done: keys no longer work
    assert "not purged" in r.stderr and "duraplan tenants purge acme --yes" in r.stderr
    assert "Traceback" not in r.output
    with TenantRegistry(tmp_path / "tenants.db") as reg:
        assert reg.is_retired("acme") and reg.list() == []


def test_cli_delete_then_purge_against_the_server(
    dev_server: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DURAPLAN_HOME", str(tmp_path))
    monkeypatch.setenv("DURAPLAN_ADDRESS", dev_server.address)
    tenant = f"cli-{uuid.uuid4().hex[:8]}"  # the server is shared: other tests' tenants are not this one's
    runner = CliRunner()
    assert runner.invoke(app, ["create", tenant]).exit_code == 0
    r: Any = runner.invoke(app, ["delete", tenant, "--yes"])
    assert r.exit_code == 0, r.output
    assert f"terminated 0 open run(s) and session(s) of {tenant}" in r.stdout and "no tool store here" in r.stdout
    assert runner.invoke(app, ["purge", tenant, "--yes"]).exit_code == 0
