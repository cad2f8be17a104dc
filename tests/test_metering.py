"""Metering: each step counts once across a worker SIGKILL and re-executed attempts; llm tokens and
cost land in the tenant's usage; the ledger never mixes tenants."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import litellm
import pytest
import pytest_asyncio
import respx
from test_worker_kill import _start_worker, _until

from duraplan.api import create_app
from executor import Duraplan, RunFailed, Settings, running_worker
from executor.service.devserver import DevServer
from executor.service.tenants import TenantRegistry
from executor.service.usage import utc_day
from executor.worker.metering import llm_cost
from tools import Store, default_registry
from tools.usage import AttemptUsage, RunEnd, UsageStore

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).resolve().parent / "support"
OPENAI = "https://api.openai.com/v1/chat/completions"


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


async def test_each_step_counts_once_across_worker_kills(dev_server: DevServer, tmp_path: Path) -> None:
    """Two SIGKILLs: one while a local step holds the workflow task open (so a finished local step
    is executed again on the next worker, same attempt), one mid remote step (dispatched again, not an attempt)."""
    queue = f"meter-kill-{uuid.uuid4().hex[:8]}"
    started, release1, release2 = tmp_path / "started", tmp_path / "release1", tmp_path / "release2"
    if str(SUPPORT) not in sys.path:
        sys.path.insert(0, str(SUPPORT))
    registry = default_registry(extra_modules=["kill_tools"])
    # A short workflow task timeout: the task a killed worker held is handed on after 5 s.
    settings = Settings(home=tmp_path, task_queue=queue, workflow_task_timeout=5)
    dp = Duraplan(dev_server.client, settings, registry)
    plan = {
        "name": "metered-crash",
        "steps": [
            {"id": "count", "kind": "tool", "tool": "test.count_local", "args": {"key": "executions"}},
            {
                "id": "hold",
                "kind": "tool",
                "tool": "test.hold_local",
                "args": {"started_file": str(started), "release_file": str(release1)},
            },
            {
                "id": "charge",
                "kind": "tool",
                "tool": "test.charge_then_hold",
                "args": {"key": "charges", "release_file": str(release2)},
                "retry": {"max_attempts": 3, "initial_interval": "100ms"},
                "depends_on": ["count", "hold"],
            },
            {"id": "done", "kind": "set", "value": "${steps.charge.output.total}"},
        ],
        "output": "${steps.done.output}",
    }
    store = Store(tmp_path / "store.db")
    usage = UsageStore(tmp_path / "store.db")
    workers = [_start_worker(dev_server, tmp_path, queue)]
    try:
        handle = await dp.submit_plan(plan, tenant="acme", session="s1")

        async def count_recorded_and_hold_running() -> bool:
            days = await usage.usage("acme", utc_day(), utc_day())
            return started.exists() and bool(days) and days[0].attempts.get("tool", 0) >= 1

        await _until(count_recorded_and_hold_running, timeout=60)
        _kill(workers[0])  # the workflow task (count done, hold in flight) never completed
        workers.append(_start_worker(dev_server, tmp_path, queue))
        release1.touch()
        await _until(lambda: store.kv_get("acme", "charges"), timeout=60)
        _kill(workers[1])  # mid remote step, after its effect
        workers.append(_start_worker(dev_server, tmp_path, queue))
        release2.touch()
        assert await handle.result(timeout=120) == 1
        assert await store.kv_get("acme", "executions") == 2, "the local step ran twice (replayed after the kill)"
        steps = {s["id"]: s for s in (await handle.status())["steps"]}
        assert steps["charge"]["attempts"] == 1, "a lost worker is not an attempt: the step is dispatched again"
        report = await dp.usage(tenant="acme")
        [today] = report.days
        assert today.steps == {"tool": 3, "set": 1}, "every step once: count, hold, charge, done"
        # count's attempt 1 ran twice and hold's once per worker, but count once each; charge's
        # attempt 1 was dispatched again after its worker was killed (the killed execution never
        # finished, so recorded nothing; the second one did).
        assert today.attempts == {"tool": 3}
        assert (today.runs_started, today.runs_completed, today.runs_failed) == (1, 1, 0)
        assert today.activity_seconds > 0
    finally:
        store.close()
        usage.close()
        for proc in workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=15)


def _completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500},
    }


@pytest.fixture
def offline_litellm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(litellm, "disable_aiohttp_transport", True)  # respx sees httpx only
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    yield


@pytest_asyncio.fixture(loop_scope="session")
async def llm_dp(dev_server: DevServer, tmp_path: Path, offline_litellm: None) -> AsyncIterator[Duraplan]:
    settings = Settings(
        home=tmp_path, task_queue=f"meter-llm-{uuid.uuid4().hex[:8]}", default_model="openai/gpt-4o-mini"
    )
    async with running_worker(dev_server.client, settings):
        yield Duraplan(dev_server.client, settings)


async def test_llm_tokens_and_cost_land_in_the_tenants_usage(llm_dp: Duraplan) -> None:
    plan = {
        "name": "ask",
        "steps": [
            {"id": "ask", "kind": "llm", "prompt": "Say hi", "retry": {"initial_interval": "100ms"}},
            {"id": "twice", "kind": "code", "code": "text * 2", "inputs": {"text": "${steps.ask.output}"}},
        ],
        "output": "${steps.twice.output}",
    }
    with respx.mock() as mock:
        route = mock.post(OPENAI).mock(
            side_effect=[
                httpx.Response(503, json={"error": {"message": "busy", "type": "server_error"}}),
                httpx.Response(200, json=_completion("hi")),
            ]
        )
        handle = await llm_dp.submit_plan(plan, tenant="metered", session="s")
        assert await handle.result() == "hihi"
    assert route.call_count == 2, "the provider's HTTP route was hit (once refused, once answered)"
    [today] = (await llm_dp.usage(tenant="metered")).days
    assert today.steps == {"llm": 1, "code": 1}, "the retried llm step counts once"
    assert today.attempts == {"llm": 2, "code": 1}, "attempts count separately"
    assert (today.llm_prompt_tokens, today.llm_completion_tokens) == (1200, 300)
    expected = llm_cost("openai/gpt-4o-mini", 1200, 300)
    assert expected > 0, "litellm's cost map prices the model"
    assert today.llm_cost_usd == pytest.approx(expected)
    assert today.code_cpu_seconds >= 0
    assert (today.runs_started, today.runs_completed) == (1, 1)
    failing = {"name": "no", "steps": [{"id": "no", "kind": "fail", "message": "refused"}]}
    with pytest.raises(RunFailed, match="refused"):
        await (await llm_dp.submit_plan(failing, tenant="metered", session="s")).result()
    [today] = (await llm_dp.usage(tenant="metered")).days
    assert (today.runs_started, today.runs_completed, today.runs_failed) == (2, 1, 1)
    assert today.steps == {"llm": 1, "code": 1, "fail": 1}
    other = await llm_dp.usage(tenant="someone-else")
    assert other.days == [] and other.total.llm_cost_usd == 0


# ---- the ledger on its own (no server) ----------------------------------------------------------


def _attempt(tenant: str, key: str, attempt: int, **kw: Any) -> AttemptUsage:
    return AttemptUsage(tenant=tenant, step_key=key, attempt=attempt, kind="tool", outcome="completed", **kw)


async def test_ledger_counts_steps_once_attempts_separately_and_per_tenant(db_location: str | Path) -> None:
    """On both backends: SQLite, and the shared PostgreSQL of DURAPLAN_DATABASE_URL."""
    store = UsageStore(db_location)
    try:
        day = "2026-11-29"
        assert await store.record_attempt(_attempt("a", "r/0/x", 1, day=day, activity_seconds=1.0))
        assert not await store.record_attempt(_attempt("a", "r/0/x", 1, day=day, activity_seconds=1.0)), "replayed"
        assert await store.record_attempt(_attempt("a", "r/0/x", 2, day="2026-11-30", activity_seconds=2.0))
        assert await store.record_attempt(_attempt("a", "r/1/x", 1, day=day)), "a restart is a new generation"
        assert await store.record_attempt(_attempt("b", "r/0/x", 1, day=day)), "tenant b's run of the same id"
        assert await store.record_run_start("a", "r/0", day)
        assert not await store.record_run_start("a", "r/0", day)
        end = RunEnd("a", "r/0", 0, day, "2026-11-30", "completed", {"set": 2})
        await store.record_run_end(end)
        await store.record_run_end(end)  # a re-executed local activity
        await store.record_run_end(RunEnd("a", "r/0", 0, day, "2026-11-30", "failed", {"set": 5}))
        first, second = await store.usage("a", day, "2026-11-30")
        assert (first.steps, first.attempts, first.activity_seconds) == ({"tool": 2}, {"tool": 2}, 1.0)
        assert (second.steps, second.attempts, second.activity_seconds) == ({"set": 2}, {"tool": 1}, 2.0)
        assert (first.runs_started, second.runs_completed, second.runs_failed) == (1, 1, 0)
        [b_day] = await store.usage("b", day, "2026-11-30")
        assert (b_day.steps, b_day.runs_started) == ({"tool": 1}, 0)
    finally:
        store.close()


async def test_usage_endpoint_is_scoped_to_the_api_keys_tenant(tmp_path: Path, client: Any) -> None:
    tenants = TenantRegistry(tmp_path / "tenants.db")
    usage = UsageStore(tmp_path / "store.db")
    try:
        keys = {}
        for name in ("acme", "globex"):
            tenants.create(name)
            keys[name] = tenants.issue_key(name, label="test")
        await usage.record_attempt(_attempt("acme", "r/0/x", 1, day="2026-11-29", cost_usd=0.5))
        dp = Duraplan(client, Settings(home=tmp_path), tenants=tenants, usage=usage)
        app = create_app(dp, tenants)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:

            async def get(tenant: str, query: str) -> httpx.Response:
                return await http.get(f"/v1/usage?{query}", headers={"Authorization": f"Bearer {keys[tenant]}"})

            acme = (await get("acme", "day=2026-11-29")).json()
            assert acme["tenant"] == "acme" and acme["total"]["steps"] == {"tool": 1}
            assert acme["total"]["llm_cost_usd"] == 0.5
            globex = (await get("globex", "from=2026-11-01&to=2026-11-30")).json()
            assert (globex["tenant"], globex["days"]) == ("globex", [])
            for query, status in [("day=yesterday", 400), ("from=2026-11-30&to=2026-11-01", 422)]:
                problem = await get("acme", query)
                assert problem.status_code == status
                assert problem.headers["content-type"] == "application/problem+json"
            unauthenticated = await http.get("/v1/usage")
            assert unauthenticated.status_code == 401
    finally:
        usage.close()
        tenants.close()


def test_usage_cli_reads_the_homes_ledger(tmp_path: Path) -> None:
    usage = UsageStore(tmp_path / "store.db")
    try:
        asyncio.run(usage.record_attempt(_attempt("acme", "r/0/x", 1, day="2026-11-29", prompt_tokens=5)))
    finally:
        usage.close()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "DURAPLAN_HOME": str(tmp_path),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    base = [sys.executable, "-m", "duraplan.cli", "usage", "--tenant", "acme"]
    proc = subprocess.run([*base, "--day", "2026-11-29", "--json"], cwd=ROOT, env=env, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["total"]["steps"], report["total"]["llm_prompt_tokens"]) == ({"tool": 1}, 5)
