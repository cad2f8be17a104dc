"""The HTTP API as a client sees it: a real uvicorn server on loopback, a live worker, two tenants.

The server, its Temporal client and the worker run on their own event loop in a thread, so the
async httpx tests and the (synchronous) schemathesis test both reach it over real HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import litellm
import pytest
import pytest_asyncio
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance
from temporalio.client import Client

from duraplan.api import create_app
from duraplan.worker import running_worker
from executor import Duraplan, Settings
from executor.service.devserver import DevServer
from executor.service.tenants import TenantRegistry
from planner.errors import ProviderUnreachable
from planner.testing import ScriptedModel

pytestmark = [
    pytest.mark.timeout(180),
    # litellm's own TypedDicts, imported when the planner prices a scripted answer
    pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"),
]
litellm.suppress_debug_info = True
PROBLEMS = "https://duraplan.dev/problems/"
MODEL = "openai/gpt-4o-mini"

COUNT_PLAN: dict[str, Any] = {
    "name": "count",
    "steps": [{"id": "count", "kind": "tool", "tool": "transform", "args": {"data": [1, 2, 3], "expression": "@"}}],
    "output": "${steps.count.output}",
}
SLOW_PLAN: dict[str, Any] = {
    "name": "slow",
    "steps": [
        {"id": "nap", "kind": "sleep", "duration": "1s"},
        {"id": "done", "kind": "set", "value": "rested", "depends_on": ["nap"]},
    ],
    "output": "${steps.done.output}",
}
WAIT_PLAN: dict[str, Any] = {
    "name": "approval",
    "steps": [
        {
            "id": "approval",
            "kind": "wait_for_event",
            "event": "approval",
            "timeout": "1h",
            "payload_schema": {"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}},
        }
    ],
    "output": "${steps.approval.output.ok}",
}
BAD_PLAN: dict[str, Any] = {"name": "bad", "steps": [{"id": "x", "kind": "tool", "tool": "no.such.tool", "args": {}}]}


class Endless(ScriptedModel):
    """A model that always answers with a valid plan (for fuzzing the planner endpoints)."""

    async def __call__(self, **kwargs: Any) -> Any:
        if not self.remaining:
            self.add(COUNT_PLAN)
        return await super().__call__(**kwargs)


class CompletionSlot:
    """The app's and the worker's model: the test's double, else ``Endless``."""

    def __init__(self) -> None:
        self.target: ScriptedModel | None = None
        self.fallback = Endless()

    async def __call__(self, **kwargs: Any) -> Any:
        return await (self.target or self.fallback)(**kwargs)


@dataclass
class LiveApi:
    address: str
    settings: Settings
    tenants: TenantRegistry
    slot: CompletionSlot = field(default_factory=CompletionSlot)
    url: str = ""
    keys: dict[str, str] = field(default_factory=dict)
    _server: uvicorn.Server | None = None
    _error: BaseException | None = None

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._thread = threading.Thread(target=self._run, args=(sock,), name="duraplan-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not (self._server and self._server.started):
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"API server did not start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("API server did not start within 60 s")
            time.sleep(0.05)

    def _run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._main(sock))
        except BaseException as exc:
            self._error = exc

    async def _main(self, sock: socket.socket) -> None:
        client = await Client.connect(self.address)
        async with running_worker(client, self.settings, tenants=self.tenants, completion=self.slot):
            dp = Duraplan(client, self.settings, tenants=self.tenants)
            app = create_app(dp, self.tenants, completion=self.slot, model=MODEL)
            self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
            await self._server.serve(sockets=[sock])

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout=30)

    def headers(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}


