"""Spare sandbox workers (executor/worker/spares.py): started ahead so a step does not wait for its worker,
and still one process per step, with the step's own limits, nothing inherited, nothing left behind.

Workers are watched from the host through /proc, as in test_sandbox_hostile.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_sandbox_hostile import _alive, _proc_limits, _spy_on_workers, _wait_for
from test_sandbox_hostile import monty_workers as all_monty_workers

from executor.errors import SettingsInvalid
from executor.service.config import Settings
from executor.worker import sandbox as sandbox_module
from executor.worker.sandbox import Sandbox, SandboxError, SandboxLimits
from executor.worker.spares import Spares, Worker

pytestmark = pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="inspects workers through /proc")

ROOT = Path(__file__).resolve().parents[1]
_FOREIGN: set[int] = set()


@pytest.fixture(autouse=True)
def _foreign_workers() -> None:
    """Workers this process had before the test (another test's worker, with its own spares, may
    live on in this process): not the test's, so not counted."""
    _FOREIGN.clear()
    _FOREIGN.update(all_monty_workers())


def monty_workers() -> list[int]:
    return [pid for pid in all_monty_workers() if pid not in _FOREIGN]


async def _ready_spares(sandbox: Sandbox, count: int) -> set[int]:
    """The pids of ``count`` idle spares, once all have exec'd monty (no step is running)."""
    await sandbox.settled()
    await _wait_for(lambda: len(monty_workers()) == count)
    assert sandbox.spares.ready == count
    return set(monty_workers())


async def test_consecutive_steps_run_on_spares_in_different_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Sandbox(spares=1) as sandbox:
        pids = _spy_on_workers(sandbox, monkeypatch)
        spares_seen = []
        for value in (1, 2, 3):
            spares_seen.append(await _ready_spares(sandbox, 1))
            assert await sandbox.run("{'value': x}", {"x": value}, SandboxLimits()) == {"value": value}
        assert len(set(pids)) == 3, "every step had a process of its own"
        for pid, spares in zip(pids, spares_seen, strict=True):
            assert spares == {pid}, "each step ran on the spare started before it"
        await _wait_for(lambda: not any(_alive(pid) for pid in pids))  # and each is gone after its step


async def test_a_step_on_a_warmed_up_spare_finds_its_session_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spares evaluate the host's warm-up expression in the session a step will use: it leaves no name
    behind, in that session or in one opened for other limits."""
    warmed: list[Any] = []
    warm_up = Spares._warm_up

    async def counted(session: Any) -> None:
        await warm_up(session)
        warmed.append(session)

    monkeypatch.setattr(Spares, "_warm_up", staticmethod(counted))
    async with Sandbox(spares=1) as sandbox:
        for limits in (SandboxLimits(), SandboxLimits(memory_mb=32)):  # the prepared session, then another
            for name in ("_", "value", "x"):
                (spare,) = await _ready_spares(sandbox, 1)
                pids = _spy_on_workers(sandbox, monkeypatch)
                with pytest.raises(SandboxError) as info:
                    await sandbox.run(name, {}, limits)
                assert info.value.error_type == "NameError"
                assert pids == [spare]
            assert await sandbox.run("y", {"y": 7}, limits) == 7  # inputs still reach the step's session
    assert len(warmed) >= 7, "every spare was warmed up"


async def test_spare_killed_while_idle_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Sandbox(spares=1) as sandbox:
        (spare,) = await _ready_spares(sandbox, 1)
        os.kill(spare, signal.SIGKILL)
        await _wait_for(lambda: not _alive(spare))
        pids = _spy_on_workers(sandbox, monkeypatch)
        assert await sandbox.run("sum(xs)", {"xs": [1, 2, 3]}, SandboxLimits()) == 6
        assert pids and pids[0] != spare
        # The sandbox keeps going on spares again.
        await _ready_spares(sandbox, 1)
        assert await sandbox.run("2 * 21", {}, SandboxLimits()) == 42


async def test_dead_spares_fail_no_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both spares die: each of the next steps still gets a live worker of its own."""
    async with Sandbox(spares=2) as sandbox:
        spares = await _ready_spares(sandbox, 2)
        for pid in spares:
            os.kill(pid, signal.SIGKILL)
        await _wait_for(lambda: not any(_alive(pid) for pid in spares))
        pids = _spy_on_workers(sandbox, monkeypatch)
        results = await asyncio.gather(*(sandbox.run("x * 2", {"x": i}, SandboxLimits()) for i in range(3)))
        assert results == [0, 2, 4]
        assert len(set(pids)) == 3 and not set(pids) & spares


