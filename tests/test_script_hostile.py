"""Hostile scripts (the sandbox corpus, run after a host call, so from a loaded snapshot) fail only
their own segment: the host is intact and the sandbox serves the next script."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from test_sandbox_hostile import HOSTILE, PROBE_LIMITS

from executor.engine.models import ScriptSegment
from executor.worker.sandbox import Sandbox, SandboxError
from executor.worker.script import run_segment

# Where a script differs from a code step: time.sleep() is refused (sleep() is the durable timer).
SCRIPT_ERRORS = {"sleep_forever": ("RuntimeError",)}

pytestmark = pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="the corpus probes through /proc")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sandbox() -> AsyncIterator[Sandbox]:
    async with Sandbox() as sb:
        yield sb


async def _echo(fn: str, args: list[Any], kwargs: dict[str, Any], index: int) -> Any:
    return kwargs


def _segment(code: str, memory_mb: int) -> ScriptSegment:
    return ScriptSegment("t", "r", "s", code, {}, 0, 1, "k", memory_mb=memory_mb, cpu_seconds=PROBE_LIMITS.cpu_seconds)


async def _run_script(sandbox: Sandbox, code: str, memory_mb: int = PROBE_LIMITS.memory_mb) -> dict[str, Any]:
    seg = _segment(code, memory_mb)
    while True:
        result = await run_segment(sandbox, seg, _echo)
        if "call" not in result:
            return result
        seg.snapshot, seg.resume, seg.index = result["snapshot"], result["outcome"], seg.index + 1


@pytest.mark.parametrize("name", list(HOSTILE))
async def test_hostile_script_fails_only_its_own_step(sandbox: Sandbox, tmp_path: Path, name: str) -> None:
    probe = HOSTILE[name]
    canary = tmp_path / "canary.txt"
    canary.write_text("the host's own data\n")
    environ = dict(os.environ)
    code = "first = tool('debug.echo', value=1)\n" + probe.code.replace("CANARY", str(canary))
    try:
        result = await _run_script(sandbox, code, probe.memory_mb)
        error_type = result["failed"][0] if "failed" in result else f"completed: {result}"
    except SandboxError as exc:  # a crashed worker: retryable, the workflow retries the segment
        error_type = exc.error_type
    expected = SCRIPT_ERRORS.get(name, probe.errors)
    assert error_type in {*expected, "SandboxCrashed"}, f"{name}: {error_type}"
    assert canary.read_text() == "the host's own data\n"
    assert dict(os.environ) == environ
    honest = await _run_script(sandbox, "x = tool('debug.echo', value=41)\nx['value'] + 1")
    assert honest == {"done": True, "output": 42}


async def test_state_too_big_to_carry_fails_the_step(sandbox: Sandbox) -> None:
    code = "import random\nbig = [random.random() for _ in range(200000)]\ntool('debug.echo', value=1)"
    result = await _run_script(sandbox, code, memory_mb=64)
    assert result["failed"][0] == "SnapshotTooLarge"