@pytest.fixture(scope="module")
def live(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    home = tmp_path_factory.mktemp("api-home")
    tenants = TenantRegistry(home / "tenants.db")
    api = LiveApi(
        dev_server.address,
        Settings(home=home, task_queue=f"api-{uuid.uuid4().hex[:8]}", default_model=MODEL),
        tenants,
    )
    for name in ("acme", "beta", "limited", "fuzz", "small"):
        tenants.create(name)
        api.keys[name] = tenants.issue_key(name, label="test")
    revoked = tenants.issue_key("acme", label="old")
    tenants.revoke_key(revoked.split("_")[1])
    api.keys["revoked"] = revoked
    tenants.set_quotas("limited", runs_per_second=0.001, runs_burst=1)
    tenants.set_quotas("small", max_steps_per_run=5, max_event_bytes=100)
    api.start()
    try:
        yield api
    finally:
        api.stop()
        tenants.close()


@pytest_asyncio.fixture(loop_scope="session")
async def http(live: LiveApi) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
        yield client


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEMS + kind and body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    return body


async def submit(http: httpx.AsyncClient, live: LiveApi, plan: dict[str, Any], tenant: str = "acme", **kw: Any) -> str:
    body = {"plan": plan, "session": "s1", **kw}
    response = await http.post("/v1/runs", json=body, headers=live.headers(tenant))
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


async def wait_state(
    http: httpx.AsyncClient, live: LiveApi, run_id: str, states: set[str], tenant: str = "acme"
) -> dict[str, Any]:
    for _ in range(300):
        response = await http.get(f"/v1/runs/{run_id}", headers=live.headers(tenant))
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["state"] in states:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} never reached {states}: {status}")


async def step_state(http: httpx.AsyncClient, live: LiveApi, run_id: str, step: str, state: str) -> None:
    for _ in range(300):
        status = (await http.get(f"/v1/runs/{run_id}", headers=live.headers("acme"))).json()
        if any(s.get("id") == step and s.get("state") == state for s in status.get("steps", [])):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"step {step} of {run_id} never {state}")


# ---- auth and problems --------------------------------------------------------------------------


async def test_authentication_failures_are_401_problems(http: httpx.AsyncClient, live: LiveApi) -> None:
    cases: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer dp_0123456789abcdef_" + "x" * 43},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic dXNlcjpwdw=="},
        live.headers("revoked"),
    ]
    for headers in cases:
        for method, path in [("GET", "/v1/runs"), ("GET", "/v1/runs/r1"), ("POST", "/v1/plans:validate")]:
            response = await http.request(method, path, headers=headers, json={})
            body = assert_problem(response, 401, "authentication")
            assert response.headers["www-authenticate"] == "Bearer"
            assert "dp_" not in body.get("detail", "")


async def test_malformed_requests_are_400_problems(http: httpx.AsyncClient, live: LiveApi) -> None:
    h = live.headers("acme")
    missing = await http.post("/v1/runs", json={"plan": COUNT_PLAN}, headers=h)
    body = assert_problem(missing, 400, "bad-request")
    assert any(e["loc"][-1] == "session" for e in body["errors"])
    assert_problem(await http.post("/v1/runs", content=b"{not json", headers=h), 400, "bad-request")
    assert_problem(await http.post("/v1/plans:validate", json=[1, 2], headers=h), 400, "bad-request")
    assert_problem(await http.get("/v1/runs", params={"limit": 0}, headers=h), 400, "bad-request")
    assert_problem(await http.get("/v1/runs", params={"status": "sleepy"}, headers=h), 400, "bad-request")
    assert_problem(await http.get("/v1/runs/bad%20id", headers=h), 400, "bad-request")
    assert_problem(await http.get("/v1/nothing-here", headers=h), 404, "not-found")


# ---- plans and runs -----------------------------------------------------------------------------


async def test_validate_reports_every_issue(http: httpx.AsyncClient, live: LiveApi) -> None:
    h = live.headers("acme")
    ok = await http.post("/v1/plans:validate", json=COUNT_PLAN, headers=h)
    assert ok.status_code == 200 and ok.json() == {"valid": True, "issues": []}
    bad = (await http.post("/v1/plans:validate", json=BAD_PLAN, headers=h)).json()
    assert bad["valid"] is False
    assert [(i["pointer"], i["step"]) for i in bad["issues"]] == [("/steps/0/tool", "x")]
    # Tool grants are the tenant's: debug.* is not granted by default.
    echo = {"name": "e", "steps": [{"id": "e", "kind": "tool", "tool": "debug.echo", "args": {"value": 1}}]}
    granted = (await http.post("/v1/plans:validate", json=echo, headers=h)).json()
    assert [i["code"] for i in granted["issues"]] == ["tool_not_granted"]


