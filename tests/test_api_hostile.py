"""The API bad-input corpus (issue 11): what a careless or hostile client sends gets a precise 4xx
problem, never a 5xx, never a 429 that invites retrying a request that can never pass."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import litellm
import pytest
import pytest_asyncio

from executor import Settings
from executor.errors import InputsInvalid, PlanInvalid
from executor.lang.depth import MAX_JSON_DEPTH
from executor.lang.validate_cache import validate_plan_cached
from executor.service.devserver import DevServer
from executor.service.names import check_name, check_run_id
from executor.service.run_queries import check_event
from executor.service.tenants import TenantRegistry
from tests.test_api import MODEL, LiveApi, assert_problem

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"),
]


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.fixture(scope="module")
def live(dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    home = tmp_path_factory.mktemp("api-hostile")
    tenants = TenantRegistry(home / "tenants.db")
    api = LiveApi(
        dev_server.address,
        Settings(home=home, task_queue=f"hostile-{uuid.uuid4().hex[:8]}", default_model=MODEL),
        tenants,
    )
    tenants.create("acme")
    api.keys["acme"] = tenants.issue_key("acme", label="test")
    tenants.create("capped")
    tenants.set_quotas("capped", max_concurrent_runs=1)
    api.keys["capped"] = tenants.issue_key("capped", label="test")
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


def _set_plan(value: Any) -> dict[str, Any]:
    return {"name": "deep", "steps": [{"id": "s", "kind": "set", "value": value}]}


WAIT = {"name": "one-wait", "steps": [{"id": "w", "kind": "wait_for_event", "event": "go", "timeout": "1h"}]}


async def test_a_body_over_the_limit_is_413_not_429(http: httpx.AsyncClient, live: LiveApi) -> None:
    body = {"plan": _set_plan("x" * (10 * 1024 * 1024)), "session": "s"}
    response = await http.post("/v1/runs", json=body, headers=live.headers("acme"))
    problem = assert_problem(response, 413, "payload-too-large")
    assert "Retry-After" not in response.headers and problem["limit"] > 0

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"plan": {"name": "x", "steps": []}, "session": "s", "pad": "'
        for _ in range(40):
            yield b"x" * (100 * 1024)
        yield b'"}'

    streamed = await http.post(
        "/v1/runs", content=chunks(), headers={**live.headers("acme"), "Content-Type": "application/json"}
    )
    assert_problem(streamed, 413, "payload-too-large")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/runs", {"plan": _set_plan(nested(300)), "session": "s"}),
        ("/v1/plans:validate", _set_plan(nested(300))),
        ("/v1/runs", {"plan": WAIT, "session": "s", "inputs": {"x": nested(500)}}),
    ],
    ids=["set-300", "validate-300", "inputs-500"],
)
async def test_deeply_nested_json_is_a_validation_problem(
    http: httpx.AsyncClient, live: LiveApi, path: str, body: dict[str, Any]
) -> None:
    response = await http.post(path, json=body, headers=live.headers("acme"))
    problem = assert_problem(response, 422, "validation")
    assert problem["issues"][0]["code"] == "too_deep"
    assert str(MAX_JSON_DEPTH) in problem["detail"]


async def test_json_too_deep_for_any_parser_is_a_validation_problem(http: httpx.AsyncClient, live: LiveApi) -> None:
    content = (
        '{"plan": {"name": "x", "steps": []}, "session": "s", "inputs": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    )
    response = await http.post(
        "/v1/runs", content=content, headers={**live.headers("acme"), "Content-Type": "application/json"}
    )
    assert_problem(response, 422, "validation")


@pytest.mark.parametrize(
    ("path", "content", "pointer"),
    [
        ("/v1/runs", '{"plan": PLAN, "session": "s", "inputs": {"x": [1, NaN]}}', "/inputs/x/1"),
        ("/v1/runs", '{"plan": PLAN, "session": "s", "inputs": {"x": Infinity}}', "/inputs/x"),
        ("/v1/plans:validate", '{"name": "n", "steps": [{"id": "s", "kind": "set", "value": -Infinity}]}', None),
    ],
    ids=["inputs-nan", "inputs-infinity", "plan-infinity"],
)
async def test_nan_and_infinity_are_not_json_and_are_refused(
    http: httpx.AsyncClient, live: LiveApi, path: str, content: str, pointer: str | None
) -> None:
    """Python's parser takes NaN and Infinity: they went into history as such (other readers of it
    fail on them) and a run's output answered them as null."""
    body = content.replace("PLAN", json.dumps(_set_plan("${input.x}")))
    response = await http.post(path, content=body, headers={**live.headers("acme"), "Content-Type": "application/json"})
    problem = assert_problem(response, 422, "validation")
    assert problem["issues"][0]["code"] == "not_json"
    assert "is not a JSON number" in problem["detail"]
    if pointer is not None:
        assert problem["issues"][0]["pointer"] == pointer


