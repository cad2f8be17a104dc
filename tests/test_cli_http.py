"""`duraplan status`, `runs` and `events send` over Temporal's HTTP API answer exactly as over the SDK.

Each command runs twice in a fresh interpreter, once with no HTTP endpoint known (the SDK path)
and once with one (the HTTP path, which must not import temporalio: that is the point of it), and
the two must print the same stdout and stderr and exit with the same code, errors included: an
unknown run, another tenant's run, an event to a completed run, an event no step waits for, and
an event to a run that continued as new. duraplan's workflow ids hold a ``/``, which only the UI
server's HTTP API routes: against the frontend's own HTTP port the per-run commands fall back to
the SDK (same answers) and only ``runs`` stays on HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from duraplan.worker import running_worker
from executor import Duraplan, Settings
from executor.engine.contract import WORKFLOW_NAME
from executor.engine.models import RunInput, plan_hash
from executor.engine.states import FINAL_RUN_STATES
from executor.service.devserver import DevServer
from executor.service.endpoints import DEV_RECORD
from tests.engine.conftest import wait_for

ROOT = Path(__file__).resolve().parents[1]
TENANT = "acme"
CONTROL = "acme-ops"  # the runs the control commands steer
PROBE = """
import os, runpy, sys
sys.argv = ["duraplan", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("duraplan.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code or 0
sys.stdout.flush()
sys.stderr.write("\\n@@" + json.dumps([code, "temporalio" in sys.modules]) + "\\n")
sys.stderr.flush()
os._exit(0)
""".replace("import os,", "import json, os,")
WAITING = {
    "name": "http-wait",
    "steps": [
        {"id": "go", "kind": "wait_for_event", "event": "go", "timeout": "1h"},
        {"id": "hold", "kind": "wait_for_event", "event": "never", "timeout": "1h", "depends_on": ["go"]},
    ],
}


@dataclass(frozen=True)
class Answer:
    stdout: str
    stderr: str
    code: int
    sdk_loaded: bool


@dataclass
class Env:
    server: DevServer
    settings: Settings
    dp: Duraplan

    def cli(self, *args: str, http: str | None, address: str | None = None) -> Answer:
        """One command in a fresh interpreter; ``http``: DURAPLAN_HTTP_ADDRESS (None: unset)."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "DURAPLAN_ADDRESS": address or self.server.address,
            "DURAPLAN_TASK_QUEUE": self.settings.task_queue,
            "DURAPLAN_HOME": str(self.settings.home),
            "DURAPLAN_CLI_IN_PROCESS": "1",  # exit_process raises: the probe reports the code
            "COLUMNS": "200",
            **({"DURAPLAN_HTTP_ADDRESS": http} if http else {}),
        }
        done = subprocess.run(
            [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
        )
        stderr, _, tail = done.stderr.rpartition("\n@@")
        code, loaded = json.loads(tail)
        return Answer(done.stdout, stderr, code, loaded)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(ui_dev_server: DevServer, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    """The dev server with its UI (whose HTTP API routes ``<tenant>/<run_id>``) and a worker; the
    CLI's home holds no dev-server record, so only DURAPLAN_HTTP_ADDRESS selects the HTTP path."""
    home = tmp_path_factory.mktemp("cli-http")
    server = ui_dev_server
    settings = Settings(home=home, address=server.address, task_queue=f"cli-http-{uuid.uuid4().hex[:8]}")
    async with running_worker(server.client, settings):
        dp = Duraplan(server.client, settings)
        done = await dp.submit_plan(
            {
                "name": "http-done",
                "steps": [{"id": "a", "kind": "tool", "tool": "debug.echo", "args": {"value": 1}}],
            },
            tenant=TENANT,
            session="s1",
            run_id="done",
        )
        await done.result()
        for run_id in ("wait-sdk", "wait-http", "odd:id.v-1"):
            await dp.submit_plan(WAITING, tenant=TENANT, session="s2", run_id=run_id)
        for run_id in ("ctl-sdk", "ctl-http", "term-sdk", "term-http"):
            await dp.submit_plan(WAITING, tenant=CONTROL, session="s4", run_id=run_id)
        await _continued_run(dp)
        yield Env(server, settings, dp)


async def _continued_run(dp: Duraplan) -> None:
    """``acme/chain``: a run that continued as new (a small history limit), now waiting for ``go``."""
    plan = {
        "name": "http-chain",
        "steps": [
            {"id": "nums", "kind": "code", "code": "list(range(12))"},
            {
                "id": "each",
                "kind": "foreach",
                "items": "${steps.nums.output}",
                "steps": [{"id": "echo", "kind": "tool", "tool": "debug.echo", "args": {"value": "${item}"}}],
            },
            {"id": "go", "kind": "wait_for_event", "event": "go", "timeout": "1h", "depends_on": ["each"]},
            {"id": "hold", "kind": "wait_for_event", "event": "never", "timeout": "1h", "depends_on": ["go"]},
        ],
    }
    arg = RunInput(
        plan=plan,
        plan_hash=plan_hash(plan),
        tenant=TENANT,
        session="s3",
        run_id="chain",
        local_tools=[],  # activities: history grows with each step
        history_limit=40,
        search_attributes=False,
    )
    handle = await dp.client.start_workflow(WORKFLOW_NAME, arg, id=f"{TENANT}/chain", task_queue=dp.settings.task_queue)
    run = dp.get_run("chain", tenant=TENANT)
    for _ in range(300):
        status = await run.status()
        if status.continued_as_new >= 1 and any(s.id == "go" and s.state == "waiting" for s in status.steps):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{handle.id} never continued as new and waited: {status}")


def _same(env: Env, *args: str, http: str, over_http: bool = True) -> Answer:
    sdk = env.cli(*args, http=None)
    via = env.cli(*args, http=http)
    assert sdk.sdk_loaded, "without an HTTP endpoint the command takes the SDK path"
    assert via.sdk_loaded is not over_http, f"{args}: HTTP path expected={over_http}"
    assert (via.stdout, via.stderr, via.code) == (sdk.stdout, sdk.stderr, sdk.code), args
    return via


async def test_reads_answer_the_same_over_http(env: Env) -> None:
    ui = env.server.ui_url
    assert ui is not None

    def check() -> None:
        status = _same(env, "status", "wait-sdk", "-t", TENANT, "--json", http=ui)
        assert json.loads(status.stdout)["state"] == "waiting"
        assert _same(env, "status", "done", "-t", TENANT, http=ui).stdout.count("completed") >= 2
        # ':' is a reserved character in a URL path: escaped, and read back as itself.
        assert (
            json.loads(_same(env, "status", "odd:id.v-1", "-t", TENANT, "--json", http=ui).stdout)["run_id"]
            == "odd:id.v-1"
        )
        chain = json.loads(_same(env, "status", "chain", "-t", TENANT, "--json", http=ui).stdout)
        assert chain["continued_as_new"] >= 1
        rows = json.loads(_same(env, "runs", "-t", TENANT, "--json", http=ui).stdout)
        assert {r["run_id"] for r in rows} == {"done", "wait-sdk", "wait-http", "odd:id.v-1"}  # chain: no attributes
        assert [
            r["run_id"]
            for r in json.loads(_same(env, "runs", "-t", TENANT, "--status", "completed", "--json", http=ui).stdout)
        ] == ["done"]
        assert _same(env, "runs", "-t", TENANT, "-s", "s2", http=ui).code == 0
        assert json.loads(_same(env, "runs", "-t", "nobody", "--json", http=ui).stdout) == []

    await asyncio.to_thread(check)


async def test_read_errors_answer_the_same_over_http(env: Env) -> None:
    ui = env.server.ui_url
    assert ui is not None

    def check() -> None:
        missing = _same(env, "status", "no-such-run", "-t", TENANT, http=ui)
        assert missing.code == 1 and "no-such-run" in missing.stderr
        # Another tenant's run is not found: its workflow id is <tenant>/<run_id>.
        foreign = _same(env, "status", "wait-sdk", "-t", "intruder", "--json", http=ui)
        assert foreign.code == 1 and foreign.stdout == ""
        bad = _same(env, "status", "a/b", "-t", TENANT, http=ui)
        assert bad.code != 0
        assert _same(env, "runs", "-t", TENANT, "--status", "bogus", http=ui).code != 0

    await asyncio.to_thread(check)


async def test_events_answer_the_same_over_http(env: Env) -> None:
    ui = env.server.ui_url
    assert ui is not None

    def send(run_id: str, *args: str, http: str | None) -> Answer:
        return env.cli("events", "send", run_id, *args, "-t", TENANT, http=http)

    def check() -> None:
        # Two runs in the same state: one takes the event over the SDK, the other over HTTP.
        sdk = send("wait-sdk", "go", "--payload", '{"ok": "é"}', "--event-id", "e1", "--json", http=None)
        via = send("wait-http", "go", "--payload", '{"ok": "é"}', "--event-id", "e1", "--json", http=ui)
        assert not via.sdk_loaded
        assert (via.stdout, via.stderr, via.code) == (sdk.stdout, sdk.stderr, sdk.code)
        assert json.loads(via.stdout) == {"accepted": True, "duplicate": False, "buffered": 1}
        # The same event id again: a duplicate, on either path.
        sdk = send("wait-sdk", "go", "--event-id", "e1", http=None)
        via = send("wait-http", "go", "--event-id", "e1", http=ui)
        assert (via.stdout, via.stderr, via.code) == (sdk.stdout, sdk.stderr, sdk.code)
        assert via.stdout.strip() == "duplicate (already delivered)"
        # Refusals: an event no step waits for, a completed run, no such run, another tenant's run.
        for args in (
            ("events", "send", "wait-http", "nope", "-t", TENANT),
            ("events", "send", "done", "go", "-t", TENANT),
            ("events", "send", "no-such-run", "go", "-t", TENANT),
            ("events", "send", "wait-http", "never", "-t", "intruder"),
            ("events", "send", "wait-http", "never", "-t", TENANT, "--payload", "[" * 200 + "]" * 200),
        ):
            answer = _same(env, *args, http=ui)
            assert answer.code != 0 and answer.stderr.startswith("error:"), (args, answer)
        # The intruder's event reached nothing: the run still has nothing buffered.
        status = json.loads(env.cli("status", "wait-http", "-t", TENANT, "--json", http=ui).stdout)
        assert status["buffered_events"] == 0
        assert [s["state"] for s in status["steps"]] == ["completed", "waiting"]
        # A run that continued as new takes the event on its current execution.
        via = send("chain", "go", "--json", http=ui)
        assert not via.sdk_loaded and via.code == 0, via
        assert json.loads(via.stdout)["accepted"] is True

    await asyncio.to_thread(check)
    chain = await env.dp.get_run("chain", tenant=TENANT).status()
    assert next(s for s in chain.steps if s.id == "go").state == "completed"


async def test_controls_answer_the_same_over_http(env: Env) -> None:
    """pause, resume, cancel and terminate: two runs in the same state, one steered over each path."""
    ui = env.server.ui_url
    assert ui is not None

    def both(*args: str, pair: str) -> Answer:
        sdk = env.cli(*args[:1], f"{pair}-sdk", *args[1:], "-t", CONTROL, http=None)
        via = env.cli(*args[:1], f"{pair}-http", *args[1:], "-t", CONTROL, http=ui)
        assert sdk.sdk_loaded and not via.sdk_loaded, args
        same = (via.stdout.replace("-http", "-sdk"), via.stderr.replace("-http", "-sdk"), via.code)
        assert same == (sdk.stdout, sdk.stderr, sdk.code), (args, via, sdk)
        return via

    loop = asyncio.get_running_loop()

    def check() -> None:
        # Another tenant cannot steer the run: not found, and the run goes on.
        foreign = _same(env, "cancel", "ctl-http", "-t", "intruder", http=ui)
        assert foreign.code == 1 and "ctl-http" in foreign.stderr
        assert both("pause", pair="ctl").stdout.strip() == "pause: ctl-http"
        state = json.loads(env.cli("status", "ctl-http", "-t", CONTROL, "--json", http=ui).stdout)
        assert state["paused"] is True
        assert both("resume", pair="ctl").code == 0
        assert both("cancel", pair="ctl").stdout.strip() == "cancel: ctl-http"
        for run_id in ("ctl-sdk", "ctl-http"):  # the cancellation is asked; the run ends a moment later
            asyncio.run_coroutine_threadsafe(_closed(env, run_id), loop).result(60)
        for action in ("cancel", "terminate", "pause"):  # nothing left to steer
            refused = both(action, pair="ctl")
            assert refused.code == 1 and "cancelled" in refused.stderr, refused
        assert both("terminate", pair="term").stdout.strip() == "terminate: term-http"
        state = json.loads(env.cli("status", "term-http", "-t", CONTROL, "--json", http=ui).stdout)
        assert state["state"] == "terminated"
        missing = _same(env, "terminate", "no-such-run", "-t", CONTROL, http=ui)
        assert missing.code == 1

    await asyncio.to_thread(check)


async def _closed(env: Env, run_id: str) -> None:
    run = env.dp.get_run(run_id, tenant=CONTROL)

    async def ended() -> bool:
        return (await run.status()).state in FINAL_RUN_STATES

    await wait_for(ended, timeout=60)


async def test_frontend_http_port_lists_and_the_rest_falls_back(env: Env) -> None:
    """The frontend's gateway cannot route a workflow id holding '/': those commands take the SDK."""
    frontend = env.server.http_url

    def check() -> None:
        _same(env, "runs", "-t", TENANT, "--json", http=frontend, over_http=True)
        _same(env, "status", "wait-sdk", "-t", TENANT, "--json", http=frontend, over_http=False)
        _same(env, "status", "no-such-run", "-t", TENANT, http=frontend, over_http=False)
        _same(env, "events", "send", "wait-http", "nope", "-t", TENANT, http=frontend, over_http=False)

    await asyncio.to_thread(check)


async def test_dev_server_record_finds_the_http_api(env: Env, tmp_path: Path) -> None:
    """`duraplan dev` records its HTTP API in its home; a CLI on that home and address uses it."""
    record = json.loads((env.server.home / DEV_RECORD).read_text())
    assert record["address"] == env.server.address and record["ui_api"] == env.server.ui_url
    # The CLI's home is the server's; its settings say localhost where the record says 127.0.0.1.
    local = env.server.address.replace("127.0.0.1", "localhost")
    found = Env(env.server, Settings(home=env.server.home, task_queue=env.settings.task_queue), env.dp)

    def check() -> None:
        answer = found.cli("status", "wait-sdk", "-t", TENANT, "--json", http=None, address=local)
        assert answer.code == 0 and not answer.sdk_loaded, answer
        # Another server's address: the record is not used.
        other = found.cli("status", "wait-sdk", "-t", TENANT, http=None, address="127.0.0.1:1")
        assert other.sdk_loaded and other.code == 1 and "cannot reach Temporal" in other.stderr, other
        # A dead server's record: refused connections fall back to the SDK path, which says so.
        stale = Env(env.server, Settings(home=tmp_path, task_queue=env.settings.task_queue), env.dp)
        (tmp_path / DEV_RECORD).write_text(
            json.dumps({**record, "address": "127.0.0.1:1", "ui_api": "http://127.0.0.1:1"})
        )
        dead = stale.cli("runs", "-t", TENANT, http=None, address="127.0.0.1:1")
        assert dead.sdk_loaded and dead.code == 1 and "cannot reach Temporal" in dead.stderr, dead

    await asyncio.to_thread(check)