async def test_submit_status_result_and_list(http: httpx.AsyncClient, live: LiveApi) -> None:
    h = live.headers("acme")
    session = f"list-{uuid.uuid4().hex[:6]}"
    created = await http.post("/v1/runs", json={"plan": COUNT_PLAN, "session": session}, headers=h)
    assert created.status_code == 201 and created.json()["created"] is True
    run_id = created.json()["run_id"]
    assert created.headers["location"] == f"/v1/runs/{run_id}"
    status = await wait_state(http, live, run_id, {"completed"})
    assert status["run_id"] == run_id and status["tenant"] == "acme" and status["session"] == session
    result = await http.get(f"/v1/runs/{run_id}/result", headers=h)
    assert result.status_code == 200 and result.json() == {"run_id": run_id, "state": "completed", "output": [1, 2, 3]}

    invalid = await http.post("/v1/runs", json={"plan": BAD_PLAN, "session": session}, headers=h)
    assert assert_problem(invalid, 422, "validation")["issues"][0]["pointer"] == "/steps/0/tool"
    inputs = {**COUNT_PLAN, "inputs": {"type": "object", "required": ["n"]}}
    bad_inputs = await http.post("/v1/runs", json={"plan": inputs, "session": session}, headers=h)
    assert "'n' is a required property" in assert_problem(bad_inputs, 422, "validation")["issues"][0]["message"]

    for _ in range(100):  # the visibility store is eventually consistent
        runs = (await http.get("/v1/runs", params={"session": session}, headers=h)).json()["runs"]
        if runs and runs[0]["state"] == "completed":
            break
        await asyncio.sleep(0.1)
    assert [(r["run_id"], r["state"], r["plan_name"]) for r in runs] == [(run_id, "completed", "count")]
    completed = (await http.get("/v1/runs", params={"status": "completed", "limit": 1000}, headers=h)).json()
    assert run_id in {r["run_id"] for r in completed["runs"]}
    others = (await http.get("/v1/runs", params={"session": session}, headers=live.headers("beta"))).json()
    assert others == {"runs": []}


async def test_idempotent_submit(http: httpx.AsyncClient, live: LiveApi) -> None:
    h = live.headers("acme")
    key = f"order-{uuid.uuid4().hex[:8]}"
    body = {"plan": WAIT_PLAN, "session": "s1"}
    first = await http.post("/v1/runs", json=body, headers={**h, "Idempotency-Key": key})
    again = await http.post("/v1/runs", json=body, headers={**h, "Idempotency-Key": key})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["run_id"] == again.json()["run_id"] == key and again.json()["created"] is False
    different = await http.post("/v1/runs", json={**body, "plan": COUNT_PLAN}, headers={**h, "Idempotency-Key": key})
    assert_problem(different, 409, "conflict")
    other_inputs = {**body, "inputs": {"x": 1}}
    assert_problem(
        await http.post("/v1/runs", json=other_inputs, headers={**h, "Idempotency-Key": key}), 409, "conflict"
    )
    mismatch = await http.post("/v1/runs", json={**body, "run_id": "other"}, headers={**h, "Idempotency-Key": key})
    assert_problem(mismatch, 400, "bad-request")
    # The same key is another run for another tenant.
    theirs = await http.post("/v1/runs", json=body, headers={**live.headers("beta"), "Idempotency-Key": key})
    assert theirs.status_code == 201
    for tenant in ("acme", "beta"):
        assert (await http.post(f"/v1/runs/{key}:terminate", headers=live.headers(tenant))).status_code == 200


