"""A run never stays `running` because of its own payloads (issue 11, items 1, 2 and 7): oversized
errors, outputs and inputs fail their step cleanly (compensation runs), hostile Retry-After
values are clamped to max_interval, and the event buffer is bounded."""

from __future__ import annotations

import asyncio

import pytest

from executor import Duraplan, InputsInvalid, RunFailed, RunStateError
from executor.engine.limits import MAX_BUFFERED_EVENTS, MAX_ERROR_BYTES
from tests.engine.conftest import run_failure, steps_by_id

MIB = 1024 * 1024
QUICK = {"max_attempts": 1}


def _undoable(sid: str) -> dict[str, object]:
    return {
        "id": sid,
        "kind": "tool",
        "tool": "kv.incr",
        "args": {"key": "undo-me"},
        "compensate": {"tool": "kv.incr", "args": {"key": "undone"}},
    }


def _ends_failed(handle_status: dict[str, object]) -> None:
    assert handle_status["state"] == "failed", handle_status["state"]


@pytest.mark.parametrize(
    ("name", "steps"),
    [
        ("huge_raise", [{"id": "c", "kind": "code", "code": "raise ValueError('x' * (1024 * 1024))", "retry": QUICK}]),
        (
            "huge_fail_message",
            [
                {"id": "c", "kind": "code", "code": "'x' * 1048400"},
                {"id": "f", "kind": "fail", "message": "${steps.c.output}", "depends_on": ["c"]},
            ],
        ),
        (
            "huge_set",
            [
                {"id": "a", "kind": "code", "code": "'a' * 700000"},
                {"id": "s", "kind": "set", "value": ["${steps.a.output}", "${steps.a.output}"], "depends_on": ["a"]},
            ],
        ),
        (
            "huge_tool_args",
            [
                {"id": "a", "kind": "code", "code": "'a' * 700000"},
                {
                    "id": "t",
                    "kind": "tool",
                    "tool": "debug.echo",
                    "args": {"value": ["${steps.a.output}", "${steps.a.output}", "${steps.a.output}"]},
                    "depends_on": ["a"],
                },
            ],
        ),
    ],
)
async def test_oversized_payloads_fail_the_step_and_compensate(
    dp: Duraplan, tenant: str, name: str, steps: list[dict[str, object]]
) -> None:
    first = steps[0]["id"]
    plan = {
        "name": name,
        "steps": [_undoable("u"), *[{**s, "depends_on": [*s.get("depends_on", []), "u"]} for s in steps]],
    }  # type: ignore[list-item]
    handle = await dp.submit_plan(plan, tenant=tenant, session="s")
    failure = await run_failure(handle, timeout=60)
    status = await handle.status()
    _ends_failed(status)
    assert len(str(failure)) < 3 * MAX_ERROR_BYTES
    recs = steps_by_id(status)
    assert recs["u"]["state"] == "compensated", "compensation ran"
    assert recs[first]["attempts"] <= 1 or name != "huge_raise"
    assert status["error"]["type"] in ("ValueError", "PlanFailed", "OutputTooLarge", "InputTooLarge"), status["error"]


async def test_run_output_over_the_limit_fails_the_run(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "big-output",
        "steps": [{"id": "a", "kind": "code", "code": "'a' * 900000"}],
        "output": ["${steps.a.output}", "${steps.a.output}"],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="s")
    with pytest.raises(RunFailed, match="OutputTooLarge"):
        await asyncio.wait_for(handle.result(), 60)


@pytest.mark.parametrize("retry_after", [1e300, 100000.0])
async def test_hostile_retry_after_is_clamped_to_max_interval(dp: Duraplan, tenant: str, retry_after: float) -> None:
    plan = {
        "name": "retry-after",
        "steps": [
            {
                "id": "busy",
                "kind": "tool",
                "tool": "debug.fail",
                "args": {"message": "busy", "retryable": True, "retry_after": retry_after},
                "retry": {"max_attempts": 2, "initial_interval": "0.1s", "max_interval": "1s"},
            }
        ],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="s")
    failure = await run_failure(handle, timeout=30)  # unclamped: a timer of 27.8 h, or a task failing for ever
    assert "busy" in str(failure)
    assert steps_by_id(await handle.status())["busy"]["attempts"] == 2


