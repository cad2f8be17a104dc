"""``duraplan plan`` and ``duraplan chat`` (planner.cli's typer app) through typer's CliRunner."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import respx
from planner_kit import GOOD_OUTPUT, GOOD_PLAN, OPENAI_URL, good_plan, openai_completion
from typer.testing import CliRunner, Result

from executor import RunHandle
from planner import ChatSession
from planner.cli import app
from planner.testing import ScriptedModel


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input)


def test_plan_without_a_model_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURAPLAN_MODEL", raising=False)
    result = invoke("plan", "greet everyone")
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no model configured") and "DURAPLAN_MODEL" in lines[0]
    assert "Traceback" not in result.output


def test_plan_without_the_provider_key_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    result = invoke("plan", "greet everyone", "--model", "anthropic/claude-sonnet-4-5")
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "ANTHROPIC_API_KEY" in result.stderr


@pytest.mark.usefixtures("provider_keys")
def test_plan_writes_the_plan_and_shows_attempts_tokens_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURAPLAN_MODEL", "openai/gpt-4o-mini")
    bad = good_plan()
    bad["steps"][2]["depends_on"] = ["missing"]
    out = tmp_path / "plan.json"
    with respx.mock as mock:
        route = mock.post(OPENAI_URL)
        route.side_effect = [
            respx.MockResponse(200, json=openai_completion(json.dumps(bad))),
            respx.MockResponse(200, json=openai_completion(json.dumps(GOOD_PLAN))),
        ]
        result = invoke("plan", "greet and count", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == GOOD_PLAN
    assert "attempt 1: 1 problem(s)" in result.stderr and "attempt 2: valid" in result.stderr
    assert "planned in 2 attempt(s) with openai/gpt-4o-mini: 2400 prompt + 600 completion tokens, $" in result.stderr


@pytest.mark.usefixtures("provider_keys")
def test_plan_prints_to_stdout_and_exhaustion_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    with respx.mock as mock:
        mock.post(OPENAI_URL).respond(200, json=openai_completion(json.dumps(GOOD_PLAN)))
        printed = invoke("plan", "greet and count", "--model", "openai/gpt-4o-mini")
    assert printed.exit_code == 0 and json.loads(printed.stdout) == GOOD_PLAN
    with respx.mock as mock:
        mock.post(OPENAI_URL).respond(200, json=openai_completion("no plan, sorry"))
        failed = invoke("plan", "x", "--model", "openai/gpt-4o-mini", "--max-attempts", "2")
    assert failed.exit_code == 2
    first, *rest = failed.stderr.strip().splitlines()
    assert first == "error: no valid plan after 2 attempt(s); last problem(s) (1):"
    assert rest == ["  /: the answer is not valid JSON: Expecting value at line 1 column 1 [json]"]


async def test_chat_reads_messages_from_piped_stdin(env: Any, tenant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    session = f"cli-{uuid.uuid4().hex[:6]}"
    # The session exists with this test's run queue; the CLI joins it (same workflow id).
    await ChatSession(env.dp, tenant=tenant, session=session, run_task_queue=env.run_queue).start()
    bad = good_plan()
    bad["steps"][0]["tool"] = "nope.tool"
    v2 = good_plan(name="echo_and_count_v2")
    env.slot.target = model = ScriptedModel(GOOD_PLAN, bad, bad, bad, v2)
    monkeypatch.setenv("DURAPLAN_ADDRESS", env.address)
    monkeypatch.setenv("DURAPLAN_TASK_QUEUE", env.plan_queue)
    monkeypatch.setenv("DURAPLAN_MODEL", "openai/gpt-4o-mini")
    stdin = "greet and count\n\nuse nope.tool\nrename it\nsubmit\nquit\nnever read\n"
    # The CLI runs its own event loop: give it a thread while this loop keeps the workers going.
    result = await asyncio.to_thread(invoke, "chat", "--tenant", tenant, "--session", session, input=stdin)
    assert result.exit_code == 0, result.output
    model.assert_all_consumed()
    out = result.stdout
    assert "v1: echo_and_count (1 attempt(s)" in out and "+++ v1" in out
    assert "v2: echo_and_count_v2 (1 attempt(s)" in out and '-  "name": "echo_and_count",' in out
    assert "error: no valid plan after 3 attempt(s)" in result.stderr and "unknown tool 'nope.tool'" in result.stderr
    run_id = out.split("started run ", 1)[1].split()[0]
    assert await RunHandle(env.dp, tenant, run_id).result(timeout=60) == GOOD_OUTPUT