async def test_events_pause_resume_and_result_states(http: httpx.AsyncClient, live: LiveApi) -> None:
    h = live.headers("acme")
    run_id = await submit(http, live, WAIT_PLAN)
    await step_state(http, live, run_id, "approval", "waiting")
    assert_problem(await http.get(f"/v1/runs/{run_id}/result", headers=h), 409, "run-state")

    paused = await http.post(f"/v1/runs/{run_id}:pause", headers=h)
    assert paused.json() == {"run_id": run_id, "action": "pause", "state": "paused"}
    assert (await http.get(f"/v1/runs/{run_id}", headers=h)).json()["state"] == "paused"
    resumed = await http.post(f"/v1/runs/{run_id}:resume", headers=h)
    assert resumed.json()["state"] == "running"

    unknown = await http.post(f"/v1/runs/{run_id}/events", json={"type": "nope"}, headers=h)
    assert_problem(unknown, 422, "validation")
    bad_payload = {"type": "approval", "payload": {"ok": "yes"}}
    assert_problem(await http.post(f"/v1/runs/{run_id}/events", json=bad_payload, headers=h), 422, "validation")
    event = {"type": "approval", "payload": {"ok": True}, "event_id": "e1"}
    sent = await http.post(f"/v1/runs/{run_id}/events", json=event, headers=h)
    assert sent.status_code == 200 and sent.json()["accepted"] is True and sent.json()["duplicate"] is False
    await wait_state(http, live, run_id, {"completed"})
    assert (await http.get(f"/v1/runs/{run_id}/result", headers=h)).json()["output"] is True
    late = await http.post(f"/v1/runs/{run_id}/events", json=event, headers=h)
    assert_problem(late, 409, "run-state")
    assert_problem(await http.post(f"/v1/runs/{run_id}:pause", headers=h), 409, "run-state")

    # Restart: a fresh run under the same id.
    restarted = await http.post(f"/v1/runs/{run_id}:restart", headers=h)
    assert restarted.status_code == 200 and restarted.json()["action"] == "restart"
    status = await wait_state(http, live, run_id, {"running", "waiting"})
    assert status["generation"] == 1

    # Cancel and terminate: the result is a run-failed problem naming the state.
    assert (await http.post(f"/v1/runs/{run_id}:cancel", headers=h)).json()["action"] == "cancel"
    await wait_state(http, live, run_id, {"cancelled"})
    failed = assert_problem(await http.get(f"/v1/runs/{run_id}/result", headers=h), 409, "run-failed")
    assert failed["state"] == "cancelled"
    other = await submit(http, live, WAIT_PLAN)
    assert (await http.post(f"/v1/runs/{other}:terminate", headers=h)).json()["action"] == "terminate"
    await wait_state(http, live, other, {"terminated"})
    assert assert_problem(await http.get(f"/v1/runs/{other}/result", headers=h), 409, "run-failed")["state"] == (
        "terminated"
    )


async def test_a_failed_run_result_is_a_problem(http: httpx.AsyncClient, live: LiveApi) -> None:
    plan = {"name": "boom", "steps": [{"id": "boom", "kind": "fail", "message": "no luck", "error_type": "Nope"}]}
    run_id = await submit(http, live, plan)
    await wait_state(http, live, run_id, {"failed"})
    body = assert_problem(await http.get(f"/v1/runs/{run_id}/result", headers=live.headers("acme")), 409, "run-failed")
    assert body["state"] == "failed" and "no luck" in body["detail"]
    closed = await http.post(f"/v1/runs/{run_id}:terminate", headers=live.headers("acme"))
    assert_problem(closed, 409, "run-state")  # Temporal's "already completed": a problem, never a 5xx


async def test_another_tenants_run_is_not_found(http: httpx.AsyncClient, live: LiveApi) -> None:
    run_id = await submit(http, live, WAIT_PLAN)
    b = live.headers("beta")
    calls = [
        ("GET", f"/v1/runs/{run_id}", None),
        ("GET", f"/v1/runs/{run_id}/result", None),
        ("GET", f"/v1/runs/{run_id}/progress", None),
        ("POST", f"/v1/runs/{run_id}/events", {"type": "approval", "payload": {"ok": True}}),
        *[("POST", f"/v1/runs/{run_id}:{action}", None) for action in ("pause", "resume", "cancel", "terminate")],
        ("POST", f"/v1/runs/{run_id}:restart", None),
    ]
    for method, path, body in calls:
        assert_problem(await http.request(method, path, headers=b, json=body), 404, "not-found")
    # Nothing happened to acme's run.
    status = await wait_state(http, live, run_id, {"running", "waiting"})
    assert status["generation"] == 0 and status["buffered_events"] == 0
    await http.post(f"/v1/runs/{run_id}:terminate", headers=live.headers("acme"))


