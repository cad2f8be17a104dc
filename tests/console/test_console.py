"""The web console in a real headless Chromium against the live API, a worker and a dev server.

Set DURAPLAN_SCREENSHOTS=docs/console to (re)write the README's screenshots while these run.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from tests.console.conftest import STREAMS_PER_TENANT, LiveConsole

pytestmark = [
    pytest.mark.timeout(180),
    # litellm's own TypedDicts, imported when the planner prices a scripted answer
    pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning"),
]
TIMEOUT_MS = 30_000

GATED_APPROVAL: dict[str, Any] = {
    "name": "gated-approval",
    "steps": [
        {"id": "go", "kind": "wait_for_event", "event": "go", "timeout": "1h"},
        {
            "id": "approval",
            "kind": "wait_for_event",
            "event": "approval",
            "timeout": "1h",
            "depends_on": ["go"],
            "payload_schema": {
                "type": "object",
                "required": ["ok"],
                "properties": {"ok": {"type": "boolean"}, "note": {"type": "string"}},
            },
        },
        {"id": "done", "kind": "set", "value": "${steps.approval.output.ok}"},
    ],
    "output": "${steps.done.output}",
}
WAIT_PLAN: dict[str, Any] = {
    "name": "wait",
    "steps": [{"id": "approval", "kind": "wait_for_event", "event": "approval", "timeout": "1h"}],
}
INVALID_PLAN_YAML = """\
name: broken
steps:
  - id: fetch
    kind: tool
    tool: no.such.tool
    args: {}
  - id: report
    kind: set
    value: ${steps.fetch.output}
    depends_on: [ghost]