async def test_step_on_a_spare_gets_its_own_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spare starts with the ceilings; the step that takes it lowers them, hard, before its code runs."""
    async with Sandbox(spares=1) as sandbox:
        (spare,) = await _ready_spares(sandbox, 1)
        assert int(_proc_limits(spare)["Max address space"][1]) == sandbox.worker_limits.address_space_mb << 20
        limits = SandboxLimits(memory_mb=32, cpu_seconds=0.5)
        seen: list[dict[str, tuple[str, str]]] = []
        pids: list[int] = []
        tighten = sandbox._tighten

        def spy(worker: Worker, step_limits: SandboxLimits) -> float | None:
            cpu_used = tighten(worker, step_limits)
            assert worker.pid is not None
            pids.append(worker.pid)
            seen.append(_proc_limits(worker.pid))  # what the step's code will run under
            return cpu_used

        monkeypatch.setattr(sandbox, "_tighten", spy)
        with pytest.raises(SandboxError) as info:
            await sandbox.run("while True:\n    pass", {}, limits)
        assert info.value.error_type == "TimeoutError"
        assert pids[0] == spare
        expected = sandbox.step_rlimits(limits)
        assert seen[0]["Max address space"] == (str(expected["AS"]),) * 2
        soft, hard = (int(v) for v in seen[0]["Max cpu time"])
        assert soft == hard and expected["CPU"] <= soft <= expected["CPU"] + 1

        (spare,) = await _ready_spares(sandbox, 1)
        with pytest.raises(SandboxError) as info:
            await sandbox.run("x = 'x' * (64 * 1024 * 1024)\nlen(x)", {}, limits)
        assert info.value.error_type == "MemoryError"
        assert pids[1] == spare
        assert seen[1]["Max address space"] == (str(expected["AS"]),) * 2


async def test_spares_have_no_environment_or_descriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spares are started in the background, long after the host's environment may have gained a
    secret: they inherit none of it."""
    monkeypatch.setenv("DURAPLAN_SECRET_PROBE", "hunter2")
    # Descriptors the host left inheritable (F_DUPFD copies are), one below 10 and one above.
    read_end, write_end = os.pipe()
    leaks = [fcntl.fcntl(write_end, fcntl.F_DUPFD, 3), fcntl.fcntl(write_end, fcntl.F_DUPFD, 40)]
    try:
        async with Sandbox(spares=2) as sandbox:
            await sandbox.run("1", {}, SandboxLimits())  # a replacement is started after the step
            for pid in await _ready_spares(sandbox, 2):
                assert Path(f"/proc/{pid}/environ").read_bytes() == b""
                fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
                if sandbox.launcher == "sh":  # (no C compiler, no bash) only descriptors 3-9 can be closed
                    assert fds[:3] == [0, 1, 2] and all(fd >= 10 for fd in fds[3:])
                else:
                    assert fds == [0, 1, 2]
    finally:
        for fd in (read_end, write_end, *leaks):
            os.close(fd)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