async def test_an_event_payload_with_nan_is_refused(http: httpx.AsyncClient, live: LiveApi) -> None:
    started = await http.post("/v1/runs", json={"plan": WAIT, "session": "s"}, headers=live.headers("acme"))
    run_id = started.json()["run_id"]
    sent = await http.post(
        f"/v1/runs/{run_id}/events",
        content='{"type": "go", "payload": {"v": NaN}}',
        headers={**live.headers("acme"), "Content-Type": "application/json"},
    )
    assert assert_problem(sent, 422, "validation")["issues"][0]["pointer"] == "/payload/v"
    status = (await http.get(f"/v1/runs/{run_id}", headers=live.headers("acme"))).json()
    assert status["state"] == "waiting", "nothing was delivered"
    await http.post(f"/v1/runs/{run_id}:terminate", headers=live.headers("acme"))


def test_python_validation_agrees_with_submit_on_depth() -> None:
    from executor.lang.validate import check_plan

    _, issues = check_plan(_set_plan(nested(300)))
    assert [i.code for i in issues] == ["too_deep"]
    assert check_plan(_set_plan(nested(MAX_JSON_DEPTH - 10)))[1] == []


async def test_event_payload_nested_deep_and_non_ascii_size(http: httpx.AsyncClient, live: LiveApi) -> None:
    h = live.headers("acme")
    created = await http.post("/v1/runs", json={"plan": WAIT, "session": "s"}, headers=h)
    run_id = created.json()["run_id"]
    deep = await http.post(f"/v1/runs/{run_id}/events", json={"type": "go", "payload": nested(500)}, headers=h)
    assert_problem(deep, 422, "validation")
    # 600 KiB of "é": 1.2 MB of UTF-8, under the 1 MiB quota as history stores it? No: 1.2 MB is
    # over; 400 KiB of "é" (800 KB UTF-8) is under, and was refused as 2.4 MB of \\u escapes.
    accepted = await http.post(
        f"/v1/runs/{run_id}/events", json={"type": "go", "payload": "é" * (400 * 1024)}, headers=h
    )
    assert accepted.status_code == 200, accepted.text


async def test_events_racing_the_end_of_a_run_are_409_run_state(http: httpx.AsyncClient, live: LiveApi) -> None:
    h = live.headers("acme")
    run_id = (await http.post("/v1/runs", json={"plan": WAIT, "session": "s"}, headers=h)).json()["run_id"]
    answers = await asyncio.gather(
        *(http.post(f"/v1/runs/{run_id}/events", json={"type": "go", "payload": i}, headers=h) for i in range(3))
    )
    codes = sorted(r.status_code for r in answers)
    assert codes == [200, 409, 409], [r.text for r in answers]
    for r in answers:
        if r.status_code == 409:
            assert_problem(r, 409, "run-state")


async def test_unknown_model_is_a_client_error(
    http: httpx.AsyncClient, live: LiveApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    async def real_litellm(**kwargs: Any) -> Any:  # no HTTP happens: litellm refuses the name itself
        calls.append(kwargs["model"])
        return await litellm.acompletion(**kwargs)

    monkeypatch.setattr(live.slot, "target", real_litellm)
    response = await http.post(
        "/v1/plan",
        json={"goal": "count to three", "model": "no-such-provider/no-such-model"},
        headers=live.headers("acme"),
    )
    assert calls == ["no-such-provider/no-such-model"]
    assert_problem(response, 422, "model-rejected")


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        # a run id may contain ":", so GET here is the status of run "r1:cancel"; POST cancels r1
        ("/v1/runs/r1:cancel", "GET, HEAD, OPTIONS, POST"),
        ("/v1/runs/r1:pause", "GET, HEAD, OPTIONS, POST"),
        ("/v1/runs", "GET, HEAD, OPTIONS, POST"),
        ("/v1/runs/r1", "GET, HEAD, OPTIONS"),
        ("/v1/runs/r1/events", "OPTIONS, POST"),
    ],
)
async def test_options_and_405_name_the_methods_the_path_serves(
    http: httpx.AsyncClient, live: LiveApi, path: str, allowed: str
) -> None:
    options = await http.options(path)
    assert (options.status_code, options.headers["allow"]) == (204, allowed)
    wrong = await http.put(path, headers=live.headers("acme"))
    assert wrong.status_code == 405 and wrong.headers["allow"] == allowed


