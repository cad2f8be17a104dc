"""A run's start request built from kept parts (executor.service.start_request) is the request the
SDK's ``start_workflow`` would send: the payload byte for byte, and on a real server the same start
event, search attributes, memo, priority and conflicts."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import WorkflowExecutionStartedEventAttributes
from temporalio.client import Client, Interceptor

from executor import Duraplan, Settings, running_worker
from executor.engine.models import Carry, EventRecord, Revision, RunInput
from executor.errors import RunConflict
from executor.service.converter import UTF8_DATA_CONVERTER, Utf8Encoder
from executor.service.start_request import can_start_directly, encode_run_input, plan_json
from executor.service.tenants import QuotaExceeded, Quotas, TenantRegistry

TENANT = "sr"


def _inputs() -> list[RunInput]:
    plan = {"name": "n é", "steps": [{"id": "s", "kind": "set", "value": {"é": ["ü", 1.5, None, '"\\']}}]}
    return [
        RunInput(plan=plan, plan_hash="h", tenant="t", session="s", run_id="r"),
        RunInput(
            plan=plan,
            plan_hash="sha256:" + "0" * 64,
            tenant="t",
            session="s",
            run_id="r~2",
            # keys that sort around "plan", and text that looks like the input's own keys
            inputs={"plan_hash": 'x","plan":1', "plan": {"a": "\\"}, "p": [1, {"z": "ñ"}]},
            local_tools=["debug.echo", "kv.get"],
            generation=2,
            carry=Carry(events=[EventRecord(type="go", payload={"ok": True}, event_id="e1", received_at="now")]),
            revisions=[Revision(revision=1, plan_hash="a", reason="r", at="2026-11-30T00:00:00+00:00")],
            quotas=Quotas(max_steps_per_run=5).for_run(),
            tool_pins={"src.tool": "sha256:abc"},
            engine=3,
            metered=False,
        ),
    ]


@pytest.mark.parametrize("arg", _inputs())
def test_run_input_payload_is_the_converters_byte_for_byte(arg: RunInput) -> None:
    theirs = UTF8_DATA_CONVERTER.payload_converter.to_payloads([arg])[0]
    assert encode_run_input(arg, plan_json(arg.plan)) == theirs
    assert UTF8_DATA_CONVERTER.payload_converter.from_payloads([theirs], [RunInput]) == [arg]


class _Nothing(Interceptor):
    """An interceptor that changes nothing: its presence alone sends starts through the SDK."""


def _started(event_client: Client, workflow_id: str) -> Any:
    async def first() -> WorkflowExecutionStartedEventAttributes:
        async for event in event_client.get_workflow_handle(workflow_id).fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
                return event.workflow_execution_started_event_attributes
        raise AssertionError("no start event")

    return first()


async def test_direct_start_sends_what_the_sdk_sends(client: Client, tmp_path: Any) -> None:
    settings = Settings(home=tmp_path, task_queue=f"sr-{uuid.uuid4().hex[:8]}")
    config = client.config()
    config["interceptors"] = [_Nothing()]
    direct, sdk = Duraplan(client, settings), Duraplan(Client(**config), settings)
    assert can_start_directly(direct.client) and not can_start_directly(sdk.client)
    plan = {
        "name": "héllo",
        "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "steps": [{"id": "w", "kind": "wait_for_event", "event": "go", "timeout": "1h"}],
    }
    session = f"s-{uuid.uuid4().hex[:6]}"
    runs = {}
    for name, dp in (("direct", direct), ("sdk", sdk)):
        run_id = f"{name}-{uuid.uuid4().hex[:8]}"
        handle = await dp.submit_plan(plan, tenant=TENANT, session=session, inputs={"n": 1}, run_id=run_id)
        runs[name] = handle
        # resubmitting the same run is the same run; other inputs are a conflict (both paths)
        again = await dp.submit_plan(plan, tenant=TENANT, session=session, inputs={"n": 1}, run_id=run_id)
        assert again.run_id == run_id
        with pytest.raises(RunConflict):
            await dp.submit_plan(plan, tenant=TENANT, session=session, inputs={"n": 2}, run_id=run_id)
    events = {name: await _started(client, h.workflow_id) for name, h in runs.items()}
    one, two = events["direct"], events["sdk"]
    [a], [b] = one.input.payloads, two.input.payloads
    ra, rb = UTF8_DATA_CONVERTER.payload_converter.from_payloads([a, b], [RunInput, RunInput])
    assert (ra.run_id, rb.run_id) == (runs["direct"].run_id, runs["sdk"].run_id)
    ra.run_id = rb.run_id
    assert ra == rb and a.metadata == b.metadata
    assert dict(one.search_attributes.indexed_fields) == dict(two.search_attributes.indexed_fields)
    for field in ("workflow_type", "task_queue", "workflow_task_timeout", "priority", "memo", "header"):
        assert getattr(one, field) == getattr(two, field), field
    assert one.priority.fairness_key == TENANT and one.task_queue.name == settings.task_queue
    # what the listing shows of both: the same row but the run id
    listed = {r.run_id: r for r in await direct.list_runs(tenant=TENANT, session=session)}
    while len(listed) < 2:  # visibility is eventually consistent
        listed = {r.run_id: r for r in await direct.list_runs(tenant=TENANT, session=session)}
    x, y = listed[runs["direct"].run_id], listed[runs["sdk"].run_id]
    assert (x.plan_name, x.plan_hash, x.session, x.state) == (y.plan_name, y.plan_hash, y.session, y.state)
    assert x.plan_name == "héllo" and x.plan_hash == ra.plan_hash
    for h in runs.values():
        await client.get_workflow_handle(h.workflow_id).terminate()


async def test_a_start_through_interceptors_encodes_the_run_input_once(
    client: Client, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With interceptors (tracing) the start took the SDK's path, which encoded the whole run
    input (its plan, up to 2 MB) again after the start path had encoded it to check its size."""
    converted: list[RunInput] = []
    default = Utf8Encoder.default

    def counting(self: Utf8Encoder, o: Any) -> Any:
        if isinstance(o, RunInput):
            converted.append(o)
        return default(self, o)

    monkeypatch.setattr(Utf8Encoder, "default", counting)
    config = client.config()
    config["interceptors"] = [_Nothing()]
    dp = Duraplan(Client(**config), Settings(home=tmp_path, task_queue=f"sr-{uuid.uuid4().hex[:8]}"))
    assert not can_start_directly(dp.client)
    plan = {"name": "once", "steps": [{"id": "w", "kind": "wait_for_event", "event": "go", "timeout": "1h"}]}
    handle = await dp.submit_plan(plan, tenant=TENANT, session="s", inputs={"big": "x" * 1000})
    assert converted == []
    [payload] = (await _started(client, handle.workflow_id)).input.payloads
    [sent] = UTF8_DATA_CONVERTER.payload_converter.from_payloads([payload], [RunInput])
    assert sent.plan["name"] == "once" and sent.inputs == {"big": "x" * 1000}
    await client.get_workflow_handle(handle.workflow_id).terminate()


