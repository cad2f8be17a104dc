"""Past one machine: workers with their own homes share one PostgreSQL store (DURAPLAN_DATABASE_URL).

Two ``duraplan worker`` processes with different homes poll one queue of one dev server; one is
SIGKILLed while it holds steps whose kv effect has happened; the other finishes them without a
second effect, and both workers see the same kv.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from duraplan.tenants_cli import app as tenants_app
from executor import Duraplan, Settings
from executor.errors import SettingsInvalid
from executor.service.devserver import DevServer
from tools import DatabaseUnavailable, Store, default_registry

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).resolve().parent / "support"
RUNS = 4


def _start_worker(server: DevServer, home: Path, queue: str, database_url: str) -> subprocess.Popen[bytes]:
    """``duraplan worker`` in its own session; stderr goes to a file, so a chatty worker never blocks."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{SUPPORT}",
        "DURAPLAN_ADDRESS": server.address,
        "DURAPLAN_TASK_QUEUE": queue,
        "DURAPLAN_HOME": str(home),
        "DURAPLAN_DATABASE_URL": database_url,
        "DURAPLAN_TOOL_MODULES": "kill_tools",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "duraplan.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(home.parent / f"worker-{home.name}-{uuid.uuid4().hex[:6]}.log").open("wb"),
        start_new_session=True,
    )


async def _polling(proc: subprocess.Popen[bytes]) -> None:
    """Until the worker says it polls (its first line on stdout), or fail with what it said."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=120)
    assert b"worker polling" in line, f"worker did not start (its stderr is in the test's tmp dir): {line!r}"


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)


async def _until(probe: Any, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def _charge_plan(release: Path) -> dict[str, Any]:
    return {
        "name": "charge-on-a-shared-store",
        "steps": [
            {
                "id": "charge",
                "kind": "tool",
                "tool": "test.charge_then_hold",
                "args": {"key": "charges", "release_file": str(release)},
                "retry": {"max_attempts": 3, "initial_interval": "100ms"},
            }
        ],
        "output": "${steps.charge.output}",
    }


VIEW_PLAN = {
    "name": "kv-view",
    "steps": [{"id": "view", "kind": "tool", "tool": "test.kv_view", "args": {}}],
    "output": "${steps.view.output}",
}


async def test_two_workers_one_postgres_store_kill_one_mid_step(
    dev_server: DevServer, tmp_path: Path, postgres_url: str
) -> None:
    queue = f"shared-{uuid.uuid4().hex[:8]}"
    release = tmp_path / "release"
    homes = {name: tmp_path / name for name in ("a", "b")}
    if str(SUPPORT) not in sys.path:
        sys.path.insert(0, str(SUPPORT))
    registry = default_registry(extra_modules=["kill_tools"])
    dp = Duraplan(dev_server.client, Settings(home=tmp_path / "client", task_queue=queue), registry)
    store = Store(postgres_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # Worker A alone takes every run: each charges once (kv) and holds.
        procs.append(_start_worker(dev_server, homes["a"], queue, postgres_url))
        handles = [await dp.submit_plan(_charge_plan(release), tenant="acme", session="s") for _ in range(RUNS)]
        await _until(lambda: _equals(store.kv_get("acme", "charges"), RUNS), timeout=120)

        # Worker B (another home, same database) is up; A is killed mid-step; the steps are released.
        procs.append(_start_worker(dev_server, homes["b"], queue, postgres_url))
        await _polling(procs[1])
        os.killpg(procs[0].pid, signal.SIGKILL)
        procs[0].wait(timeout=10)
        release.touch()

        results = [await h.result(timeout=120) for h in handles]
        # A lost worker is not an attempt: the step is dispatched again as attempt 1, on worker B.
        assert all(r["attempt"] == 1 for r in results), results
        # Each retry got the first attempt's recorded result: every charge happened exactly once.
        assert sorted(r["total"] for r in results) == list(range(1, RUNS + 1))
        assert await store.kv_get("acme", "charges") == RUNS
        assert await store.effect_count("acme") == RUNS

        # A comes back (same home); both workers read the kv, and see the same.
        procs.append(_start_worker(dev_server, homes["a"], queue, postgres_url))
        await _polling(procs[2])
        views: dict[str, Any] = {}
        for _ in range(10):
            batch = [await dp.submit_plan(VIEW_PLAN, tenant="acme", session="v") for _ in range(8)]
            for handle in batch:
                view = await handle.result(timeout=60)
                views.setdefault(view["home"], view["kv"])
                assert view["kv"] == {"charges": RUNS}
            if len(views) == 2:
                break
        assert set(views) == {str(homes["a"]), str(homes["b"])}, "both workers served a read"
        assert not list(tmp_path.rglob("*.db")), "no worker fell back to a SQLite file in its home"
    finally:
        store.close()
        for proc in procs:
            _stop(proc)


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


def test_database_url_is_resolved_at_the_edge_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://duraplan:pa55word@db.internal:5432/duraplan"
    monkeypatch.setenv("DURAPLAN_DATABASE_URL", url)
    settings = Settings.from_env(home=Path("/srv/duraplan"))
    assert settings.store_location() == settings.registry_location() == url
    assert "pa55word" not in repr(settings)
    assert "cloud-key" not in repr(Settings(api_key="cloud-key"))  # the other credential in Settings
    monkeypatch.setenv("DURAPLAN_DATABASE_URL", "mysql://root:pa55word@db/x")
    with pytest.raises(SettingsInvalid, match="DURAPLAN_DATABASE_URL") as bad:
        Settings.from_env()
    assert "pa55word" not in str(bad.value)
    monkeypatch.delenv("DURAPLAN_DATABASE_URL")
    assert Settings.from_env(home=Path("/srv/d")).store_location() == Path("/srv/d/store.db")


def test_unreachable_database_is_one_clear_error_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = "postgresql://duraplan:pa55word@127.0.0.1:1/duraplan"  # nothing listens on port 1
    with pytest.raises(DatabaseUnavailable, match=r"at postgresql://duraplan@127\.0\.0\.1:1/duraplan: ") as info:
        Store(closed)
    assert "pa55word" not in str(info.value)
    assert isinstance(info.value, ConnectionError)
    # libpq quotes the token it cannot parse, here the password: the message must not.
    with pytest.raises(DatabaseUnavailable, match="not a valid postgresql:// connection URI") as info:
        Store("postgresql://duraplan:pa55%zzword@127.0.0.1:1/duraplan")
    assert "pa55" not in str(info.value)

    monkeypatch.setenv("DURAPLAN_HOME", str(tmp_path))
    monkeypatch.setenv("DURAPLAN_DATABASE_URL", closed)
    result = CliRunner().invoke(tenants_app, ["list"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot connect to PostgreSQL") and len(result.stderr.splitlines()) == 1
    assert "pa55word" not in result.output + result.stderr


def test_postgres_sessions_bound_how_long_locks_are_held_and_awaited(postgres_url: str) -> None:
    """A worker cut off inside a transaction would hold its key's lock for every worker: the
    server ends such sessions, and waiters give up (their step is retried)."""
    with Store(postgres_url) as store, store._db.reading() as conn:
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()[0] == "30s"
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "1min"
