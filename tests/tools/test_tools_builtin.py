"""The built-in catalog: transform, kv.*, notify, debug.*, and schema strictness."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest
import respx

from executor.lang.json_schema import schema_problem
from tools import (
    HttpPolicy,
    Store,
    Tool,
    ToolArgumentsError,
    ToolContext,
    ToolError,
    builtin_tools,
    default_registry,
)
from tools.registry import TOOL_NAME_PATTERN

ContextFactory = Callable[..., ToolContext]

EXPECTED = {
    # name: (side_effects, local)
    "http.request": (True, False),
    "transform": (False, True),
    "kv.get": (False, True),
    "kv.put": (True, True),
    "kv.delete": (True, True),
    "kv.list": (False, True),
    "kv.incr": (True, True),
    "notify": (True, False),
    "debug.echo": (False, True),
    "debug.sleep": (False, False),
    "debug.flaky": (False, True),
    "debug.fail": (False, True),
}


async def run(name: str, ctx: ToolContext, policy: HttpPolicy | None = None, **args: Any) -> Any:
    """Validate then call, as the executor does."""
    tool = default_registry(policy).get(name)
    tool.check_args(args)
    return await tool.handler(args, ctx)


def test_catalog_names_flags_and_strict_schemas() -> None:
    tools = {t.name: t for t in builtin_tools()}
    assert set(tools) == set(EXPECTED)
    for name, tool in tools.items():
        assert TOOL_NAME_PATTERN.fullmatch(name)
        assert (tool.side_effects, tool.local) == EXPECTED[name], name
        assert tool.description
        schema = tool.args_schema
        assert schema["type"] == "object"
        for prop, sub in schema["properties"].items():
            assert sub.get("description"), f"{name}.{prop} has no description"
        if name != "debug.echo":  # echo passes arbitrary properties through, by design
            assert schema["additionalProperties"] is False, name
            with pytest.raises(ToolArgumentsError, match="Additional properties"):
                tool.check_args({"definitely_not_an_arg": 1})
    assert {t.name for t in builtin_tools(include_debug=False)} == {n for n in EXPECTED if not n.startswith("debug.")}
    # The catalog (what a planner sees) is JSON.
    json.dumps(default_registry().catalog())


def test_every_builtin_schema_is_valid_json_schema() -> None:
    """The built-in tools skip the metaschema check at start-up (trusted_schema): it is done here."""
    for tool in builtin_tools():
        assert tool.trusted_schema, tool.name
        jsonschema.Draft202012Validator.check_schema(tool.args_schema)
        assert schema_problem(tool.args_schema) is None, tool.name  # local $refs, RE2 patterns, no cycles
    # A tool from anywhere else is checked when it is made.
    with pytest.raises(ValueError, match=r"args_schema/type is not usable"):
        Tool(name="x.y", description="", args_schema={"type": "nonsense"}, handler=builtin_tools()[0].handler)


@pytest.mark.parametrize(
    ("name", "args", "pointer"),
    [
        ("transform", {"data": {}}, "/"),
        ("transform", {"data": {}, "expression": ""}, "/expression"),
        ("kv.get", {"key": ""}, "/key"),
        ("kv.put", {"key": "k"}, "/"),
        ("kv.incr", {"key": "k", "by": 1.5}, "/by"),
        ("kv.list", {"limit": 0}, "/limit"),
        ("notify", {"channel": "ops", "message": 3}, "/message"),
        ("debug.sleep", {"seconds": 601}, "/seconds"),
        ("debug.flaky", {"fail_times": -1}, "/fail_times"),
        ("debug.fail", {"message": "x", "retryable": "yes"}, "/retryable"),
    ],
)
def test_argument_validation(name: str, args: dict[str, Any], pointer: str) -> None:
    tool = default_registry().get(name)
    errors = tool.argument_errors(args)
    assert [p or "/" for p, _ in errors] == [pointer]
    with pytest.raises(ToolArgumentsError) as info:
        tool.check_args(args)
    assert info.value.retryable is False
    assert name in info.value.message


# -- transform -----------------------------------------------------------------------------------


async def test_transform(make_ctx: ContextFactory) -> None:
    data = {"items": [{"name": "a", "price": 5}, {"name": "b", "price": 15}]}
    ctx = make_ctx()
    assert await run("transform", ctx, data=data, expression="items[?price > `10`].name") == ["b"]
    assert await run("transform", ctx, data=data, expression="missing") is None
    assert await run("transform", ctx, data=[3, 1, 2], expression="sort(@)") == [1, 2, 3]
    assert await run("transform", ctx, data={"a": 1}, expression="{x: a, y: `true`}") == {
        "x": 1,
        "y": True,
    }


async def test_transform_bad_expression_is_an_argument_error(make_ctx: ContextFactory) -> None:
    with pytest.raises(ToolArgumentsError, match="invalid JMESPath"):
        await run("transform", make_ctx(), data={}, expression="items[?")
    # A valid expression that does not fit the data fails permanently, but is not an args error.
    with pytest.raises(ToolError) as info:
        await run("transform", make_ctx(), data={"a": "text"}, expression="abs(a)")
    assert not isinstance(info.value, ToolArgumentsError)
    assert (info.value.error_type, info.value.retryable) == ("TransformError", False)


# -- kv.* ----------------------------------------------------------------------------------------


async def test_kv_tools(make_ctx: ContextFactory, store: Store) -> None:
    assert await run("kv.get", make_ctx(), key="cfg") == {
        "key": "cfg",
        "found": False,
        "value": None,
    }
    assert await run("kv.put", make_ctx(idempotency_key="s1"), key="cfg", value={"x": 1}) == {"key": "cfg"}
    assert await run("kv.get", make_ctx(), key="cfg") == {
        "key": "cfg",
        "found": True,
        "value": {"x": 1},
    }
    await run("kv.put", make_ctx(idempotency_key="s2"), key="cfg/null", value=None)
    assert (await run("kv.get", make_ctx(), key="cfg/null"))["found"] is True
    assert await run("kv.list", make_ctx(), prefix="cfg") == {"keys": ["cfg", "cfg/null"]}
    assert await run("kv.list", make_ctx()) == {"keys": ["cfg", "cfg/null"]}
    assert await run("kv.delete", make_ctx(idempotency_key="s3"), key="cfg") == {
        "key": "cfg",
        "deleted": True,
    }
    assert await run("kv.list", make_ctx()) == {"keys": ["cfg/null"]}
    # Another tenant sees none of it.
    assert await run("kv.list", make_ctx(tenant="globex")) == {"keys": []}
    assert await store.kv_get("acme", "cfg/null", default="missing") is None


async def test_kv_writes_are_exactly_once_per_step(make_ctx: ContextFactory) -> None:
    step = make_ctx(idempotency_key="run-1/count")
    retry = make_ctx(idempotency_key="run-1/count", attempt=2)
    assert await run("kv.incr", step, key="n", by=2) == {"key": "n", "value": 2}
    assert await run("kv.incr", retry, key="n", by=2) == {"key": "n", "value": 2}
    assert await run("kv.incr", make_ctx(idempotency_key="run-2/count"), key="n") == {
        "key": "n",
        "value": 3,
    }
    assert (await run("kv.get", make_ctx(), key="n"))["value"] == 3

    await run("kv.put", make_ctx(idempotency_key="a"), key="v", value=1)
    await run("kv.put", make_ctx(idempotency_key="b"), key="v", value=2)
    await run("kv.put", make_ctx(idempotency_key="a", attempt=2), key="v", value=1)  # late retry
    assert (await run("kv.get", make_ctx(), key="v"))["value"] == 2


async def test_kv_errors(make_ctx: ContextFactory) -> None:
    await run("kv.put", make_ctx(idempotency_key="p"), key="s", value="text")
    with pytest.raises(ToolError) as info:
        await run("kv.incr", make_ctx(idempotency_key="i"), key="s")
    assert (info.value.error_type, info.value.retryable) == ("KvNotAnInteger", False)
    with pytest.raises(ToolError) as info:
        await run("kv.put", make_ctx(idempotency_key="big"), key="big", value="x" * (1 << 20))
    assert info.value.error_type == "KvValueTooLarge"


# -- notify --------------------------------------------------------------------------------------


async def test_notify_records_once_per_idempotency_key(make_ctx: ContextFactory, store: Store) -> None:
    ctx = make_ctx(idempotency_key="run-1/notify")
    first = await run("notify", ctx, channel="ops", message="deployed")
    assert first == {"id": "run-1/notify", "channel": "ops", "delivered": False, "duplicate": False}
    again = await run(
        "notify",
        make_ctx(idempotency_key="run-1/notify", attempt=2),
        channel="ops",
        message="deployed",
    )
    assert again["duplicate"] is True
    await run("notify", make_ctx(idempotency_key="run-2/notify"), channel="ops", message={"k": 1})
    entries = await store.outbox_list("acme", "ops")
    assert [(e["idempotency_key"], e["message"]) for e in entries] == [
        ("run-1/notify", "deployed"),
        ("run-2/notify", {"k": 1}),
    ]


async def test_notify_webhook_delivery_and_dedupe(policy: HttpPolicy, make_ctx: ContextFactory, store: Store) -> None:
    with respx.mock:
        hook = respx.post("https://api.example.com/hooks/ops").respond(200, json={"ok": True})
        args = {
            "channel": "ops",
            "message": "deployed",
            "webhook_url": "https://api.example.com/hooks/ops",
        }
        first = await run("notify", make_ctx(idempotency_key="run-1/n"), policy, **args)
        assert hook.call_count == 1
        sent = hook.calls.last.request
        assert sent.headers["idempotency-key"] == "run-1/n"
        assert json.loads(sent.content) == {
            "channel": "ops",
            "message": "deployed",
            "idempotency_key": "run-1/n",
        }
        assert first == {"id": "run-1/n", "channel": "ops", "delivered": True, "duplicate": False}

        # A retry after a crash past delivery: recorded and delivered, so nothing is sent.
        again = await run("notify", make_ctx(idempotency_key="run-1/n", attempt=2), policy, **args)
        assert again == {"id": "run-1/n", "channel": "ops", "delivered": True, "duplicate": True}
        assert hook.call_count == 1
    entry = await store.outbox_get("acme", "run-1/n")
    assert entry is not None and entry["delivered_at"] is not None


async def test_notify_failed_webhook_is_retried_without_a_second_record(
    policy: HttpPolicy, make_ctx: ContextFactory, store: Store
) -> None:
    url = "https://api.example.com/hooks/ops"
    with respx.mock:
        hook = respx.post(url)
        hook.side_effect = [
            respx.MockResponse(503, headers={"Retry-After": "2"}),
            respx.MockResponse(204),
        ]
        with pytest.raises(ToolError) as info:
            await run(
                "notify",
                make_ctx(idempotency_key="k"),
                policy,
                channel="ops",
                message="m",
                webhook_url=url,
            )
        assert (info.value.error_type, info.value.retryable, info.value.retry_after) == (
            "HttpStatus503",
            True,
            2.0,
        )
        out = await run(
            "notify",
            make_ctx(idempotency_key="k", attempt=2),
            policy,
            channel="ops",
            message="m",
            webhook_url=url,
        )
        assert hook.call_count == 2
    assert out == {"id": "k", "channel": "ops", "delivered": True, "duplicate": True}
    assert len(await store.outbox_list("acme")) == 1


async def test_notify_webhook_obeys_egress_policy(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        catch_all = respx.route().respond(200)
        with pytest.raises(ToolError) as info:
            await run(
                "notify",
                make_ctx(),
                policy,
                channel="ops",
                message="m",
                webhook_url="http://169.254.169.254/latest",
            )
    assert not catch_all.called
    assert info.value.error_type == "EgressDenied"


async def test_notify_webhook_4xx_is_permanent(policy: HttpPolicy, make_ctx: ContextFactory) -> None:
    with respx.mock:
        hook = respx.post("https://api.example.com/gone").respond(404)
        with pytest.raises(ToolError) as info:
            await run(
                "notify",
                make_ctx(),
                policy,
                channel="ops",
                message="m",
                webhook_url="https://api.example.com/gone",
            )
    assert hook.called
    assert (info.value.error_type, info.value.retryable) == ("HttpStatus404", False)


# -- debug.* -------------------------------------------------------------------------------------


async def test_debug_echo_and_sleep(make_ctx: ContextFactory) -> None:
    args: dict[str, Any] = {"value": [1, {"a": None}], "extra": "kept"}
    assert await run("debug.echo", make_ctx(), **args) == args
    assert await run("debug.echo", make_ctx()) == {}
    assert await run("debug.sleep", make_ctx(), seconds=0) == {"slept": 0}


async def test_debug_flaky(make_ctx: ContextFactory) -> None:
    for attempt in (1, 2):
        with pytest.raises(ToolError) as info:
            await run("debug.flaky", make_ctx(attempt=attempt), fail_times=2)
        assert (info.value.retryable, info.value.error_type) == (True, "DebugFlaky")
    assert await run("debug.flaky", make_ctx(attempt=3), fail_times=2, value="v") == {
        "attempt": 3,
        "value": "v",
    }
    assert await run("debug.flaky", make_ctx(attempt=1), fail_times=0) == {
        "attempt": 1,
        "value": None,
    }
    with pytest.raises(ToolError) as info:
        await run("debug.flaky", make_ctx(), fail_times=1, retryable=False, error_type="Boom")
    assert (info.value.retryable, info.value.error_type) == (False, "Boom")


async def test_debug_fail(make_ctx: ContextFactory) -> None:
    with pytest.raises(ToolError) as info:
        await run("debug.fail", make_ctx(), message="nope")
    assert (info.value.message, info.value.retryable, info.value.error_type) == (
        "nope",
        False,
        "DebugFail",
    )
    with pytest.raises(ToolError) as info:
        await run("debug.fail", make_ctx(), message="later", retryable=True, error_type="Transient")
    assert (info.value.retryable, info.value.error_type) == (True, "Transient")


def test_tool_rejects_bad_names() -> None:
    async def handler(args: dict[str, Any], ctx: ToolContext) -> Any:
        return None

    for bad in ["Http.request", "http-request", "http.", ".x", "1x", "x..y", ""]:
        with pytest.raises(ValueError, match="does not match"):
            Tool(name=bad, description="", args_schema={"type": "object"}, handler=handler)
    Tool(name="x.y_2.z", description="", args_schema={"type": "object"}, handler=handler)