async def test_progress_streams_until_the_final_state(http: httpx.AsyncClient, live: LiveApi) -> None:
    run_id = await submit(http, live, SLOW_PLAN)
    states: list[str] = []
    snapshots: list[dict[str, Any]] = []
    async with http.stream("GET", f"/v1/runs/{run_id}/progress", headers=live.headers("acme")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert event == "status"
                snapshots.append(json.loads(line.removeprefix("data: ")))
                states.append(snapshots[-1]["state"])
    assert states[-1] == "completed" and len(states) >= 2
    assert any(s != "completed" for s in states[:-1]), states
    assert snapshots[-1].get("output", True)
    assert all(a != b for a, b in itertools.pairwise(snapshots)), "only changes are sent"
    # A finished run's stream is its final state, at once.
    async with http.stream("GET", f"/v1/runs/{run_id}/progress", headers=live.headers("acme")) as again:
        lines = [line async for line in again.aiter_lines() if line.startswith("data: ")]
    assert [json.loads(line[6:])["state"] for line in lines] == ["completed"]


async def test_progress_stream_ends_when_its_key_is_revoked(http: httpx.AsyncClient, live: LiveApi) -> None:
    """A key is checked for as long as its stream is open, not only when it opens: revoking a
    leaked key (or deleting its tenant) ends the streams it opened on runs that go on waiting."""
    key = live.tenants.issue_key("acme", label="stream")
    waits = {"name": "waits", "steps": [{"id": "w", "kind": "wait_for_event", "event": "go", "timeout": "1h"}]}
    run_id = await submit(http, live, waits)
    await wait_state(http, live, run_id, {"waiting"})
    async with http.stream(
        "GET", f"/v1/runs/{run_id}/progress", headers={"Authorization": f"Bearer {key}"}
    ) as response:
        assert response.status_code == 200
        lines = response.aiter_lines()
        assert (await anext(lines)) == "event: status"
        live.tenants.revoke_key(key.split("_")[1])

        async def rest() -> list[str]:
            return [line async for line in lines]

        tail = await asyncio.wait_for(rest(), 30)  # the stream ends; it would run as long as the run waits
    assert not any(json.loads(line[6:])["state"] != "waiting" for line in tail if line.startswith("data: ")), tail
    assert (await http.post(f"/v1/runs/{run_id}:cancel", headers=live.headers("acme"))).status_code == 200


async def test_quota_is_429_with_retry_after(http: httpx.AsyncClient, live: LiveApi) -> None:
    await submit(http, live, COUNT_PLAN, tenant="limited")
    refused = await http.post("/v1/runs", json={"plan": COUNT_PLAN, "session": "s1"}, headers=live.headers("limited"))
    body = assert_problem(refused, 429, "quota")
    assert body["limit"] == "runs_per_second" and body["retry_after_s"] > 0
    assert int(refused.headers["retry-after"]) >= 1
    # An invalid plan costs no quota and is still a validation problem.
    invalid = await http.post("/v1/runs", json={"plan": BAD_PLAN, "session": "s1"}, headers=live.headers("limited"))
    assert_problem(invalid, 422, "validation")


async def test_limits_a_request_breaks_by_its_shape_are_not_429(http: httpx.AsyncClient, live: LiveApi) -> None:
    h = live.headers("small")
    greedy = {**COUNT_PLAN, "limits": {"max_steps": 100}}
    refused = await http.post("/v1/runs", json={"plan": greedy, "session": "s1"}, headers=h)
    body = assert_problem(refused, 422, "quota")
    assert body["limit"] == "max_steps_per_run" and "retry-after" not in refused.headers
    waits = {"name": "waits", "steps": [{"id": "w", "kind": "wait_for_event", "event": "go", "timeout": "1h"}]}
    run_id = await submit(http, live, waits, tenant="small")
    big = await http.post(f"/v1/runs/{run_id}/events", json={"type": "go", "payload": "x" * 200}, headers=h)
    assert assert_problem(big, 413, "quota")["limit"] == "max_event_bytes"
    status = (await http.get(f"/v1/runs/{run_id}", headers=h)).json()
    assert status["buffered_events"] == 0, "nothing was taken in"
    assert (await http.post(f"/v1/runs/{run_id}:cancel", headers=h)).status_code == 200


# ---- planner ------------------------------------------------------------------------------------


async def test_plan_a_goal(http: httpx.AsyncClient, live: LiveApi) -> None:
    h = live.headers("acme")
    live.slot.target = model = ScriptedModel("not json", COUNT_PLAN, usage=(100, 20))
    try:
        with model:
            response = await http.post("/v1/plan", json={"goal": "count three numbers"}, headers=h)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["plan"] == COUNT_PLAN and body["model"] == MODEL
        assert [a["ok"] for a in body["attempts"]] == [False, True]
        shown = model.calls[0].messages[0]["content"]
        assert "- kv.incr" in shown and "- debug.echo" not in shown, "the model sees the tenant's granted tools only"
        assert (body["prompt_tokens"], body["completion_tokens"], body["total_tokens"]) == (200, 40, 240)
        assert body["cost_usd"] >= 0

        live.slot.target = ScriptedModel("nope")
        failed = await http.post("/v1/plan", json={"goal": "x", "max_attempts": 1}, headers=h)
        assert assert_problem(failed, 422, "planning-failed")["attempts"] == 1
        live.slot.target = ScriptedModel(ProviderUnreachable("model provider down", 503))
        down = await http.post("/v1/plan", json={"goal": "x"}, headers=h)
        assert assert_problem(down, 503, "planner-unavailable")["error"] == "ProviderUnreachable"
        assert_problem(await http.post("/v1/plan", json={"goal": ""}, headers=h), 400, "bad-request")
    finally:
        live.slot.target = None


async def test_chat_messages_revise_and_submit(http: httpx.AsyncClient, live: LiveApi) -> None:
    h = live.headers("acme")
    session = f"chat-{uuid.uuid4().hex[:6]}"
    v2 = {**COUNT_PLAN, "name": "count_more"}
    live.slot.target = model = ScriptedModel(COUNT_PLAN, v2)
    try:
        nothing = await http.post(f"/v1/chats/{session}/submit", json={}, headers=h)
        assert_problem(nothing, 409, "run-state")
        with model:
            r1 = await http.post(f"/v1/chats/{session}/messages", json={"text": "count"}, headers=h)
            r2 = await http.post(f"/v1/chats/{session}/messages", json={"text": "rename it"}, headers=h)
        assert r1.status_code == r2.status_code == 200, r1.text + r2.text
        assert (r1.json()["revision"], r2.json()["revision"]) == (1, 2)
        assert r1.json()["plan"] == COUNT_PLAN and r2.json()["plan"] == v2
        assert r2.json()["diff"].startswith("--- v1\n+++ v2") and '+  "name": "count_more",' in r2.json()["diff"]
        assert r2.json()["session"] == session

        key = f"chat-run-{uuid.uuid4().hex[:6]}"
        submitted = await http.post(f"/v1/chats/{session}/submit", headers={**h, "Idempotency-Key": key})
        assert submitted.status_code == 201, submitted.text
        assert submitted.json()["run_id"] == key
        await wait_state(http, live, key, {"completed"})
        assert (await http.get(f"/v1/runs/{key}/result", headers=h)).json()["output"] == [1, 2, 3]
        assert_problem(
            await http.post(f"/v1/chats/{session}/messages", json={"text": ""}, headers=h), 400, "bad-request"
        )
    finally:
        live.slot.target = None


# ---- the published spec, fuzzed ----------------------------------------------------------------


async def test_openapi_spec_is_published_with_problem_responses(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, item in spec["paths"].items():
        assert path.startswith("/v1/")
        for operation in item.values():
            for code, response in operation["responses"].items():
                if code[0] in "45":
                    assert response["content"] == {
                        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }
            assert operation["security"] == [{"HTTPBearer": []}]


def test_fuzz_the_published_spec(live: LiveApi) -> None:
    """Schemathesis on every operation of the live server's spec: no 5xx, responses as documented."""
    spec = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    with httpx.Client(base_url=live.url, headers=live.headers("fuzz"), timeout=30) as sync:
        created = sync.post("/v1/runs", json={"plan": COUNT_PLAN, "session": "s1", "run_id": "fuzz-run"})
        assert created.status_code == 201, created.text
    seen: Counter[tuple[str, int]] = Counter()
    failures: dict[str, str] = {}
    operations = 0
    labels: set[str] = set()
    for result in spec.get_all_operations():
        operation: Any = result.ok()  # type: ignore[union-attr]  # an invalid operation raises here
        operations += 1
        labels.add(operation.label)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        def fuzz(case: Any) -> None:
            if case.path_parameters and "run_id" in case.path_parameters and sum(seen.values()) % 2:
                case.path_parameters["run_id"] = "fuzz-run"  # every other case: an existing run
            response = case.call_and_validate(
                headers=live.headers("fuzz"),
                checks=[not_a_server_error, response_schema_conformance],
                timeout=30,
            )
            seen[(case.operation.label, response.status_code)] += 1

        try:
            fuzz()
        except Exception as exc:
            failures[operation.label] = str(exc)[:3000]
    assert operations == len(labels) == 23, labels
    ok = {label for (label, status), _ in seen.items() if status < 300}
    assert {
        "POST /v1/plans:validate",
        "POST /v1/plan",
        "GET /v1/runs",
        "GET /v1/runs/{run_id}",
        "GET /v1/usage",
    } <= ok, seen
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