"""
VALID_PLAN_JSON = (
    '{"name": "double", "inputs": {"type": "object", "required": ["n"]},'
    ' "steps": [{"id": "twice", "kind": "code", "code": "n * 2", "inputs": {"n": "${input.n}"}}],'
    ' "output": "${steps.twice.output}"}'
)


async def submit(live: LiveConsole, plan: dict[str, Any], tenant: str = "acme", session: str = "console") -> str:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        response = await http.post("/v1/runs", json={"plan": plan, "session": session}, headers=live.headers(tenant))
        assert response.status_code == 201, response.text
        run_id: str = response.json()["run_id"]
        return run_id


async def sign_in(page: Page, live: LiveConsole, tenant: str) -> None:
    await page.goto(f"{live.url}/ui/")
    await page.fill("#api-key", live.keys[tenant])
    await page.click("#sign-in button[type=submit]")
    await expect(page.locator("#runs-body")).to_be_attached(timeout=TIMEOUT_MS)


def node(page: Page, step: str) -> Any:
    return page.locator(f'#run-graph g.node[data-step="{step}"]')


async def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("DURAPLAN_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(folder) / name), full_page=True)


async def test_sign_in_rejects_a_bad_key_then_lists_the_tenants_runs(page: Page, live: LiveConsole) -> None:
    run_id = await submit(live, WAIT_PLAN, session="sign-in")
    await page.goto(f"{live.url}/ui/")
    await page.fill("#api-key", "dp_0123456789abcdef_" + "x" * 43)
    await page.click("#sign-in button[type=submit]")
    await expect(page.locator("#sign-in-error")).to_contain_text("not accepted", timeout=TIMEOUT_MS)
    await sign_in(page, live, "acme")
    await expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible(timeout=TIMEOUT_MS)
    # Live list: a run submitted now appears without reloading, and the session filter narrows the list.
    later = await submit(live, WAIT_PLAN, session="later")
    await expect(page.locator(f'tr[data-run="{later}"]')).to_be_visible(timeout=TIMEOUT_MS)
    await screenshot(page, "runs-list.png")
    await page.fill("#run-filters input[name=session]", "later")
    await page.click("#run-filters button[type=submit]")
    await expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(0, timeout=TIMEOUT_MS)
    await expect(page.locator(f'tr[data-run="{later}"]')).to_be_visible()
    await page.fill("#run-filters input[name=session]", "")
    await page.fill("#run-filters input[name=plan]", "no-such-plan")
    await page.click("#run-filters button[type=submit]")
    await expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(0, timeout=TIMEOUT_MS)
    await page.fill("#run-filters input[name=plan]", "wai")  # a plan name's start, or a hash prefix
    await page.fill("#run-filters input[name=until]", "2000-01-01T00:00")
    await page.click("#run-filters button[type=submit]")
    await expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(0, timeout=TIMEOUT_MS)
    await page.fill("#run-filters input[name=until]", "")
    await page.fill("#run-filters input[name=since]", "2000-01-01T00:00")
    await page.click("#run-filters button[type=submit]")
    await expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible(timeout=TIMEOUT_MS)
    hash_prefix = (await page.locator(f'tr[data-run="{run_id}"] td.mono').inner_text())[:6]
    await page.fill("#run-filters input[name=plan]", hash_prefix)  # the hash as shown, without sha256:
    await page.click("#run-filters button[type=submit]")
    await expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible(timeout=TIMEOUT_MS)


async def test_run_page_shows_states_live_and_approves_through_the_event_form(page: Page, live: LiveConsole) -> None:
    run_id = await submit(live, GATED_APPROVAL)
    await sign_in(page, live, "acme")
    await page.goto(f"{live.url}/ui/#/run/{run_id}")
    await expect(node(page, "go")).to_have_attribute("data-state", "waiting", timeout=TIMEOUT_MS)
    await expect(node(page, "approval")).to_have_attribute("data-state", "pending")
    await page.evaluate("window.__notReloaded = true")
    # The gate opens outside the page: the page learns it from the event stream, with no reload.
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        sent = await http.post(f"/v1/runs/{run_id}/events", json={"type": "go"}, headers=live.headers("acme"))
        assert sent.status_code == 200, sent.text
    await expect(node(page, "go")).to_have_attribute("data-state", "completed", timeout=TIMEOUT_MS)
    await expect(node(page, "approval")).to_have_attribute("data-state", "waiting", timeout=TIMEOUT_MS)
    assert await page.evaluate("window.__notReloaded") is True
    await node(page, "approval").click()
    await expect(page.locator("#node-details")).to_contain_text("wait_for_event")
    await screenshot(page, "run-page.png")

    form = page.locator('form.event-form[data-step="approval"]')
    await form.locator('input[name="note"]').fill("looks good")
    await form.locator('input[name="ok"]').check()
    await form.locator('button[type="submit"]').click()
    await expect(page.locator("#run-state")).to_have_attribute("data-state", "completed", timeout=TIMEOUT_MS)
    await expect(node(page, "done")).to_have_attribute("data-state", "completed", timeout=TIMEOUT_MS)
    await node(page, "done").click()
    await expect(page.locator("#node-details")).to_contain_text("true")  # done's output: the approval's ok
    await node(page, "approval").click()
    await expect(page.locator("#node-details")).to_contain_text('"note": "looks good"')
    assert await page.evaluate("window.__notReloaded") is True


async def test_cancel_button_cancels_the_run(page: Page, live: LiveConsole) -> None:
    run_id = await submit(live, WAIT_PLAN)
    await sign_in(page, live, "acme")
    await page.goto(f"{live.url}/ui/#/run/{run_id}")
    await expect(node(page, "approval")).to_have_attribute("data-state", "waiting", timeout=TIMEOUT_MS)
    await page.click("#action-pause")
    await expect(page.locator("#run-state")).to_have_attribute("data-state", "paused", timeout=TIMEOUT_MS)
    await expect(page.locator("#action-pause")).to_be_disabled()
    await page.click("#action-resume")
    await expect(page.locator("#run-state")).to_have_attribute("data-state", "waiting", timeout=TIMEOUT_MS)
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.dismiss()))
    await page.click("#action-cancel")  # dismissed: nothing happens
    await expect(page.locator("#run-state")).to_have_attribute("data-state", "waiting")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("#action-cancel")
    await expect(page.locator("#run-state")).to_have_attribute("data-state", "cancelled", timeout=TIMEOUT_MS)
    await expect(page.locator("#action-cancel")).to_be_disabled()
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        status = (await http.get(f"/v1/runs/{run_id}", headers=live.headers("acme"))).json()
    assert status["state"] == "cancelled"


async def test_editor_pins_every_problem_to_its_step_then_runs_a_fixed_plan(page: Page, live: LiveConsole) -> None:
    await sign_in(page, live, "acme")
    await page.goto(f"{live.url}/ui/#/editor")
    await page.fill("#plan-source", INVALID_PLAN_YAML)
    fetch = page.locator('#editor-graph g.node[data-step="fetch"]')
    report = page.locator('#editor-graph g.node[data-step="report"]')
    await expect(fetch).to_have_class("node state-planned has-issues", timeout=TIMEOUT_MS)
    await expect(report).to_have_class("node state-planned has-issues")
    assert await fetch.get_attribute("data-issues") == "1"
    await expect(page.locator('#editor-problems li[data-pointer="/steps/0/tool"]')).to_contain_text("no.such.tool")
    await expect(page.locator('#editor-problems li[data-step="report"]')).to_contain_text("ghost")
    # The dependency edge the template implies is drawn.
    await expect(page.locator('#editor-graph path.edge[data-from="fetch"][data-to="report"]')).to_have_count(1)
    await screenshot(page, "plan-editor.png")

    await page.fill("#plan-source", "name: [unclosed")
    await expect(page.locator("#editor-status")).to_contain_text("Cannot read the plan")

    await page.fill("#plan-source", VALID_PLAN_JSON)
    await expect(page.locator("#editor-status")).to_have_text("The plan is valid.", timeout=TIMEOUT_MS)
    await page.fill("#run-inputs", "{}")
    await page.click("#run-plan")
    await expect(page.locator("#editor-status")).to_contain_text("n", timeout=TIMEOUT_MS)  # inputs schema: n required
    await page.fill("#run-inputs", '{"n": 21}')
    await page.click("#run-plan")
    await expect(page.locator("#run-state")).to_have_attribute("data-state", "completed", timeout=TIMEOUT_MS)
    await node(page, "twice").click()
    await expect(page.locator("#node-details")).to_contain_text("42")


async def test_a_second_tenant_sees_none_of_the_first_ones_runs(page: Page, live: LiveConsole) -> None:
    acme_run = await submit(live, WAIT_PLAN, tenant="acme", session="shared-name")
    beta_run = await submit(live, WAIT_PLAN, tenant="beta", session="shared-name")
    await sign_in(page, live, "beta")
    await expect(page.locator(f'tr[data-run="{beta_run}"]')).to_be_visible(timeout=TIMEOUT_MS)
    await expect(page.locator(f'tr[data-run="{acme_run}"]')).to_have_count(0)
    await page.goto(f"{live.url}/ui/#/run/{acme_run}")
    await expect(page.locator("#not-found")).to_be_visible(timeout=TIMEOUT_MS)
    await expect(page.locator("#run-graph")).to_have_count(0)
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:  # what the page asked, asked directly
        for path in (f"/v1/runs/{acme_run}", f"/v1/runs/{acme_run}/plan", f"/v1/runs/{acme_run}/progress"):
            assert (await http.get(path, headers=live.headers("beta"))).status_code == 404, path


async def test_event_streams_are_bounded_per_tenant(live: LiveConsole) -> None:
    run_id = await submit(live, WAIT_PLAN)
    beta_run = await submit(live, WAIT_PLAN, tenant="beta")
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        path = f"/v1/runs/{run_id}/progress"
        streams = [http.stream("GET", path, headers=live.headers("acme")) for _ in range(STREAMS_PER_TENANT)]
        opened = [await s.__aenter__() for s in streams]
        assert all(r.status_code == 200 for r in opened)
        over = await http.get(path, headers=live.headers("acme"))
        assert over.status_code == 429 and over.json()["limit"] == "event_streams"
        assert "Retry-After" in over.headers
        # Another tenant's streams are counted apart; another tenant's run is not found, not streamed.
        async with http.stream("GET", f"/v1/runs/{beta_run}/progress", headers=live.headers("beta")) as other:
            assert other.status_code == 200
        for _ in range(STREAMS_PER_TENANT + 1):  # a 404 gives its slot back
            foreign = await http.get(f"/v1/runs/{run_id}/progress", headers=live.headers("beta"))
            assert foreign.status_code == 404
        async with http.stream("GET", f"/v1/runs/{beta_run}/progress", headers=live.headers("beta")) as other:
            assert other.status_code == 200
        await streams[0].__aexit__(None, None, None)
        for _ in range(100):  # the server notices the closed connection and frees the slot
            again = await http.get(f"/v1/runs/{run_id}/plan", headers=live.headers("acme"))
            assert again.status_code == 200
            probe = http.stream("GET", path, headers=live.headers("acme"))
            response = await probe.__aenter__()
            await probe.__aexit__(None, None, None)
            if response.status_code == 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("a closed stream's slot was never freed")
        for s in streams[1:]:
            await s.__aexit__(None, None, None)


NESTED_PLAN: dict[str, Any] = {
    "name": "nested",
    "steps": [
        {"id": "numbers", "kind": "set", "value": [1, 2, 3]},
        {
            "id": "each",
            "kind": "foreach",
            "items": "steps.numbers.output",
            "steps": [{"id": "double", "kind": "code", "code": "item * 2", "inputs": {"item": "${item}"}}],
        },
        {
            "id": "route",
            "kind": "switch",
            "depends_on": ["each"],
            "cases": [{"when": "steps.numbers.output", "steps": [{"id": "big", "kind": "set", "value": "yes"}]}],
            "default": [{"id": "small", "kind": "set", "value": "no"}],
        },
        {
            "id": "child",
            "kind": "subplan",
            "depends_on": ["route"],
            "plan": {"name": "child", "steps": [{"id": "hello", "kind": "set", "value": "hi"}]},
        },
    ],
}


async def test_nested_steps_render_inside_their_step(page: Page, live: LiveConsole) -> None:
    run_id = await submit(live, NESTED_PLAN)
    await sign_in(page, live, "acme")
    await page.goto(f"{live.url}/ui/#/run/{run_id}")
    await expect(page.locator("#run-state")).to_have_attribute("data-state", "completed", timeout=TIMEOUT_MS)
    for cluster in ("cluster:each", "cluster:route", "cluster:route#case0", "cluster:route#default"):
        await expect(page.locator(f'#run-graph g.cluster[data-cluster="{cluster}"]')).to_have_count(1)
    await expect(node(page, "double")).to_have_attribute("data-state", "completed")
    await expect(node(page, "double")).to_contain_text("completed · 3/3")  # the foreach items' records, aggregated
    await expect(node(page, "big")).to_have_attribute("data-state", "completed")
    await expect(node(page, "small")).to_have_attribute("data-state", "skipped")  # the branch not taken
    await expect(page.locator('#run-graph path.edge[data-from="each"][data-to="route"]')).to_have_count(1)
    await node(page, "child").click()
    # the typed status carries the child's run id: the node links the child run
    await expect(page.locator("#node-details")).to_contain_text("Child run:")
    await screenshot(page, "run-page-nested.png")
    # A status that lists nested steps under a step (e.g. a script's host calls), with fields missing,
    # still draws them inside that step, without a plan.
    drawn = await page.evaluate(
        """async () => {
        const { buildGraph } = await import("/ui/static/js/graph.js");
        const g = buildGraph({ status: { steps: [
          { id: "script", kind: "code", state: "running", children: [
            { id: "call-1", kind: "host_call", state: "completed" }, { name: "call-2" } ] },
          { id: "bare" } ] } });
        const sub = buildGraph({
          plan: { name: "p", steps: [{ id: "c", kind: "subplan", plan: { name: "k", steps: [] } }] },
          status: { steps: [{ id: "c", state: "running", child_run_id: "r1.c" }] } });
        return [[...g.nodes.values()].map((n) => [n.path, n.state, n.parent]), sub.nodes.get("c").childRunId];
    }"""
    )
    drawn, child_run_id = drawn
    assert child_run_id == "r1.c"  # a child run id the status gives is what the node links to
    assert drawn == [
        ["script", "running", "cluster:script"],
        ["script.call-1", "completed", "cluster:script"],
        ["script.call-2", "pending", "cluster:script"],
        ["bare", "pending", None],
    ]


async def test_console_files_are_served_with_a_strict_policy(live: LiveConsole) -> None:
    async with httpx.AsyncClient(base_url=live.url, timeout=30) as http:
        page = await http.get("/ui/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        script = await http.get("/ui/static/js/graph.js")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert script.headers["x-content-type-options"] == "nosniff"
        for path in ("/ui/static/../router.py", "/ui/static/%2e%2e/router.py", "/ui/static/nothing.js"):
            assert (await http.get(path)).status_code == 404, path
        assert (await http.get("/ui", follow_redirects=False)).headers["location"] == "/ui/"


async def test_planner_shows_each_revision_and_its_diff_then_runs_it(page: Page, live: LiveConsole) -> None:
    hello = {"id": "hello", "kind": "set", "value": "hi"}
    bye = {"id": "bye", "kind": "set", "value": "${steps.hello.output}!"}
    first = {"name": "greet", "steps": [hello], "output": "${steps.hello.output}"}
    second = {"name": "greet", "steps": [hello, bye], "output": "${steps.bye.output}"}
    live.model.add(first, second)
    with live.model:  # every scripted answer is used, and nothing more is asked
        await sign_in(page, live, "acme")
        await page.goto(f"{live.url}/ui/#/planner")
        await page.fill("#chat-text", "say hi")
        await page.click("#chat-send")
        await expect(page.locator('#chat-graph g.node[data-step="hello"]')).to_have_count(1, timeout=TIMEOUT_MS)
        await page.fill("#chat-text", "then say bye")
        await page.click("#chat-send")
        await expect(page.locator('#chat-graph g.node[data-step="bye"]')).to_have_count(1, timeout=TIMEOUT_MS)
        await expect(page.locator("#chat-graph path.edge")).to_have_count(1)  # bye uses hello's output
        await expect(page.locator("#chat-turns details").first).to_contain_text("Revision 2")
        await expect(page.locator("#chat-turns details").first.locator(".diff .add").first).to_be_attached()
    await page.click("#chat-submit")
    await expect(page.locator("#run-state")).to_have_attribute("data-state", "completed", timeout=TIMEOUT_MS)
    await node(page, "bye").click()
    await expect(page.locator("#node-details")).to_contain_text("hi!")
