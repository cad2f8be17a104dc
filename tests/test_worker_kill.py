"""A worker SIGKILLed mid-step: a new worker finishes the run without spending one of the step's
attempts, and the step's effect happened once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from executor import Duraplan, Settings
from executor.service.devserver import DevServer
from tools import Store, default_registry

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).resolve().parent / "support"


def _start_worker(server: DevServer, home: Path, queue: str) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{SUPPORT}",
        "DURAPLAN_ADDRESS": server.address,
        "DURAPLAN_TASK_QUEUE": queue,
        "DURAPLAN_HOME": str(home),
        "DURAPLAN_TOOL_MODULES": "kill_tools",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "duraplan.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # not a pipe nobody reads: a chatty worker would block on it
        start_new_session=True,
    )


async def _until(probe: Callable[[], Awaitable[Any]], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _kill_client(server: DevServer, home: Path, name: str) -> tuple[Duraplan, str, Path]:
    """A client whose registry has the kill tools (tests/support/kill_tools.py), a task queue of
    its own, and the file the held tool waits for: (client, queue, release file)."""
    queue = f"{name}-{uuid.uuid4().hex[:8]}"
    if str(SUPPORT) not in sys.path:
        sys.path.insert(0, str(SUPPORT))
    registry = default_registry(extra_modules=["kill_tools"])
    return Duraplan(server.client, Settings(home=home, task_queue=queue), registry), queue, home / "release"


def _stop(workers: Sequence[subprocess.Popen[bytes] | None]) -> None:
    for proc in workers:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)


async def test_killed_worker_resumes_and_effect_happens_once(dev_server: DevServer, tmp_path: Path) -> None:
    dp, queue, release = _kill_client(dev_server, tmp_path, "kill")
    plan = {
        "name": "charge-after-crash",
        "steps": [
            {
                "id": "charge",
                "kind": "tool",
                "tool": "test.charge_then_hold",
                "args": {"key": "charges", "release_file": str(release)},
                # One attempt: a killed worker is not the step's fault and costs none (issue 11 item 3).
                "retry": {"max_attempts": 1},
            },
            {"id": "after", "kind": "code", "code": "total + 1", "inputs": {"total": "${steps.charge.output.total}"}},
        ],
        "output": {"charge": "${steps.charge.output}", "after": "${steps.after.output}"},
    }
    first = _start_worker(dev_server, tmp_path, queue)
    second = None
    store = Store(tmp_path / "store.db")
    try:
        handle = await dp.submit_plan(plan, tenant="acme", session="s1")
        # The effect has happened and the step is holding: kill the worker mid-step.
        await _until(lambda: store.kv_get("acme", "charges"), timeout=60)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        release.touch()
        second = _start_worker(dev_server, tmp_path, queue)
        result = await handle.result(timeout=120)
        assert result["charge"]["total"] == 1, "the retried step must not charge again"
        assert result["charge"]["attempt"] == 1, "re-dispatched on the new worker, not a new attempt"
        assert result["after"] == 2
        assert await store.kv_get("acme", "charges") == 1
        status = await handle.status()
        charge = next(s for s in status["steps"] if s["id"] == "charge")
        assert charge["attempts"] == 1
        assert charge["state"] == "completed"
    finally:
        store.close()
        _stop([first, second])