async def test_direct_restart_carries_the_generation_in_the_memo(client: Client, tmp_path: Any) -> None:
    settings = Settings(home=tmp_path, task_queue=f"sr-{uuid.uuid4().hex[:8]}")
    config = client.config()
    config["interceptors"] = [_Nothing()]
    memos = []
    for dp in (Duraplan(client, settings), Duraplan(Client(**config), settings)):
        handle = await dp.submit_plan(
            {"name": "r", "steps": [{"id": "w", "kind": "wait_for_event", "event": "go", "timeout": "1h"}]},
            tenant=TENANT,
            session="s",
        )
        restarted = await handle.restart()
        memos.append((await _started(client, restarted.workflow_id)).memo)
        await client.get_workflow_handle(restarted.workflow_id).terminate()
    assert memos[0] == memos[1] and "generation" in memos[0].fields


async def test_direct_start_is_eager_on_this_process_worker(client: Client, tmp_path: Any) -> None:
    settings = Settings(home=tmp_path, task_queue=f"sr-{uuid.uuid4().hex[:8]}")
    async with running_worker(client, settings):
        dp = Duraplan(client, settings)
        assert can_start_directly(dp.client)
        plan = {"name": "e", "steps": [{"id": "a", "kind": "set", "value": 7}], "output": "${steps.a.output}"}
        handle = await dp.submit_plan(plan, tenant=TENANT, session="s")
        # the SDK's core handed the first workflow task to the worker with the start's answer
        assert getattr(handle._started, "__temporal_eagerly_started") is True
        assert await handle.result(timeout=30) == 7


async def test_a_resubmitted_plan_meets_the_tenants_current_quotas(client: Client, tmp_path: Any) -> None:
    """The start path keeps which quotas a plan was found within; a quota lowered since refuses it."""
    tenants = TenantRegistry(tmp_path / "tenants.db")
    tenants.create(TENANT)
    tenants.grant_tools(TENANT, ["*"])
    dp = Duraplan(client, Settings(home=tmp_path, task_queue=f"sr-{uuid.uuid4().hex[:8]}"), tenants=tenants)
    plan = {"name": "hungry", "steps": [{"id": "c", "kind": "code", "code": "1", "memory_mb": 128}]}
    first = await dp.submit_plan(plan, tenant=TENANT, session="s")
    await client.get_workflow_handle(first.workflow_id).terminate()
    tenants.set_quotas(TENANT, code_memory_mb=64)
    with pytest.raises(QuotaExceeded, match="step 'c' asks memory_mb=128"):
        await dp.submit_plan(plan, tenant=TENANT, session="s")
    tenants.set_quotas(TENANT, code_memory_mb=256)
    again = await dp.submit_plan(plan, tenant=TENANT, session="s")
    await client.get_workflow_handle(again.workflow_id).terminate()
    tenants.close()
