"""The embedded dev server: search attributes registered, SQLite persistence across restarts."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment

from executor.service.config import SA_TENANT, SEARCH_ATTRIBUTES
from executor.service.devserver import DevServer, DevServerError, temporal_cli_path, test_server_path

# No worker ever polls these queues: a started execution just stays RUNNING.
UNREGISTERED_WORKFLOW = "DuraplanDevServerProbe"


def _queue() -> str:
    return f"nobody-polls-{uuid.uuid4().hex[:8]}"


async def _listed(client: Client, query: str, workflow_id: str, timeout: float = 10.0) -> bool:
    """Visibility is eventually consistent: poll the listing for ``workflow_id``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        ids = [wf.id async for wf in client.list_workflows(query)]
        if workflow_id in ids:
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)


def test_binaries_found() -> None:
    assert Path(temporal_cli_path()).name == "temporal"
    assert Path(test_server_path()).name == "temporal-test-server"


async def test_search_attributes_registered(client: Client, dev_server: DevServer) -> None:
    assert dev_server.address.startswith("127.0.0.1:")
    assert dev_server.ui_url is None
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    for key in SEARCH_ATTRIBUTES:
        assert listed.custom_attributes[key.name] == IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD

    workflow_id = f"probe-{uuid.uuid4().hex}"
    handle = await client.start_workflow(
        UNREGISTERED_WORKFLOW,
        id=workflow_id,
        task_queue=_queue(),
        search_attributes=TypedSearchAttributes([SearchAttributePair(SA_TENANT, "x")]),
    )
    try:
        assert await _listed(client, 'DuraplanTenant = "x"', workflow_id)
        for key in SEARCH_ATTRIBUTES:  # an unregistered attribute would make the query fail
            [_ async for _ in client.list_workflows(f'{key.name} = "nothing-{workflow_id}"')]
    finally:
        await handle.terminate("test done")


async def test_sqlite_store_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    workflow_id = f"persist-{uuid.uuid4().hex}"

    async with DevServer(tmp_path, port=0, ui=False, db_file=db) as server:
        await server.client.start_workflow(UNREGISTERED_WORKFLOW, id=workflow_id, task_queue=_queue())
    assert db.exists()
    assert (tmp_path / "temporal.log").exists()

    async with DevServer(tmp_path, port=0, ui=False, db_file=db) as server:
        desc = await server.client.get_workflow_handle(workflow_id).describe()
        assert desc.status == WorkflowExecutionStatus.RUNNING
        assert desc.workflow_type == UNREGISTERED_WORKFLOW
        await server.client.get_workflow_handle(workflow_id).terminate("test done")


async def test_restarts_on_its_port_after_being_killed(tmp_path: Path) -> None:
    """A server SIGKILLed with clients connected leaves its side of their connections in TIME_WAIT:
    the port is free for a new server (Temporal binds with SO_REUSEADDR), so a restart on it
    must not be refused as 'already in use', and what the killed one stored is there."""
    db = tmp_path / "state.db"
    workflow_id = f"killed-{uuid.uuid4().hex}"
    first = DevServer(tmp_path, port=0, ui=False, db_file=db)
    await first.start()
    try:
        await first.client.start_workflow(UNREGISTERED_WORKFLOW, id=workflow_id, task_queue=_queue())
        assert first.pid is not None
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        await first.stop()
    async with DevServer(tmp_path, port=first.port, ui=False, db_file=db) as second:
        handle = second.client.get_workflow_handle(workflow_id)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        await handle.terminate("test done")


async def test_early_exit_reports_log_tail(tmp_path: Path) -> None:
    server = DevServer(tmp_path, port=0, ui=False, in_memory=True, extra_args=("--no-such-flag",))
    with pytest.raises(DevServerError, match="no-such-flag"):
        async with server:
            pass
    assert server.pid is None


_HOLDER = """
import asyncio, sys
from pathlib import Path
from executor.service.devserver import DevServer

async def main() -> None:
    async with DevServer(Path(sys.argv[1]), port=0, ui=False, in_memory=True) as server:
        print(server.pid, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv")
async def test_server_dies_with_a_killed_owner(tmp_path: Path) -> None:
    """SIGKILL skips atexit: the server must still not outlive the process that started it."""
    owner = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _HOLDER, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    assert owner.stdout is not None
    line = await asyncio.wait_for(owner.stdout.readline(), timeout=60)
    server_pid = int(line)
    assert _alive(server_pid)
    owner.kill()
    await owner.wait()
    deadline = asyncio.get_running_loop().time() + 15
    while _alive(server_pid):
        assert asyncio.get_running_loop().time() < deadline, "dev server outlived its killed owner"
        await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running and not a zombie (the server's parent is gone, so init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # or it exited between open and read
        return False


async def test_time_skipping_env(time_skipping_env: WorkflowEnvironment) -> None:
    assert time_skipping_env.supports_time_skipping
