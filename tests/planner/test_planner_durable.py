"""Durable planning on the dev server: sessions, revisions, diffs, runs, and retries owned by Temporal."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from typing import Any

import httpx
import pytest
import respx
from planner_kit import GOOD_OUTPUT, GOOD_PLAN, OPENAI_URL, good_plan, openai_completion

from executor import InputsInvalid, RunStateError
from planner import ChatSession, ProviderRejected, RepairExhausted, submit_goal
from planner.testing import ScriptedModel
from planner.workflows import PlanningSession

pytestmark = pytest.mark.timeout(120)
MODEL = "openai/gpt-4o-mini"


def session_for(env: Any, tenant: str, **options: Any) -> ChatSession:
    options.setdefault("model", MODEL)
    return ChatSession(
        env.dp,
        tenant=tenant,
        session=f"s-{uuid.uuid4().hex[:8]}",
        run_task_queue=env.run_queue,
        retry_initial_s=0.1,
        **options,
    )


async def test_three_turns_record_three_revisions_with_diffs_then_the_run_completes(env: Any, tenant: str) -> None:
    v2 = good_plan()
    v2["steps"].insert(2, {"id": "shout", "kind": "tool", "tool": "debug.echo", "args": {"value": "HELLO"}})
    v2["steps"][3]["value"]["loud"] = "${steps.shout.output.value}"
    v2_wrong_tool = copy.deepcopy(v2)
    v2_wrong_tool["steps"][2]["tool"] = "debug.yell"
    v3 = json.loads(json.dumps(v2).replace('"hello"', '"bonjour"'))
    env.slot.target = model = ScriptedModel(GOOD_PLAN, v2_wrong_tool, v2, v3)
    chat = session_for(env, tenant)

    with model:
        r1 = await chat.send("greet and count three numbers")
        r2 = await chat.send("also shout")
        r3 = await chat.send("greet in French")

    assert [r.revision for r in (r1, r2, r3)] == [1, 2, 3]
    assert (r1.plan, r2.plan, r3.plan) == (GOOD_PLAN, v2, v3)
    assert r1.diff.startswith("--- (none)\n+++ v1") and '+  "name": "echo_and_count",' in r1.diff
    assert r2.diff.startswith("--- v1\n+++ v2") and '+      "id": "shout",' in r2.diff
    assert '-        "value": "hello"' in r3.diff and '+        "value": "bonjour"' in r3.diff
    assert len(r2.attempts) == 2 and "unknown tool 'debug.yell'" in r2.attempts[0]["issues"][0]["message"]
    assert r2.prompt_tokens > 0 and r2.cost_usd >= 0
    # Revisions revise: the model saw the latest plan and the request.
    request = model.calls[3].last_user_message
    shown = request.removeprefix("Current plan:\n").split("\n\nRevise it")[0]
    assert json.loads(shown) == v2 and shown.startswith(
        '{\n  "name": "echo_and_count",\n  "steps": [\n    {\n      "id"'
    )
    assert request.endswith("Request:\ngreet in French")

    recorded = await chat.revisions()
    assert [(r.revision, r.message, r.plan_hash) for r in recorded] == [
        (1, "greet and count three numbers", r1.plan_hash),
        (2, "also shout", r2.plan_hash),
        (3, "greet in French", r3.plan_hash),
    ]
    assert all(r.diff for r in recorded)

    run = await chat.submit()
    assert await run.result(timeout=60) == {"said": "bonjour", "n": 3, "loud": "HELLO"}
    status = await run.status()
    assert status["plan_hash"] == r3.plan_hash and status["session"] == chat.session
    assert (await chat.revisions())[-1].runs == [run.run_id]
    assert await chat.close() == 3


async def test_submit_goal_plans_durably_then_runs(env: Any, tenant: str) -> None:
    env.slot.target = model = ScriptedModel(GOOD_PLAN)
    with model:
        run = await submit_goal(
            "greet and count",
            tenant=tenant,
            session="one-shot",
            duraplan=env.dp,
            model=MODEL,
            run_task_queue=env.run_queue,
        )
    assert run.tenant == tenant
    assert await run.result(timeout=60) == GOOD_OUTPUT
    session = env.dp.client.get_workflow_handle(f"{tenant}/planning/one-shot")
    revisions = await session.query(PlanningSession.revisions)
    assert revisions[0]["runs"] == [run.run_id] and revisions[0]["message"] == "greet and count"


async def test_repair_exhaustion_fails_the_message_not_the_session(env: Any, tenant: str) -> None:
    bad = good_plan()
    bad["steps"][0]["tool"] = "nope.tool"
    env.slot.target = ScriptedModel(bad, bad, bad, GOOD_PLAN)
    chat = session_for(env, tenant)
    with pytest.raises(RepairExhausted) as caught:
        await chat.send("greet")
    assert caught.value.attempts == 3
    assert "unknown tool 'nope.tool'" in caught.value.last_issues[0].message
    assert caught.value.last_issues[0].pointer == "/steps/0/tool"
    with pytest.raises(RunStateError, match="send a message first"):
        await chat.submit()
    revision = await chat.send("greet, with a real tool")
    assert revision.revision == 1
    env.slot.target.assert_all_consumed()


async def test_submit_checks_inputs_against_the_plan(env: Any, tenant: str) -> None:
    plan = good_plan(inputs={"type": "object", "required": ["who"], "properties": {"who": {"type": "string"}}})
    plan["steps"][0]["args"]["value"] = "${input.who}"
    env.slot.target = ScriptedModel(plan)
    chat = session_for(env, tenant)
    await chat.send("greet someone")
    with pytest.raises(InputsInvalid, match="'who' is a required property"):
        await chat.submit({})
    run = await chat.submit({"who": "ann"}, run_id="greet-ann")
    assert await run.result(timeout=60) == {"said": "ann", "n": 3}
    assert (await chat.submit({"who": "ann"}, run_id="greet-ann")).run_id == "greet-ann"  # same run again


async def test_a_tenant_catalog_limits_the_tools(env: Any, tenant: str) -> None:
    catalog = [t for t in env.dp.registry.catalog() if t["name"] in ("debug.echo", "kv.get")]
    only_echo = good_plan()
    only_echo["steps"][1] = {"id": "count", "kind": "code", "code": "len(xs)", "inputs": {"xs": [1, 2, 3]}}
    env.slot.target = model = ScriptedModel(GOOD_PLAN, only_echo)
    chat = session_for(env, tenant, catalog=catalog)
    with model:
        revision = await chat.send("greet and count")
    system = model.calls[0].messages[0]["content"]
    assert "- debug.echo" in system and "- kv.get" in system and "- transform" not in system
    assert "/steps/1/tool (step 'count'): unknown tool 'transform'" in model.calls[1].last_user_message
    assert len(revision.attempts) == 2
    assert await (await chat.submit()).result(timeout=60) == GOOD_OUTPUT


@pytest.mark.usefixtures("provider_keys")
async def test_rate_limits_and_server_errors_are_retried_by_temporal(env: Any, tenant: str) -> None:
    chat = session_for(env, tenant)
    with respx.mock as mock:
        route = mock.post(OPENAI_URL)
        route.side_effect = [
            httpx.Response(429, json={"error": {"message": "slow down", "type": "rate_limit"}}),
            httpx.Response(500, json={"error": {"message": "oops", "type": "server"}}),
            httpx.Response(503, json={"error": {"message": "busy", "type": "server"}}),
            httpx.Response(200, json=openai_completion(json.dumps(GOOD_PLAN))),
        ]
        revision = await chat.send("greet and count")
    assert route.call_count == 4  # one call per activity attempt: litellm retries nothing itself
    assert revision.plan == GOOD_PLAN and len(revision.attempts) == 1
    run = await chat.submit()
    assert await run.result(timeout=60) == GOOD_OUTPUT


@pytest.mark.usefixtures("provider_keys")
@pytest.mark.parametrize("status", [400, 401])
async def test_client_errors_fail_at_once(env: Any, tenant: str, status: int) -> None:
    chat = session_for(env, tenant)
    with respx.mock as mock:
        route = mock.post(OPENAI_URL).respond(status, json={"error": {"message": "no", "type": "invalid_request"}})
        with pytest.raises(ProviderRejected) as caught:
            await chat.send("greet and count")
    assert route.call_count == 1
    assert caught.value.status == status and not caught.value.retryable
    assert await chat.revisions() == []


async def test_a_session_whose_messages_all_failed_ends_instead_of_lingering(env: Any, tenant: str) -> None:
    """Issue 11 item 15: a failed chat (here: repair exhausted) left its workflow running for ever."""
    bad = good_plan()
    bad["steps"][0]["tool"] = "nope.tool"
    env.slot.target = ScriptedModel(bad, bad, bad)
    chat = session_for(env, tenant, empty_timeout_s=1.0)
    with pytest.raises(RepairExhausted):
        await chat.send("greet")
    ended = await chat._handle.result(rpc_timeout=None)
    assert ended == {"revisions": 0, "runs": [], "ended": "idle"}


async def test_an_idle_session_ends_after_its_idle_time_and_keeps_its_revisions(env: Any, tenant: str) -> None:
    env.slot.target = ScriptedModel(GOOD_PLAN)
    chat = session_for(env, tenant, idle_timeout_s=1.5)
    assert (await chat.send("greet")).revision == 1
    ended = await chat._handle.result()
    assert ended["ended"] == "idle" and ended["revisions"] == 1
    assert len(await chat._handle.query(PlanningSession.revisions)) == 1


async def test_a_session_that_continues_as_new_keeps_its_revisions(env: Any, tenant: str) -> None:
    """Issue 11 item 17: the revisions are the session's state; continue-as-new must carry them."""
    env.slot.target = ScriptedModel(GOOD_PLAN, GOOD_PLAN, GOOD_PLAN)
    chat = session_for(env, tenant, history_limit=12)
    for turn in range(3):
        assert (await chat.send(f"greet, take {turn}")).revision == turn + 1
    assert [r.revision for r in await chat.revisions()] == [1, 2, 3]
    query = f"WorkflowId = {json.dumps(chat.workflow_id)} AND ExecutionStatus = 'ContinuedAsNew'"
    for _ in range(100):  # visibility catches up
        if (await env.dp.client.count_workflows(query)).count:
            break
        await asyncio.sleep(0.05)
    assert (await env.dp.client.count_workflows(query)).count >= 1, "the session continued as new"