async def test_event_buffer_is_bounded(dp: Duraplan, tenant: str) -> None:
    plan = {
        "name": "buffer",
        "steps": [
            {"id": "hold", "kind": "sleep", "duration": "1h"},
            {
                "id": "each",
                "kind": "foreach",
                "items": "${input.items}",
                "steps": [{"id": "w", "kind": "wait_for_event", "event": "go"}],
                "depends_on": ["hold"],
            },
        ],
    }
    handle = await dp.submit_plan(plan, tenant=tenant, session="s", inputs={"items": [1, 2]})
    big = "é" * (300 * 1024)  # 600 KiB of UTF-8, 1.8 MiB if counted as \\u escapes
    await handle.send_event("go", {"v": big})
    with pytest.raises(Exception, match=r"EventBufferFull|limit is"):
        await handle.send_event("go", {"v": big})
    for i in range(MAX_BUFFERED_EVENTS - 1):
        await handle.send_event("go", {"i": i})
    with pytest.raises(Exception, match="limit is"):
        await handle.send_event("go", {"i": "one too many"})
    assert (await handle.status())["buffered_events"] == MAX_BUFFERED_EVENTS
    await handle.cancel()


async def test_an_event_no_step_can_consume_is_refused_not_buffered(dp: Duraplan, tenant: str) -> None:
    """Issue 11 item 9: three events at once to a run whose only step waits for one: one is
    consumed, the others are refused as a run-state conflict, never silently kept."""
    plan = {"name": "one-wait", "steps": [{"id": "w", "kind": "wait_for_event", "event": "go"}]}
    handle = await dp.submit_plan(plan, tenant=tenant, session="s")
    results = await asyncio.gather(*(handle.send_event("go", {"i": i}) for i in range(3)), return_exceptions=True)
    accepted = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(accepted) == 1, results
    for exc in refused:
        assert isinstance(exc, RunStateError), repr(exc)
    await asyncio.wait_for(handle.result(), 30)
    assert (await handle.status())["buffered_events"] == 0


class _Opaque:
    pass


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (_Opaque(), "/x: a _Opaque is not a JSON value"),
        ({1, 2}, "/x: a set is not a JSON value"),
        (b"raw", "/x: a bytes is not a JSON value"),
        ([1.0, float("nan")], "/x/1: nan is not a JSON number"),
        ({(1, 2): "tuple key"}, "/x/(1, 2): a tuple is not a JSON object key"),
    ],
    ids=["object", "set", "bytes", "nan", "tuple-key"],
)
async def test_python_values_that_are_not_json_are_refused_naming_where(
    dp: Duraplan, tenant: str, value: object, message: str
) -> None:
    """From Python, a non-JSON input or event payload was a raw TypeError from the converter (an
    object), or went into history as something else (a set, bytes) or as NaN."""
    wait = {"name": "w", "steps": [{"id": "w", "kind": "wait_for_event", "event": "go", "timeout": "1h"}]}
    with pytest.raises(InputsInvalid) as refused:
        await dp.submit_plan(wait, tenant=tenant, session="s", inputs={"x": value})
    assert str(refused.value) == f"run inputs invalid: {message}"
    handle = await dp.submit_plan(wait, tenant=tenant, session="s")
    with pytest.raises(InputsInvalid) as refused:
        await handle.send_event("go", {"x": value})
    assert str(refused.value) == f"event payload invalid: {message}"
    assert (await handle.status())["state"] == "waiting"
    await handle.terminate()


async def test_an_event_type_or_id_over_200_characters_is_refused(dp: Duraplan, tenant: str) -> None:
    """The HTTP API capped them, the Python API and MCP did not: two events with megabyte ids went
    into history (and the carry keeps the last 10,000 ids), outside the payload's byte quota."""
    wait = {"name": "w", "steps": [{"id": "w", "kind": "wait_for_event", "event": "go", "timeout": "1h"}]}
    handle = await dp.submit_plan(wait, tenant=tenant, session="s")
    with pytest.raises(InputsInvalid, match="event invalid: event_id: must be 1 to 200 characters, not 1000000"):
        await handle.send_event("go", 1, event_id="e" * 1_000_000)
    with pytest.raises(InputsInvalid, match="type: must be 1 to 200 characters, not 201"):
        await handle.send_event("g" * 201, 1)
    with pytest.raises(InputsInvalid, match="event_id: must be 1 to 200 characters, not 0"):
        await handle.send_event("go", 1, event_id="")
    assert (await handle.status())["state"] == "waiting"
    assert (await handle.send_event("go", 1, event_id="e" * 200))["accepted"]
    await handle.result()