async def test_openapi_describes_plans_with_the_plan_schema(http: httpx.AsyncClient) -> None:
    spec = (await http.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert schemas["SubmitRunRequest"]["properties"]["plan"]["$ref"] == "#/components/schemas/Plan"
    body = spec["paths"]["/v1/plans:validate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Plan"}
    assert "steps" in schemas["Plan"]["properties"] and "Plan" in schemas
    refs = {v for v in _all_refs(spec) if v.startswith("#/components/schemas/")}
    assert {r.rsplit("/", 1)[1] for r in refs} <= set(schemas), "every reference resolves"


def _all_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in _all_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _all_refs(v)]
    return []


async def test_concurrency_refusal_is_429_with_retry_after(http: httpx.AsyncClient, live: LiveApi) -> None:
    h = live.headers("capped")
    answers = await asyncio.gather(
        *(http.post("/v1/runs", json={"plan": WAIT, "session": "s"}, headers=h) for _ in range(4))
    )
    assert sorted(r.status_code for r in answers) == [201, 429, 429, 429], [r.text for r in answers]
    for r in answers:
        if r.status_code == 429:
            assert assert_problem(r, 429, "quota")["limit"] == "max_concurrent_runs"
            assert int(r.headers["Retry-After"]) >= 1


def test_a_refused_id_is_not_echoed_whole() -> None:
    """A 100 KB run id or session came back whole in the error (MCP get_run, the CLI)."""
    for check, value in ((check_run_id, "a" * 100_000), (lambda v: check_name("session", v), "é" * 50_000)):
        with pytest.raises(InputsInvalid) as refused:
            check(value)
        assert len(str(refused.value)) < 400 and "characters)" in str(refused.value), str(refused.value)[:500]


async def test_a_lone_surrogate_is_not_unicode_and_is_refused(http: httpx.AsyncClient, live: LiveApi) -> None:
    """``"\\ud800"`` parses to a str no UTF-8 encoder takes: /v1/runs answered 500 (UnicodeEncodeError
    while hashing the plan), and the Python API raised it to its caller."""
    raw = '{"session": "s", "plan": {"name": "x", "steps": [{"id": "a", "kind": "set", "value": "\\ud800"}]}}'
    headers = {**live.headers("acme"), "Content-Type": "application/json"}
    problem = assert_problem(await http.post("/v1/runs", content=raw, headers=headers), 422, "validation")
    assert "surrogate" in problem["detail"]
    lone = {"name": "x", "steps": [{"id": "a", "kind": "set", "value": "\ud800"}]}
    with pytest.raises(PlanInvalid, match="surrogate"):
        validate_plan_cached(lone)
    with pytest.raises(InputsInvalid, match="surrogate"):
        check_event("\udc00", None, "acme", None)


@pytest.mark.parametrize("path", ["/v1/plan", "/v1/chats/s1/messages"])
async def test_a_client_chooses_a_planner_model_by_name_never_an_endpoint(
    http: httpx.AsyncClient, live: LiveApi, path: str
) -> None:
    payload = {"goal": "count to three"} if path == "/v1/plan" else {"text": "count to three"}
    for model in ("huggingface/http://127.0.0.1:9/v1", "ollama/llama3"):
        response = await http.post(path, json={**payload, "model": model}, headers=live.headers("acme"))
        problem = assert_problem(response, 400, "bad-request")
        assert "model" in problem["detail"], problem


async def test_plans_are_validated_off_the_event_loop(
    http: httpx.AsyncClient, live: LiveApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validating a 1-2 MiB plan is about half a second of CPU: on the API's one event loop, every
    tenant's requests waited for it."""
    import duraplan.api
    import executor.service.start

    threads: list[str] = []

    def recorded(real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.current_thread().name)
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(duraplan.api, "check_plan", recorded(duraplan.api.check_plan))
    monkeypatch.setattr(
        executor.service.start, "validate_plan_cached", recorded(executor.service.start.validate_plan_cached)
    )
    large = _set_plan("x" * 20_000)  # over the start path's inline budget (a small plan stays on the loop)
    assert (await http.post("/v1/plans:validate", json=large, headers=live.headers("acme"))).status_code == 200
    assert (
        await http.post("/v1/runs", json={"plan": large, "session": "s"}, headers=live.headers("acme"))
    ).status_code == 201
    assert len(threads) == 2 and "duraplan-api" not in threads, threads
    # A small plan (a cache hit costs tens of microseconds) is validated where it arrived: a hop to a
    # thread would cost more than the work.
    small = _set_plan("fine")
    assert (
        await http.post("/v1/runs", json={"plan": small, "session": "s"}, headers=live.headers("acme"))
    ).status_code == 201
    assert threads[2:] == ["duraplan-api"], threads