async def test_a_stopped_spare_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spare frozen while idle (SIGSTOP) would hold its step until the deadline: it is killed instead."""
    async with Sandbox(spares=1) as sandbox:
        (spare,) = await _ready_spares(sandbox, 1)
        os.kill(spare, signal.SIGSTOP)
        await _wait_for(lambda: _state(spare) in ("T", "t"))
        pids = _spy_on_workers(sandbox, monkeypatch)
        assert await sandbox.run("x + 1", {"x": 1}, SandboxLimits()) == 2
        assert pids and pids[0] != spare
        await _wait_for(lambda: not _alive(spare))  # killed, not left stopped


async def test_finished_steps_workers_are_killed_and_reaped(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _children()
    async with Sandbox(spares=2) as sandbox:
        pids = _spy_on_workers(sandbox, monkeypatch)
        for i in range(4):  # the spares, then workers started on demand
            assert await sandbox.run("x", {"x": i}, SandboxLimits()) == i
        await sandbox.settled()
        assert len(set(pids)) == 4
        assert not any(_alive(pid) for pid in pids), "settled() waits until they are gone"
        # and reaped: no zombie is left behind (each was let go of without a word to its pool)
        await _wait_for(lambda: not set(pids) & _children())
        assert len(_children() - before) == 2  # the two spares started after them, nothing else


async def test_a_failed_or_cancelled_steps_worker_is_killed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that returned leaves its worker idle until the refill kills it; one that failed or was
    cancelled (its code may still be running) does not wait for that."""
    monkeypatch.setattr(sandbox_module, "REFILL_DELAY_S", 3600.0)
    async with Sandbox(spares=1) as sandbox:
        pids = _spy_on_workers(sandbox, monkeypatch)
        with pytest.raises(SandboxError) as info:
            await sandbox.run("1 / 0", {}, SandboxLimits())
        assert info.value.error_type == "ZeroDivisionError"
        await _wait_for(lambda: not _alive(pids[0]))

        running = asyncio.ensure_future(sandbox.run("while True:\n    pass", {}, SandboxLimits(cpu_seconds=30)))
        await _wait_for(lambda: len(pids) == 2)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await _wait_for(lambda: not _alive(pids[1]))

        assert await sandbox.run("2", {}, SandboxLimits()) == 2
        await _wait_for(lambda: _state(pids[2]) == "S")  # alive, idle on its pipe, until the refill
        await sandbox.settled()
        assert not _alive(pids[2])


async def test_at_most_max_processes_finished_workers_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module, "REFILL_DELAY_S", 3600.0)
    async with Sandbox(spares=0, max_processes=1) as sandbox:
        pids = _spy_on_workers(sandbox, monkeypatch)
        assert [await sandbox.run("x", {"x": i}, SandboxLimits()) for i in range(3)] == [0, 1, 2]
        await _wait_for(lambda: not _alive(pids[1]) and not _alive(pids[2]))
        assert _alive(pids[0])
        await sandbox.settled()
        assert not _alive(pids[0])


async def test_a_burst_of_finished_workers_is_let_go_of_before_the_refill(monkeypatch: pytest.MonkeyPatch) -> None:
    """However many steps finish within the refill's delay, their workers are not all held (each is a
    pool with its process and descriptors) until it comes."""
    monkeypatch.setattr(sandbox_module, "REFILL_DELAY_S", 3600.0)
    before = _children()
    async with Sandbox(spares=0, max_processes=1) as sandbox:
        for i in range(sandbox_module._MAX_DONE + 6):
            assert await sandbox.run("x", {"x": i}, SandboxLimits()) == i
        await _wait_for(lambda: len(_children() - before) <= 8)  # killed, let go of and reaped


