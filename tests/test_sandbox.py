"""Code steps run in the pydantic-monty sandbox: hostile snippets fail only their own step."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from executor import Duraplan, Settings, running_worker
from executor.service.devserver import DevServer
from executor.worker.sandbox import Sandbox, SandboxError, SandboxLimits

HOSTILE = {
    "infinite_loop": ("while True:\n    pass", "TimeoutError"),
    "memory_bomb": ("x = [0] * (10 ** 9)\nx", "MemoryError"),
    "string_bomb": ("'x' * (10 ** 10)", "MemoryError"),
    "open_file": ("open('/etc/passwd').read()", "PermissionError"),
    "import_os_environ": ("import os\nos.environ['HOME']", "RuntimeError"),
    "os_system": ("import os\nos.system('touch /tmp/pwned')", "AttributeError"),
    "deep_recursion": ("def f(n):\n    return f(n + 1)\nf(0)", "RecursionError"),
    "import_socket": ("import socket\nsocket.socket()", "ModuleNotFoundError"),
    "import_subprocess": ("import subprocess\nsubprocess.run(['id'])", "ModuleNotFoundError"),
    "dunder_escape": ("().__class__.__base__.__subclasses__()", "AttributeError"),
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sb:
        yield sb


async def test_inputs_and_last_expression(sandbox: Sandbox) -> None:
    assert await sandbox.run("sum(xs) * k", {"xs": [1, 2, 3], "k": 2}, SandboxLimits()) == 12


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_snippet_fails_with_its_error(sandbox: Sandbox, name: str) -> None:
    code, error_type = HOSTILE[name]
    with pytest.raises(SandboxError) as info:
        await sandbox.run(code, {}, SandboxLimits(memory_mb=32, cpu_seconds=1.0))
    assert info.value.error_type == error_type, str(info.value)
    assert not Path("/tmp/pwned").exists()
    # The pool still serves the next step.
    assert await sandbox.run("1 + 1", {}, SandboxLimits()) == 2


async def test_no_state_survives_between_steps(sandbox: Sandbox) -> None:
    await sandbox.run("leak = 42", {}, SandboxLimits())
    with pytest.raises(SandboxError) as info:
        await sandbox.run("leak", {}, SandboxLimits())
    assert info.value.error_type == "NameError"


async def test_hostile_steps_fail_only_themselves(dev_server: DevServer, tmp_path: Path) -> None:
    steps: list[dict[str, Any]] = [
        {"id": name, "kind": "code", "code": code, "on_error": "continue", "cpu_seconds": 1, "memory_mb": 32}
        for name, (code, _) in HOSTILE.items()
    ]
    steps.append({"id": "honest", "kind": "code", "code": "n * 2", "inputs": {"n": 21}})
    plan = {"name": "hostile", "steps": steps, "output": "${steps.honest.output}"}
    settings = Settings(home=tmp_path, task_queue=f"sandbox-{uuid.uuid4().hex[:8]}")
    async with running_worker(dev_server.client, settings):
        handle = await Duraplan(dev_server.client, settings).submit_plan(plan, tenant="sec", session="s")
        assert await handle.result() == 42
        status = await handle.status()
    by_id = {s["id"]: s for s in status["steps"]}
    for name, (_, error_type) in HOSTILE.items():
        assert by_id[name]["state"] == "failed", name
        assert by_id[name]["error"]["type"] == error_type, (name, by_id[name]["error"])
        assert by_id[name]["attempts"] == 1, "sandbox errors are deterministic: not retried"
    assert by_id["honest"]["state"] == "completed"
