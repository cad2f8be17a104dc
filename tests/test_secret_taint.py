"""Secrets never reach history, status or the API, whatever a plan does with them (issue 11,
items 5 and 17): tools that store or reshape values refuse them, and every form of every secret
of the tenant is redacted from every tool step's output and error, not only where it was used."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from executor import Duraplan, RunFailed, Settings, running_worker
from executor.service.devserver import DevServer
from executor.service.tenants import TenantRegistry
from tools import Tool, ToolContext, ToolError, default_registry

SECRET = "tok-5up3r-s3cr3t\r\nX-Injected: 1"
_seen: list[str] = []


async def _leaky_fail(args: dict[str, Any], ctx: ToolContext) -> Any:
    # Quotes the secret as a transport would (bytes repr: CR/LF escaped) and base64-encoded.
    token = args["token"]
    _seen.append(token)
    raise ToolError(
        f"Illegal header value {token.encode()!r} (basic {base64.b64encode(token.encode()).decode()})",
        error_type="LeakyFailure",
    )


async def _leaky_recall(args: dict[str, Any], ctx: ToolContext) -> Any:
    # A later step, given no secret, returns one it got elsewhere (a service echoing it back).
    return {"remembered": _seen[-1], "lines": _seen[-1].splitlines()}


async def _crash(args: dict[str, Any], ctx: ToolContext) -> Any:
    raise RuntimeError(f"bug while using {args['token']}")


def _tools() -> list[Tool]:
    schema = {"type": "object"}
    return [
        Tool("leaky.fail", "raises with the secret in its message", schema, _leaky_fail),
        Tool("leaky.recall", "returns the secret it saw last", schema, _leaky_recall),
        Tool("leaky.crash", "a tool bug quoting its argument", schema, _crash),
    ]


def _step(sid: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"id": sid, "kind": "tool", "tool": tool, "args": args, "on_error": "continue", "retry": {"max_attempts": 1}}


async def test_secrets_are_refused_where_untrackable_and_redacted_everywhere_else(
    dev_server: DevServer, tmp_path: Path
) -> None:
    tenants = TenantRegistry(tmp_path / "tenants.db")
    tenants.create("acme")
    tenants.grant_tools("acme", ["leaky.*", "kv.*", "transform"])
    tenants.set_secret("acme", "api_token", SECRET)
    registry = default_registry()
    for tool in _tools():
        registry.register(tool)
    settings = Settings(home=tmp_path, task_queue=f"taint-{uuid.uuid4().hex[:8]}")
    secret = {"$secret": "api_token"}
    plan = {
        "name": "hostile-secrets",
        "steps": [
            _step("put", "kv.put", {"key": "k", "value": secret}),
            _step("key", "kv.put", {"key": secret, "value": 1}),
            _step("incr", "kv.incr", {"key": secret}),
            _step("rev", "transform", {"data": secret, "expression": "reverse(@)"}),
            _step("fail", "leaky.fail", {"token": secret}),
            {**_step("recall", "leaky.recall", {}), "depends_on": ["fail"]},
            _step("crash", "leaky.crash", {"token": secret}),
            {**_step("list", "kv.list", {}), "depends_on": ["put", "key", "incr"]},
        ],
        "output": {"recall": "${steps.recall.output}", "list": "${steps.list.output}"},
    }
    async with running_worker(dev_server.client, settings, registry=registry, tenants=tenants) as deps:
        dp = Duraplan(dev_server.client, settings, registry, tenants=tenants)
        handle = await dp.submit_plan(plan, tenant="acme", session="s")
        output = await handle.result()
        status = await handle.status()
        history = await dev_server.client.get_workflow_handle(handle.workflow_id).fetch_history()
        kv_keys = await deps.store.kv_list("acme")
    steps = {s["id"]: s for s in status["steps"]}
    for sid in ("put", "key", "incr", "rev"):
        assert steps[sid]["error"]["type"] == "SecretNotAllowed", steps[sid]
    assert kv_keys == [], "nothing was stored"
    assert steps["fail"]["error"]["type"] == "LeakyFailure"
    assert steps["crash"]["error"]["type"] == "RuntimeError"
    assert output["recall"]["remembered"] == "***"
    everything = json.dumps(history.to_json_dict()) + status.model_dump_json() + json.dumps(output)
    for fragment in ("5up3r", "X-Injected", base64.b64encode(SECRET.encode()).decode()[:12]):
        assert fragment not in everything, fragment
    tenants.close()


async def test_a_run_without_secrets_still_fails_plainly(dev_server: DevServer, tmp_path: Path) -> None:
    """The refusal names the tool: a plan author learns why, in one round."""
    tenants = TenantRegistry(tmp_path / "tenants.db")
    tenants.create("acme")
    tenants.set_secret("acme", "api_token", SECRET)
    settings = Settings(home=tmp_path, task_queue=f"taint-{uuid.uuid4().hex[:8]}")
    plan = {
        "name": "p",
        "steps": [
            {"id": "put", "kind": "tool", "tool": "kv.put", "args": {"key": "k", "value": {"$secret": "api_token"}}}
        ],
    }
    async with running_worker(dev_server.client, settings, tenants=tenants):
        dp = Duraplan(dev_server.client, settings, tenants=tenants)
        handle = await dp.submit_plan(plan, tenant="acme", session="s")
        with pytest.raises(RunFailed, match=r"kv\.put.*does not accept secrets"):
            await handle.result()
    tenants.close()


# ---- a secret reference that arrives as data is never resolved -----------------------------------

_sent: list[Any] = []


async def _send_out(args: dict[str, Any], ctx: ToolContext) -> Any:
    # Stands for an HTTP call to a host the tenant allows (a comment body, a query string).
    _sent.append(args)
    return {"sent": True}


async def _injected(args: dict[str, Any], ctx: ToolContext) -> Any:
    # Output a third party controls (a fetched document, an MCP server, an llm answer).
    return {"summary": {"$secret": "api_token"}}


async def test_a_secret_reference_in_data_is_refused_not_resolved(dev_server: DevServer, tmp_path: Path) -> None:
    """An event payload or a tool's output holding ``{"$secret": NAME}`` is data: a step that sends
    it on must not send the tenant's secret. Only the plan's own references are resolved."""
    _sent.clear()
    tenants = TenantRegistry(tmp_path / "tenants.db")
    tenants.create("acme")
    tenants.grant_tools("acme", ["out.*"])
    tenants.set_secret("acme", "api_token", SECRET)
    registry = default_registry()
    registry.register(Tool("out.send", "sends its arguments to a third party", {"type": "object"}, _send_out))
    registry.register(Tool("out.fetch", "returns third-party content", {"type": "object"}, _injected))
    settings = Settings(home=tmp_path, task_queue=f"taint-{uuid.uuid4().hex[:8]}")
    plan = {
        "name": "relay",
        "steps": [
            {"id": "doc", "kind": "wait_for_event", "event": "doc", "timeout": "1m"},
            {**_step("relay_event", "out.send", {"body": "${steps.doc.output}"}), "depends_on": ["doc"]},
            _step("fetch", "out.fetch", {}),
            {**_step("relay_output", "out.send", {"body": "${steps.fetch.output.summary}"}), "depends_on": ["fetch"]},
            # the plan's own reference still works, beside data
            _step("auth", "out.send", {"token": {"$secret": "api_token"}, "note": "${input.note}"}),
            {
                "id": "script",
                "kind": "script",
                "code": "doc = tool('out.fetch')\ntool('out.send', body=doc['summary'])\ndoc",
            },
        ],
        "output": "${steps.script.output}",
    }
    async with running_worker(dev_server.client, settings, registry=registry, tenants=tenants):
        dp = Duraplan(dev_server.client, settings, registry, tenants=tenants)
        handle = await dp.submit_plan(plan, tenant="acme", session="s", inputs={"note": ["n"]})
        await handle.send_event("doc", {"$secret": "api_token"})
        output = await handle.result()
        status = await handle.status()
    steps = {s["id"]: s for s in status["steps"]}
    for sid in ("relay_event", "relay_output"):
        assert steps[sid]["state"] == "failed" and steps[sid]["error"]["type"] == "SecretFromData", steps[sid]
        assert "came from data" in steps[sid]["error"]["message"]
    assert steps["auth"]["state"] == "completed"
    assert output == {"summary": {"$secret": "api_token", "$data": True}}
    leaked = [args for args in _sent if json.dumps(SECRET)[1:-1] in json.dumps(args)]
    assert leaked == [{"token": SECRET, "note": ["n"]}], _sent
    assert {"body": {"$secret": "api_token", "$data": True}} in _sent, "the script sent the data on, disarmed"
    tenants.close()


def test_literal_refs_are_the_plans_own_with_a_literal_name() -> None:
    from executor.lang.secret_refs import disarm, literal_refs, ref_pointers, secret_names

    args: dict[str, Any] = {
        "h": {"a/b": {"$secret": "K"}},
        "l": [1, {"$secret": "J"}],
        "t": {"$secret": "${steps.x.output}"},
        "s": "${steps.x.output}",
    }
    assert ref_pointers(args) == ["/h/a~1b", "/l/1", "/t"]
    assert literal_refs(args) == ["/h/a~1b", "/l/1"]
    assert disarm(args, ["/l/1"])["h"]["a/b"] == {"$secret": "K", "$data": True}
    assert disarm(args, ["/l/1"])["l"][1] == {"$secret": "J"}
    assert args["h"]["a/b"] == {"$secret": "K"}, "not changed in place"
    plain = {"x": [1, 2]}
    assert disarm(plain) is plain
    code = "tool('out.send', h={\"$secret\": \"J2\"})\nq = {'$secret' : 'Q'}"
    assert secret_names({**args, "steps": [{"code": code}]}) == {"K", "J", "J2", "Q", "${steps.x.output}"}


# ---- a secret cut in two by a tool's error snippet ------------------------------------------------

LONG_SECRET = "Bearer tok-" + "a1b2c3d4e5" * 6


def _echo_app() -> Any:
    """A service that answers 401 quoting the Authorization header it got, after some text: the
    tool's error keeps the body's first few hundred characters, and the cut falls inside the token."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def echo(request: Request) -> PlainTextResponse:
        pad = int(request.query_params["pad"])
        return PlainTextResponse("x" * pad + " you sent " + request.headers["authorization"], status_code=401)

    return Starlette(routes=[Route("/echo", echo)])