async def test_without_pidfds_workers_are_closed_through_their_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where pidfds are missing (Linux before 5.3) a finished step's worker is closed by its pool at
    once, and spares are checked through /proc: still one process per step, none left behind."""
    monkeypatch.delattr(os, "pidfd_open")
    async with Sandbox(spares=1) as sandbox:
        (spare,) = await _ready_spares(sandbox, 1)
        pids = _spy_on_workers(sandbox, monkeypatch)
        cpu: list[float] = []
        code = "t = 0\nfor i in range(600000):\n    t += i\nt"
        assert await sandbox.run(code, {}, SandboxLimits(), on_cpu=cpu.append) == sum(range(600000))
        assert pids == [spare] and cpu and cpu[0] > 0
        (dead,) = await _ready_spares(sandbox, 1)
        os.kill(dead, signal.SIGKILL)  # a spare that died while idle is found out through /proc
        await _wait_for(lambda: not _alive(dead))
        assert await sandbox.run("x", {"x": 1}, SandboxLimits()) == 1
        await sandbox.settled()
        assert len(set(pids)) == 2 and dead not in pids
        await _wait_for(lambda: not any(_alive(pid) for pid in pids))


async def test_step_cpu_is_measured() -> None:
    async with Sandbox(spares=1) as sandbox:
        await _ready_spares(sandbox, 1)
        cpu: list[float] = []
        code = "t = 0\nfor i in range(600000):\n    t += i\nt"
        assert await sandbox.run(code, {}, SandboxLimits(), on_cpu=cpu.append) == sum(range(600000))
        assert len(cpu) == 1 and 0 < cpu[0] < 5


async def test_without_spares_every_step_starts_its_own_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    async with Sandbox(spares=0) as sandbox:
        await sandbox.settled()
        assert monty_workers() == []
        pids = _spy_on_workers(sandbox, monkeypatch)
        assert [await sandbox.run("x", {"x": i}, SandboxLimits()) for i in range(2)] == [0, 1]
        assert len(set(pids)) == 2
        assert sandbox.spares.ready == 0


def _children() -> set[int]:
    """Every child process of this one, whatever it runs now (a worker still in its launcher too)."""
    pids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        pids.update(int(pid) for pid in (task / "children").read_text().split())
    return pids


async def test_no_worker_survives_the_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _children()
    async with Sandbox(spares=2) as sandbox:
        spy = _spy_on_workers(sandbox, monkeypatch)
        spares = await _ready_spares(sandbox, 2)
        running = asyncio.ensure_future(sandbox.run("while True:\n    pass", {}, SandboxLimits(cpu_seconds=30)))
        await _wait_for(lambda: bool(spy))
        await sandbox.run("1", {}, SandboxLimits())
        assert set(spy) == spares  # both steps ran on spares
        await sandbox.settled()  # their replacements are started
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        workers = spares | (_children() - before)
    assert len(workers) >= 4
    await _wait_for(lambda: not any(_alive(pid) for pid in workers))
    assert monty_workers() == []


def test_spares_die_with_a_killed_host(tmp_path: Path) -> None:
    """A worker process killed outright (no shutdown) leaves no sandbox worker running: idle spares exit
    when their host's end of the pipe closes."""
    script = tmp_path / "host.py"
    script.write_text(
        "import asyncio, sys\n"
        "from executor.worker.sandbox import Sandbox, SandboxLimits\n"
        "from test_sandbox_hostile import monty_workers\n"
        "async def main():\n"
        "    async with Sandbox(spares=2) as sandbox:\n"
        "        assert await sandbox.run('1 + 1', {}, SandboxLimits()) == 2\n"
        "        await sandbox.settled()\n"
        "        while len(monty_workers()) < 2:\n"
        "            await asyncio.sleep(0.01)\n"
        "        print(' '.join(map(str, monty_workers())), flush=True)\n"
        "        await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    host = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None
        spares = [int(pid) for pid in host.stdout.readline().split()]
        assert len(spares) == 2 and all(_alive(pid) for pid in spares)
    finally:
        host.kill()
        host.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in spares):  # reparented to init: dead (or a zombie init reaps)
        assert time.monotonic() < deadline, "a spare outlived its host"
        time.sleep(0.01)


def test_spares_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.from_env().sandbox_spares == 2
    monkeypatch.setenv("DURAPLAN_SANDBOX_SPARES", "0")
    assert Settings.from_env().sandbox_spares == 0
    for bad in ("-1", "two", "17", "1.5"):
        monkeypatch.setenv("DURAPLAN_SANDBOX_SPARES", bad)
        with pytest.raises(SettingsInvalid, match="DURAPLAN_SANDBOX_SPARES must be a whole number from 0 to 16"):
            Settings.from_env()
