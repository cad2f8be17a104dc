"""The edges a new user hits first (issue 11 item 11): `duraplan dev` stops its Temporal server on
SIGTERM and says one line on a busy port; `duraplan run` of a bad plan reports the plan without a
server; a script using `async with Duraplan` exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from executor.service.devserver import DevServer
from tests.test_cli import ROOT, Cli
from tests.test_cli import cli as cli  # the module fixture: a worker on the dev server

pytestmark = pytest.mark.timeout(120)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "DURAPLAN_HOME": str(tmp_path / "home"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "COLUMNS": "200",
        **extra,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_run_of_an_invalid_plan_without_a_server_reports_the_plan(tmp_path: Path) -> None:
    plan = tmp_path / "bad.json"
    plan.write_text(json.dumps({"name": "bad", "steps": [{"id": "a", "kind": "tool", "tool": "no.such", "args": {}}]}))
    result = await Cli(_env(tmp_path, DURAPLAN_ADDRESS="127.0.0.1:1"))("run", str(plan))
    assert result.code == 2, result.err
    assert "plan is invalid" in result.err and "no.such" in result.err
    assert "cannot reach Temporal" not in result.err and "Traceback" not in result.err


async def test_json_arguments_the_parser_cannot_hold_are_one_line(tmp_path: Path) -> None:
    """--inputs, --input and --payload nested past the parser's stack, or holding a 5,000-digit
    integer, were a RecursionError / ValueError traceback."""
    plan = tmp_path / "ok.json"
    plan.write_text(json.dumps({"name": "ok", "steps": [{"id": "a", "kind": "set", "value": 1}]}))
    deep, big = "[" * 5000 + "]" * 5000, "9" * 5000
    (tmp_path / "deep.json").write_text(deep)
    cli = Cli(_env(tmp_path, DURAPLAN_ADDRESS="127.0.0.1:1"))
    for args, said in [
        (("run", str(plan), "--inputs", f"@{tmp_path / 'deep.json'}"), "--inputs nests too deep"),
        (("run", str(plan), "--input", f"x={deep}"), "--input x nests too deep"),
        (("run", str(plan), "--input", f"x={big}"), "--input x is not usable JSON: Exceeds the limit"),
        (("events", "send", "r", "go", "--payload", deep), "--payload nests too deep"),
    ]:
        result = await cli(*args)
        assert result.code == 1 and said in result.err, result.err
        assert "Traceback" not in result.err and "Error:" not in result.err, result.err


async def test_dev_on_a_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = await Cli(_env(tmp_path))("dev", "--port", str(port), "--in-memory")
    assert result.code == 1
    assert "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) == 1 and "in use" in result.err


async def test_dev_stops_its_temporal_server_on_sigterm(tmp_path: Path) -> None:
    port, api_port = _free_port(), _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "duraplan.cli",
        "dev",
        "--port",
        str(port),
        "--api-port",
        str(api_port),
        "--in-memory",
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        while b"worker ready" not in await asyncio.wait_for(proc.stdout.readline(), 90):
            pass
        assert _listening(port)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        assert not _listening(port), "the Temporal server outlived `duraplan dev`"
        assert proc.returncode == 143, proc.returncode
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_worker_shuts_down_on_sigterm(tmp_path: Path, dev_server: DevServer) -> None:
    """A deployment stops a worker with SIGTERM: it leaves the task queue and exits 143, at once."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "duraplan.cli",
        "worker",
        cwd=ROOT,
        env=_env(tmp_path, DURAPLAN_ADDRESS=dev_server.address, DURAPLAN_TASK_QUEUE=f"term-{os.getpid()}"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        while b"worker polling" not in await asyncio.wait_for(proc.stdout.readline(), 90):
            pass
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 143
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


SCRIPT = """
import asyncio
from executor import Duraplan, Settings

async def main():
    async with await Duraplan.connect(Settings.from_env()) as dp:
        handle = await dp.submit_plan(
            {"name": "s", "steps": [{"id": "a", "kind": "set", "value": 1}], "output": "${steps.a.output}"},
            tenant="script", session="s",
        )
        print(await handle.result())

asyncio.run(main())
"""


async def test_a_script_using_async_with_exits_zero(cli: Cli, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    for _ in range(3):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            cwd=ROOT,
            env=cli.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert (proc.returncode, out.decode().strip()) == (0, "1"), err.decode()[-2000:]