async def test_a_secret_cut_by_an_error_snippet_is_redacted(dev_server: DevServer, tmp_path: Path) -> None:
    """``http.request`` keeps 300 characters of an error body, cut before the activity redacts the
    message: the first part of an echoed secret no longer matched it and went to history whole."""
    from tests.support.source_servers import Served

    tenants = TenantRegistry(tmp_path / "tenants.db")
    tenants.create("acme")
    tenants.grant_tools("acme", ["http.request"])
    tenants.set_secret("acme", "api_token", LONG_SECRET)
    settings = Settings(home=tmp_path, task_queue=f"taint-{uuid.uuid4().hex[:8]}")
    with Served(_echo_app()) as served:
        tenants.set_private_egress("acme", [f"127.0.0.1:{served.port}"])
        auth = {"Authorization": {"$secret": "api_token"}}
        plan = {
            "name": "echo",
            "steps": [
                _step(f"cut{pad}", "http.request", {"url": f"{served.origin}/echo?pad={pad}", "headers": auth})
                for pad in (250, 270, 285)
            ],
        }
        async with running_worker(dev_server.client, settings, tenants=tenants):
            dp = Duraplan(dev_server.client, settings, tenants=tenants)
            handle = await dp.submit_plan(plan, tenant="acme", session="s")
            await handle.result()
            status = await handle.status()
            history = await dev_server.client.get_workflow_handle(handle.workflow_id).fetch_history()
    tenants.close()
    errors = [s["error"]["message"] for s in status["steps"]]
    assert len(errors) == 3 and all("HTTP 401" in e and "you sent" in e for e in errors), errors
    everything = json.dumps(history.to_json_dict()) + status.model_dump_json()
    assert "tok-a1b2" not in everything and "a1b2c3d4e5" not in everything, errors
